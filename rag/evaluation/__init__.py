"""Evaluation harness: run the gold questions through the pipeline and report how it did."""
