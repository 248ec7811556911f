"""What the model-running probes share: the gold questions of one split and an output file
that a rerun resumes (questions already written are skipped)."""

import json
from pathlib import Path
from typing import IO

from rag.evaluation.runner import GoldItem, load_gold, split_of

ROOT = Path(__file__).resolve().parents[2]


def split_items(split: str) -> list[GoldItem]:
    return [g for g in load_gold(ROOT / "eval/gold.jsonl") if split_of(g.id) == split]


def resumable(path: Path) -> tuple[set[str], IO[str]]:
    """The ids already in ``path`` (JSON lines) and the file opened for appending."""
    path.touch()
    with path.open() as f:
        done = {json.loads(line)["id"] for line in f}
    return done, path.open("a")
