"""The ONNX embedder's pieces that need no model: quantisation choice, the memory-mapped
embedding table, the export cache. The real graph against sentence-transformers is in
tests/e2e/test_real_models.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from rag.cpu import has_int8_dot
from rag.embedding import onnx
from rag.embedding.onnx import EmbedderUnavailable, SafetensorsRows, prepare_graph


def test_signed_int8_only_where_the_cpu_has_an_int8_dot_product() -> None:
    assert has_int8_dot({"avx2", "avx512f", "avx512_vnni"})
    assert has_int8_dot({"avx2", "amx_int8"})
    assert has_int8_dot({"avx2", "avx_vnni"})
    assert not has_int8_dot({"avx2", "fma", "avx512f"})
    assert not has_int8_dot(set())


def test_quantize_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.cpu

    assert onnx.resolve_quantize("none") is None
    assert onnx.resolve_quantize(None) is None
    assert onnx.resolve_quantize("int8") == "int8"
    monkeypatch.setattr(rag.cpu, "cpu_flags", lambda: {"avx2"})
    assert onnx.resolve_quantize("auto") == "int8"
    monkeypatch.setattr(rag.cpu, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert onnx.resolve_quantize("auto") == "int8-s8"
    with pytest.raises(ValueError, match="unknown ONNX quantisation"):
        onnx.resolve_quantize("int4")


def _safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, at = [], 0
    for name, arr in tensors.items():
        raw = arr.tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [at, at + len(raw)],
        }
        blobs.append(raw)
        at += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_embedding_rows_come_straight_from_the_safetensors_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    other = rng.standard_normal((3, 5)).astype(np.float32)
    table = rng.standard_normal((11, 4)).astype(np.float32)
    path = tmp_path / "model.safetensors"
    _safetensors(path, {"layers.0.weight": other, "embed_tokens.weight": table})
    rows = SafetensorsRows(path, "embed_tokens.weight")
    ids = np.array([[3, 0, 10], [10, 10, 1]])
    np.testing.assert_array_equal(rows[ids], table[ids])
    assert isinstance(rows.table, np.memmap)


def test_embedding_table_of_another_kind_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _safetensors(path, {"embed_tokens.weight": np.zeros((4, 2), dtype=np.float16)}, dtype="F16")
    with pytest.raises(EmbedderUnavailable, match="F16"):
        SafetensorsRows(path, "embed_tokens.weight")
    with pytest.raises(EmbedderUnavailable, match="no single tensor"):
        SafetensorsRows(path, "lm_head.weight")


def _model(tmp_path: Path, weights: bytes) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(weights)
    return model


def test_the_graph_is_exported_once_and_again_when_the_model_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(tmp_path, b"weights v1")
    exports: list[Path] = []

    def fake_export(m: Path, path: Path) -> float:
        exports.append(path)
        path.write_bytes(b"graph of " + (m / "model.safetensors").read_bytes())
        return 27.7

    monkeypatch.setattr(onnx, "export_onnx", fake_export)
    cache = tmp_path / "cache"
    path, scale = prepare_graph(model, cache, None)
    assert (path.read_bytes(), scale, len(exports)) == (b"graph of weights v1", 27.7, 1)
    prepare_graph(model, cache, None)
    assert len(exports) == 1  # reused
    (cache / "model.opt.onnx").write_bytes(b"optimised v1")
    (model / "model.safetensors").write_bytes(b"weights v2, longer")
    path, _ = prepare_graph(model, cache, None)
    assert len(exports) == 2 and path.read_bytes() == b"graph of weights v2, longer"
    assert not (cache / "model.opt.onnx").exists()  # the stale optimised graph went with it


def test_a_failed_export_is_reported_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(tmp_path, b"weights")

    def broken(m: Path, path: Path) -> float:
        raise RuntimeError("cannot trace vmap")

    monkeypatch.setattr(onnx, "export_onnx", broken)
    with pytest.raises(EmbedderUnavailable, match=r"exporting .* failed: cannot trace vmap"):
        prepare_graph(model, tmp_path / "cache", None)
