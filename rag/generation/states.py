"""Precomputed model states: the KV cells after a prompt prefix, kept on disk and reused.

On two CPU cores the answer model spends most of the first-token time reading the prompt, and
the prompt's first part — the fixed instructions and the top passage — is the same whenever
that passage comes back. The engine saves the state of one sequence after such a prefix
(``llama_state_seq_get_data``: the KV cells only, about 29 KB per token for the 1.5B model)
and, when a later prompt starts with exactly those tokens, reads it back instead of reading
the prefix again (measured: ``bench/reports/probes/passage-state.md``).

The store is a folder per engine (``key``: model file, llama.cpp version); each entry is one
file named by its token count and the hash of its tokens, holding those tokens (checked
again when it is used: a hash is not trusted alone) and the state bytes. Entries are written
atomically (a temporary file renamed into place), the folder is capped in bytes with
least-recently-used eviction (an entry's modification time is its last use), and an entry
that does not fit is skipped, not forced in.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("rag.states")

_MAGIC = b"RAGSTATE1\n"
_SUFFIX = ".state"


def token_hash(tokens: Sequence[int]) -> str:
    """A short, stable name for a token sequence."""
    raw = struct.pack(f"<{len(tokens)}i", *tokens)
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def engine_key(model_path: Path, runtime: str) -> str:
    """Which engine a state belongs to: the model file (name, size, a hash of its first and
    last MiB — a full SHA-256 of 1 GB would cost seconds at every start) and the runtime's
    version. A different model or runtime gets its own folder; the old one stops being read."""
    h = hashlib.blake2b(digest_size=8)
    size = model_path.stat().st_size
    h.update(f"{model_path.name}|{size}|{runtime}".encode())
    with model_path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return f"{model_path.stem}-{h.hexdigest()}"


@dataclass
class StateReport:
    """What a ``prepare_prefixes`` call did."""

    computed: int = 0
    kept: int = 0
    removed: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)


class StateStore:
    """Model states on disk, found by the exact tokens they follow."""

    def __init__(self, folder: Path, *, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        #: token count -> hashes of the entries with that many tokens
        self._index: dict[int, set[str]] = {}
        self._bytes = 0  # what the entries take on disk, kept up to date (no scan per write)
        self._seen = -1
        self._refresh()

    def _refresh(self) -> None:
        """Re-read the folder when it changed (another process — `rag ingest` beside a running
        server — added or removed entries): one stat per lookup."""
        try:
            stamp = self.folder.stat().st_mtime_ns
        except OSError:
            return
        if stamp == self._seen:
            return
        self._seen = stamp
        index: dict[int, set[str]] = {}
        total = 0
        for path in self.folder.glob(f"*{_SUFFIX}"):
            parsed = _parse_name(path.name)
            if parsed:
                try:
                    total += path.stat().st_size
                except OSError:
                    continue
                index.setdefault(parsed[0], set()).add(parsed[1])
        self._index = index
        self._bytes = total

    def _wrote(self) -> None:
        """This process changed the folder: its own index is current, no re-read needed."""
        with contextlib.suppress(OSError):
            self._seen = self.folder.stat().st_mtime_ns

    def _path(self, n: int, digest: str) -> Path:
        return self.folder / f"{n}-{digest}{_SUFFIX}"

    def __len__(self) -> int:
        return sum(len(v) for v in self._index.values())

    def usage(self) -> int:
        """Bytes the entries take on disk."""
        self._refresh()
        return self._bytes

    def has(self, tokens: Sequence[int]) -> bool:
        return token_hash(tokens) in self._index.get(len(tokens), set())

    def longest(self, tokens: Sequence[int], *, longer_than: int = 0) -> tuple[int, bytes] | None:
        """The state of the longest stored prefix of ``tokens`` (shorter than all of them and
        longer than ``longer_than``), as (its token count, the state bytes); None if there is
        none. An unreadable or mismatched entry is removed and the next one tried."""
        self._refresh()
        for n in sorted(self._index, reverse=True):
            if n >= len(tokens) or n <= longer_than:
                continue
            digest = token_hash(tokens[:n])
            if digest not in self._index[n]:
                continue
            data = self._read(n, digest, tokens[:n])
            if data is not None:
                return n, data
        return None

    def _read(self, n: int, digest: str, tokens: Sequence[int]) -> bytes | None:
        path = self._path(n, digest)
        try:
            raw = path.read_bytes()
            os.utime(path)  # last use, for the least-recently-used eviction
        except OSError:
            self._forget(n, digest)
            return None
        head = len(_MAGIC) + 4 * n
        if not raw.startswith(_MAGIC) or len(raw) <= head:
            log.warning("state %s is corrupt; removed (it is rebuilt by `rag ingest`)", path.name)
            self.remove(n, digest)
            return None
        stored = struct.unpack(f"<{n}i", raw[len(_MAGIC) : head])
        if list(stored) != list(tokens):
            log.warning("state %s holds other tokens; removed", path.name)
            self.remove(n, digest)
            return None
        return raw[head:]

    def put(self, tokens: Sequence[int], data: bytes, *, protect: Iterable[str] = ()) -> bool:
        """Store ``data`` as the state after ``tokens``, evicting the least recently used
        entries (not those named in ``protect``) if the cap needs it. False, and nothing
        written, when it does not fit."""
        n = len(tokens)
        size = len(_MAGIC) + 4 * n + len(data)
        if size > self.max_bytes:
            return False
        need = self.usage() + size - self.max_bytes
        if need > 0 and not self._evict(need, set(protect)):
            return False
        digest = token_hash(tokens)
        if digest in self._index.get(n, set()):
            self.remove(n, digest)  # replaced: its bytes are counted once
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC)
                f.write(struct.pack(f"<{n}i", *tokens))
                f.write(data)
            os.replace(tmp, self._path(n, digest))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._index.setdefault(n, set()).add(digest)
        self._bytes += size
        self._wrote()
        return True

    def _evict(self, need: int, protect: set[str]) -> bool:
        entries = []
        for path in self.folder.glob(f"*{_SUFFIX}"):
            parsed = _parse_name(path.name)
            if not parsed or parsed[1] in protect:
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, parsed))
        if sum(size for _, size, _ in entries) < need:
            return False
        for _, size, (n, digest) in sorted(entries):
            self.remove(n, digest)
            need -= size
            if need <= 0:
                break
        return True

    def discard(self, tokens: Sequence[int]) -> None:
        """Remove the entry for exactly ``tokens`` (one that could not be loaded)."""
        self.remove(len(tokens), token_hash(tokens))

    def remove(self, n: int, digest: str) -> None:
        path = self._path(n, digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:
            size = 0
        if digest in self._index.get(n, set()):
            self._bytes = max(0, self._bytes - size)
        self._forget(n, digest)
        self._wrote()

    def _forget(self, n: int, digest: str) -> None:
        hashes = self._index.get(n)
        if hashes is not None:
            hashes.discard(digest)
            if not hashes:
                del self._index[n]

    def retain(self, keep: set[str]) -> int:
        """Remove every entry whose hash is not in ``keep`` (a changed chunk, a deleted file,
        a new prompt template); the number removed."""
        gone = [(n, d) for n, ds in self._index.items() for d in ds if d not in keep]
        for n, d in gone:
            self.remove(n, d)
        return len(gone)


def _parse_name(name: str) -> tuple[int, str] | None:
    if not name.endswith(_SUFFIX) or name.startswith("."):
        return None
    n, _, digest = name[: -len(_SUFFIX)].partition("-")
    return (int(n), digest) if n.isdigit() and digest else None
