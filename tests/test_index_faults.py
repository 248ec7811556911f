"""Faults: a killed ingest, damaged index files, damaged or missing model files.

Whatever breaks, the service either keeps the last complete index or refuses to start with a
message naming the command that repairs it (`rag ingest --rebuild`, `rag models fetch`). No
test here touches the network: model "downloads" are small zip files built in tmp.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from rag import models
from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.index import IndexError_, IndexStore
from rag.models import ModelError, Pack, fetch, load_manifest, resolve
from rag.service import RAG
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REBUILD = "rag ingest --rebuild"
FETCH = "rag models fetch"


def fresh(settings: Settings) -> RAG:
    return RAG(settings, HashingEmbedder(), FakeGenerator())


def generation(settings: Settings) -> Path:
    return settings.index_dir / (settings.index_dir / "CURRENT").read_text().strip()


def leftovers(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.index_dir.iterdir() if p.is_dir())


# --- kill -9 in the middle of an ingest -------------------------------------------------------
CHILD = r"""
import os, sys, time
import rag.embedding, rag.index

stage = sys.argv[1]

def hold(marker):
    print(marker, flush=True)
    time.sleep(120)  # the parent kills us here

if stage == "embedding":
    embed = rag.embedding.HashingEmbedder.embed_documents
    def slow(self, texts):
        import numpy as np
        out = []
        for i in range(0, len(texts), 16):  # slowed, one batch at a time
            out.append(embed(self, texts[i : i + 16]))
            print(f"batch {i // 16}", flush=True)
            if i // 16 == 3:
                hold("KILL")
        return np.concatenate(out)
    rag.embedding.HashingEmbedder.embed_documents = slow
elif stage in ("files", "pointer"):
    fsync = rag.index._fsync
    def slow_fsync(path):
        fsync(path)
        if stage == "files" and path.name == "chunks.jsonl":  # some files synced, not all
            hold("KILL")
        if stage == "pointer" and path.name == ".CURRENT.tmp":  # new generation complete
            hold("KILL")
    rag.index._fsync = slow_fsync
elif stage == "cleanup":
    rmtree = rag.index.shutil.rmtree
    def slow_rmtree(path, *a, **k):
        hold("KILL")
    rag.index.shutil.rmtree = slow_rmtree

from rag.service import RAG
report = RAG.from_settings().ingest()
print("DONE", report.chunks, flush=True)
"""


def generated_articles(folder: Path, n: int) -> None:
    for i in range(n):
        body = "\n\n".join(
            f"Ngày {i % 28 + 1}/5/2024, tỉnh số {i} ghi nhận {i * 7 + j} dự án hợp tác mới "
            f"về thương mại, đầu tư và du lịch; đoạn {j} nêu thêm {i + j * 13} ý kiến."
            for j in range(8)
        )
        (folder / f"gen_{i:04d}.txt").write_text(f"Bài tổng hợp số {i}\n\n{body}\n", "utf-8")


def _child_env(settings: Settings) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAG_")},
        "RAG_EMBEDDER": "fake",
        "RAG_GENERATOR": "fake",
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_INDEX_DIR": str(settings.index_dir),
        "RAG_MODELS_DIR": str(settings.models_dir),
        "PYTHONPATH": str(ROOT),
    }


def kill_at_marker(proc: subprocess.Popen[str]) -> list[str]:
    """Read the child's lines until it says KILL, then SIGKILL it (a watchdog caps the wait)."""
    watchdog = threading.Timer(60, proc.kill)  # never hang the suite
    watchdog.start()
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.strip())
            if line.strip() == "KILL":
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(30)
    finally:
        watchdog.cancel()
    return seen


STAGES = ["embedding", "files", "pointer", "cleanup"]


