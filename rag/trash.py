"""Deleted and replaced articles are moved aside, not unlinked, until purged explicitly.

Each entry is a folder ``<trash_dir>/<id>/`` holding the file as it was and ``meta.json``
(its name, why it was moved, when, its SHA-256 and size). Moving is a rename where the trash
is on the same file system, so a crash leaves the article either in the corpus or in the trash.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}(?:-[0-9]+)?$")


@dataclass
class TrashEntry:
    id: str
    name: str
    reason: str
    deleted_at: float
    sha256: str
    size: int


class Trash:
    def __init__(self, root: Path) -> None:
        self.root = root

    def move_aside(self, path: Path, *, reason: str) -> TrashEntry:
        """Move ``path`` into the trash; return its entry."""
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = f"{stamp}-{sha[:8]}"
        entry_id, n = base, 1
        self.root.mkdir(parents=True, exist_ok=True)
        while (self.root / entry_id).exists():
            n += 1
            entry_id = f"{base}-{n}"
        folder = self.root / entry_id
        tmp = self.root / f".{entry_id}.tmp"
        tmp.mkdir(parents=True)
        entry = TrashEntry(entry_id, path.name, reason, time.time(), sha, len(data))
        (tmp / "meta.json").write_text(json.dumps(asdict(entry), ensure_ascii=False), "utf-8")
        try:
            path.rename(tmp / path.name)
        except OSError:  # another file system: copy, then remove the original
            shutil.copy2(path, tmp / path.name)
            path.unlink()
        tmp.rename(folder)
        return entry

    def entries(self) -> list[TrashEntry]:
        out: list[TrashEntry] = []
        if not self.root.is_dir():
            return out
        for folder in self.root.iterdir():
            if not _ID.match(folder.name):
                continue
            try:
                meta = json.loads((folder / "meta.json").read_text("utf-8"))
                out.append(TrashEntry(**meta))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda e: e.deleted_at, reverse=True)

    def get(self, entry_id: str) -> TrashEntry:
        if not _ID.match(entry_id):
            raise KeyError(entry_id)
        for e in self.entries():
            if e.id == entry_id:
                return e
        raise KeyError(entry_id)

    def find(self, key: str) -> TrashEntry:
        """An entry by id, or the newest entry of an article by its file name."""
        for e in self.entries():
            if key in (e.id, e.name):
                return e
        raise KeyError(key)

    def data(self, entry: TrashEntry) -> bytes:
        return (self.root / entry.id / entry.name).read_bytes()

    def take_back(self, entry: TrashEntry, target: Path) -> None:
        """Move the entry's file to ``target`` (which must not exist) and drop the entry."""
        src = self.root / entry.id / entry.name
        tmp = target.with_name(f".{target.name}.restore")
        shutil.copy2(src, tmp)
        tmp.replace(target)
        shutil.rmtree(self.root / entry.id)

    def purge(self, entry: TrashEntry) -> None:
        shutil.rmtree(self.root / entry.id)