@dataclass
class Killed:
    settings: Settings
    tmp: Path
    old_files: set[str]
    old_chunks: int
    old_gen: str
    returncode: int | None
    output: list[str]
    stderr: str


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Killed]:
    """One ingest per stage, all running at once (each is a child process), each killed with
    SIGKILL at its stage: while embedding, while the new generation's files are being written,
    with the new generation complete but CURRENT not yet switched, and while old generations
    are being removed after the switch."""
    runs: dict[str, tuple[Settings, Path, set[str], int, str, subprocess.Popen[str]]] = {}
    for stage in STAGES:
        tmp = tmp_path_factory.mktemp(f"kill-{stage}")
        shutil.copytree(ROOT / "data" / "articles", tmp / "articles")
        s = Settings(
            data_dir=tmp / "articles", index_dir=tmp / "index", models_dir=ROOT / "models",
            embedder="fake", generator="fake", _env_file=None,
        )  # fmt: skip
        before = fresh(s)
        before.ingest()
        generated_articles(s.data_dir, 40)
        (tmp / "child.py").write_text(CHILD, encoding="utf-8")
        proc = subprocess.Popen(
            [PYTHON, str(tmp / "child.py"), stage],
            cwd=tmp,  # no .env of the project
            env=_child_env(s),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs[stage] = (s, tmp, set(before.index.files), len(before.index.chunks),
                       generation(s).name, proc)  # fmt: skip
    out = {}
    for stage, (s, tmp, files, chunks, gen, proc) in runs.items():
        seen = kill_at_marker(proc)
        stderr = proc.stderr.read() if proc.stderr else ""
        out[stage] = Killed(s, tmp, files, chunks, gen, proc.returncode, seen, stderr)
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_ingest_loses_nothing(killed: dict[str, Killed], stage: str) -> None:
    k = killed[stage]
    settings = k.settings
    assert k.returncode == -signal.SIGKILL, (k.output, k.stderr[-2000:])
    assert "KILL" in k.output and not any(line.startswith("DONE") for line in k.output)

    after = fresh(settings)  # loads without error: no half-written index is ever live
    if stage == "cleanup":  # killed after the switch: the new index is whole and live
        assert generation(settings).name != k.old_gen
        assert len(after.index.files) == len(k.old_files) + 40
    else:  # killed before the switch: the previous index, exactly
        assert generation(settings).name == k.old_gen
        assert set(after.index.files) == k.old_files
        assert len(after.index.chunks) == k.old_chunks
    assert after.search("thỏa thuận hợp tác được ký kết năm 2024", 3)

    report = after.ingest()  # running it again completes the work
    assert not report.skipped
    assert len(after.index.files) == len(k.old_files) + 40
    after.add_document("moi.txt", "Bài mới\n\nĐà Lạt đón 9 triệu lượt khách.\n".encode())
    assert leftovers(settings) == [generation(settings).name]  # debris collected at a save
    # The same index as one built from scratch, with nothing killed.
    scratch = fresh(settings.model_copy(update={"index_dir": k.tmp / "clean"}))
    scratch.ingest()
    again = fresh(settings)
    assert len(again.index.chunks) == len(scratch.index.chunks)
    assert {c.hash for c in again.index.chunks} == {c.hash for c in scratch.index.chunks}


# --- damaged index files ------------------------------------------------------------------------
def _rewrite(gen: Path, name: str, data: bytes) -> None:
    """Replace a file and make the manifest's checksum agree (a bug, not a disk error)."""
    (gen / name).write_bytes(data)
    manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
    manifest["checksums"][name] = hashlib.sha256(data).hexdigest()
    (gen / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _edit_manifest(change: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def edit(gen: Path) -> None:
        manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
        change(manifest)
        (gen / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    return edit


def _truncate(name: str) -> Callable[[Path], None]:
    def cut(gen: Path) -> None:
        data = (gen / name).read_bytes()
        (gen / name).write_bytes(data[: len(data) // 2])

    return cut


def _other_faiss(dim: int, n: int | None = None) -> Callable[[Path], None]:
    def swap(gen: Path) -> None:
        count = n if n is not None else faiss.read_index(str(gen / "vectors.faiss")).ntotal
        index = faiss.IndexFlatIP(dim)
        index.add(np.ones((count, dim), dtype=np.float32))
        faiss.write_index(index, str(gen / "vectors.faiss"))

    return swap


def _vectors_of_shape(rows: int) -> Callable[[Path], None]:
    def save(gen: Path) -> None:
        path = gen / "x.npy"
        np.save(path, np.zeros((rows, 256), dtype=np.float32))
        _rewrite(gen, "vectors.npy", path.read_bytes())

    return save


def _pointer(text: bytes) -> Callable[[Path], None]:
    def point(gen: Path) -> None:
        (gen.parent / "CURRENT").write_bytes(text)

    return point


KNOWN_GAP = "rag/index.py lets this escape as a raw {}; see the report of issue 7"
DAMAGE: list[object] = [
    pytest.param(_truncate("vectors.npy"), id="vectors.npy-truncated"),
    pytest.param(lambda g: (g / "vectors.npy").unlink(), id="vectors.npy-missing"),
    pytest.param(lambda g: _rewrite(g, "vectors.npy", b"\x93NUMPY garbage"), id="vectors.npy-garbage"),
    pytest.param(_vectors_of_shape(3), id="vectors.npy-wrong-shape"),
    pytest.param(_truncate("chunks.jsonl"), id="chunks.jsonl-truncated"),
    pytest.param(lambda g: (g / "chunks.jsonl").unlink(), id="chunks.jsonl-missing"),
    pytest.param(lambda g: _rewrite(g, "chunks.jsonl", b'{"source": "a.txt"\n'), id="chunks.jsonl-bad-json"),
    pytest.param(lambda g: _rewrite(g, "chunks.jsonl", b'{"source": "a.txt"}\n'), id="chunks.jsonl-missing-fields"),
    pytest.param(lambda g: _rewrite(g, "chunks.jsonl", b"\xff\xfe\x00x\n"), id="chunks.jsonl-not-utf8"),
    pytest.param(_truncate("manifest.json"), id="manifest.json-truncated"),
    pytest.param(lambda g: (g / "manifest.json").write_bytes(b""), id="manifest.json-empty"),
    pytest.param(lambda g: (g / "manifest.json").unlink(), id="manifest.json-missing"),
    pytest.param(_edit_manifest(lambda m: m.update(format=99)), id="manifest.json-newer-format"),
    pytest.param(_edit_manifest(lambda m: m.pop("checksums")), id="manifest.json-no-checksums"),
    pytest.param(_edit_manifest(lambda m: m.update(dim=128)), id="manifest.json-wrong-dim"),
    pytest.param(_edit_manifest(lambda m: m.update(files={"x": 1})), id="manifest.json-bad-files"),
    pytest.param(
        lambda g: (g / "manifest.json").write_text("[]"), id="manifest.json-not-an-object",
    ),
    pytest.param(
        _edit_manifest(lambda m: m.pop("embedder")), id="manifest.json-no-embedder",
    ),
    pytest.param(_truncate("vectors.faiss"), id="vectors.faiss-truncated"),
    pytest.param(lambda g: (g / "vectors.faiss").unlink(), id="vectors.faiss-missing"),
    pytest.param(_other_faiss(256, 3), id="vectors.faiss-wrong-count"),
    pytest.param(
        _other_faiss(64), id="vectors.faiss-wrong-dimension",
    ),
    pytest.param(_pointer(b"gen-404\n"), id="CURRENT-dangling"),
    pytest.param(_pointer(b""), id="CURRENT-empty"),
    pytest.param(_pointer(b"../../../../etc\n"), id="CURRENT-outside"),
    pytest.param(
        _pointer(b"\xff\xfe\x00"), id="CURRENT-not-text",
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def built_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One index of the real articles, copied by each test that damages it."""
    tmp = tmp_path_factory.mktemp("built")
    shutil.copytree(ROOT / "data" / "articles", tmp / "articles")
    s = Settings(data_dir=tmp / "articles", index_dir=tmp / "index", embedder="fake")
    fresh(s).ingest()
    return tmp / "articles", tmp / "index"


@pytest.fixture
def damaged(built_index: tuple[Path, Path], tmp_path: Path) -> Settings:
    articles, index = built_index
    shutil.copytree(index, tmp_path / "index")
    return Settings(
        data_dir=articles, index_dir=tmp_path / "index", embedder="fake", generator="fake"
    )


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_index_is_refused_with_the_rebuild_command(
    damaged: Settings, damage: Callable[[Path], None]
) -> None:
    damage(generation(damaged))
    with pytest.raises(IndexError_, match=r"rag ingest --rebuild"):
        fresh(damaged).search("Chỉ thị 15", 1)  # loading must fail; at the latest, searching


def test_an_index_from_another_embedding_model_names_the_rebuild(damaged: Settings) -> None:
    with pytest.raises(IndexError_, match=r"built with embedding model .*rag ingest --rebuild"):
        RAG(damaged, HashingEmbedder(dim=64), FakeGenerator())


def test_rebuild_repairs_a_damaged_index(damaged: Settings) -> None:
    (generation(damaged) / "vectors.npy").write_bytes(b"rot")
    # What `rag ingest --rebuild` does: forget the live pointer, then build from the corpus.
    IndexStore(damaged.index_dir).current_file.unlink()
    service = fresh(damaged)
    report = service.ingest(rebuild=True)
    assert len(report.added) == 5 and report.chunks > 20
    assert len(fresh(damaged).index.chunks) == report.chunks


def test_the_app_refuses_to_start_on_a_damaged_index(damaged: Settings) -> None:
    _truncate("vectors.faiss")(generation(damaged))
    with (
        pytest.raises(IndexError_, match=r"corrupt .*rag ingest --rebuild"),
        TestClient(create_app(damaged)),
    ):
        pass


def test_the_server_stops_once_with_the_message(
    damaged: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    _truncate("chunks.jsonl")(generation(damaged))
    config = uvicorn.Config(create_app(damaged), host="127.0.0.1", port=0, log_config=None)
    server = uvicorn.Server(config)
    exits: list[object] = []

    def run() -> None:
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits with 3 when the startup fails
            exits.append(exc.code)

    thread = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        thread.start()
        thread.join(20)
    assert not thread.is_alive(), "the server kept running on a damaged index"
    assert time.monotonic() - t0 < 20 and not server.started
    assert exits == [3]
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert REBUILD in log
    assert log.count("Application startup failed") == 1  # it gives up once; no retry loop


def test_rag_serve_on_a_damaged_index_prints_only_the_message(
    damaged: Settings, tmp_path: Path
) -> None:
    _truncate("vectors.npy")(generation(damaged))
    env = {**_child_env(damaged), "RAG_PORT": "0"}
    proc = subprocess.run(
        [PYTHON, "-m", "rag.cli", "serve", "--host", "127.0.0.1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert REBUILD in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


# --- model files --------------------------------------------------------------------------------
def _wheel(folder: Path, name: str, member: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


class FakeIndex:
    """Stands in for `pip download`: serves wheels built in tmp and counts the downloads."""

    def __init__(self, folder: Path, parts: dict[str, bytes]) -> None:
        self.folder = folder
        self.parts = dict(parts)
        self.downloads = 0

    def __call__(self, pack: Pack, dest: Path) -> Path:
        self.downloads += 1
        return _wheel(self.folder / pack.name, pack.name, pack.member, self.parts[pack.name])


PART1 = b"GGUF" + bytes(range(256)) * 64
PART2 = bytes(reversed(range(256))) * 64


def _manifest(models_dir: Path, joined: bytes) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "role": "generator", "description": "a tiny fake GGUF", "license": "none",
        "file": "tiny.gguf", "size": len(joined), "sha256": hashlib.sha256(joined).hexdigest(),
        "packs": [
            {"name": "tiny-part1", "version": "0.1.0", "member": "tiny_part1/data/part01.bin"},
            {"name": "tiny-part2", "version": "0.1.0", "member": "tiny_part2/data/part02.bin"},
        ],
    }  # fmt: skip
    (models_dir / "manifest.json").write_text(json.dumps({"models": {"tiny": spec}}), "utf-8")


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    _manifest(d, PART1 + PART2)
    return d


@pytest.fixture
def pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeIndex]:
    index = FakeIndex(tmp_path / "wheels", {"tiny-part1": PART1, "tiny-part2": PART2})
    monkeypatch.setattr(models, "_pip_download", index)
    yield index


def _fetch(models_dir: Path) -> Path:
    spec = load_manifest(models_dir / "manifest.json")["tiny"]
    return fetch(spec, models_dir, log=lambda _: None)


def test_fetch_joins_verifies_and_stamps(models_dir: Path, pip: FakeIndex) -> None:
    path = _fetch(models_dir)
    assert path.read_bytes() == PART1 + PART2
    assert resolve("tiny", models_dir, "generator") == path
    assert pip.downloads == 2
    _fetch(models_dir)  # verified already: nothing downloaded again
    assert pip.downloads == 2
    assert not list(models_dir.glob("*.part")) and not (models_dir / ".packs").exists()


def test_a_pack_with_other_bytes_is_refused(models_dir: Path, pip: FakeIndex) -> None:
    pip.parts["tiny-part2"] = PART2[:-1] + b"X"  # one byte differs
    with pytest.raises(ModelError, match=r"SHA-256 .* expected .*discarded"):
        _fetch(models_dir)
    assert not (models_dir / "tiny.gguf").exists()
    assert not list(models_dir.glob("*.part"))
    with pytest.raises(ModelError, match=FETCH):
        resolve("tiny", models_dir, "generator")


def test_a_pack_without_its_slice_is_refused(
    models_dir: Path, pip: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong_member(pack: Pack, dest: Path) -> Path:
        path = pip(pack, dest)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("something/else.bin", b"x")
        return path

    monkeypatch.setattr(models, "_pip_download", wrong_member)
    with pytest.raises(ModelError, match="pack changed"):
        _fetch(models_dir)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-10]), id="truncated"),
        pytest.param(
            lambda p: p.write_bytes(b"EVIL" + p.read_bytes()[4:]), id="same-size-other-bytes"
        ),
        pytest.param(
            lambda p: p.with_name(p.name + ".verified").write_text("0" * 64 + " 1 1\n"),
            id="stamp-edited",
        ),
        pytest.param(lambda p: p.with_name(p.name + ".verified").unlink(), id="stamp-removed"),
    ],
)
def test_a_tampered_model_is_refused_then_fetched_again(
    models_dir: Path, pip: FakeIndex, tamper: Callable[[Path], None]
) -> None:
    path = _fetch(models_dir)
    time.sleep(0.01)  # a later mtime, as any real write has
    tamper(path)
    with pytest.raises(ModelError, match=f"not downloaded yet: .*{FETCH}"):
        resolve("tiny", models_dir, "generator")
    assert _fetch(models_dir) == path  # re-verified: the packs are fetched and joined again
    assert path.read_bytes() == PART1 + PART2
    assert pip.downloads == 4


def test_a_missing_model_names_the_fetch_command(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(ModelError, match=f"'tiny' is not downloaded yet: .*{FETCH}"):
        resolve("tiny", models_dir, "generator")
    with pytest.raises(ModelError, match=f"not found: .*{FETCH}"):
        resolve(str(tmp_path / "nowhere.gguf"), models_dir, "generator")
    with pytest.raises(ModelError, match="manifest not found"):
        load_manifest(tmp_path / "no" / "manifest.json")


def test_an_archive_with_unsafe_paths_is_not_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedder arrives as a zip inside the packs; `../` members must not escape."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/modules.json", "[]")
        zf.writestr("model/../../escaped.txt", "gotcha")
    joined = buf.getvalue()
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    spec = {
        "role": "embedder", "description": "zip", "license": "none", "file": "emb.zip",
        "size": len(joined), "sha256": hashlib.sha256(joined).hexdigest(),
        "packs": [{"name": "emb-part1", "version": "0.1.0", "member": "emb/part01.bin"}],
        "extract": {"folder": "model/", "to": "emb", "check": {}},
    }  # fmt: skip
    (models_dir / "manifest.json").write_text(json.dumps({"models": {"emb": spec}}), "utf-8")
    monkeypatch.setattr(models, "_pip_download", FakeIndex(tmp_path / "w", {"emb-part1": joined}))
    with pytest.raises(ModelError, match="unsafe path"):
        fetch(load_manifest(models_dir / "manifest.json")["emb"], models_dir, log=lambda _: None)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (models_dir / "emb").exists()
