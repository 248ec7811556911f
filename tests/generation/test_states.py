"""The store of precomputed model states: found by exact tokens, atomic, capped, LRU."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rag.generation.states import StateStore, token_hash


def _store(tmp_path: Path, max_bytes: int = 10_000) -> StateStore:
    return StateStore(tmp_path / "states", max_bytes=max_bytes)


def test_the_longest_stored_prefix_is_found_and_only_a_prefix(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.put([1, 2, 3], b"abc") and store.put([1, 2, 3, 4, 5], b"abcde")
    assert store.longest([1, 2, 3, 4, 5, 6]) == (5, b"abcde")
    assert store.longest([1, 2, 3, 4, 9]) == (3, b"abc")
    assert store.longest([1, 2, 3, 4, 5]) == (3, b"abc")  # a state must leave a token to read
    assert store.longest([1, 2, 3, 4, 5, 6], longer_than=5) is None  # the cache holds more
    assert store.longest([2, 2, 3, 4]) is None


def test_the_store_is_found_again_by_a_new_process(tmp_path: Path) -> None:
    _store(tmp_path).put([7, 8, 9], b"state")
    again = _store(tmp_path)
    assert len(again) == 1 and again.longest([7, 8, 9, 10]) == (3, b"state")


def test_a_corrupt_entry_is_removed_not_used(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put([1, 2], b"good")
    [path] = (tmp_path / "states").glob("*.state")
    path.write_bytes(b"garbage")
    assert store.longest([1, 2, 3]) is None
    assert not path.exists() and len(store) == 0


def test_an_entry_whose_tokens_differ_from_its_name_is_not_trusted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put([1, 2], b"one")
    store.put([3, 4], b"two")
    a = tmp_path / "states" / f"2-{token_hash([1, 2])}.state"
    b = tmp_path / "states" / f"2-{token_hash([3, 4])}.state"
    a.write_bytes(b.read_bytes())  # the file says [3, 4] under the name of [1, 2]
    assert store.longest([1, 2, 5]) is None


def test_the_cap_evicts_the_least_recently_used_and_skips_what_cannot_fit(tmp_path: Path) -> None:
    store = _store(tmp_path, max_bytes=3 * 200)
    for i in range(3):
        assert store.put([i, i], b"x" * 150)
        t = time.time() - 100 + i
        os.utime(tmp_path / "states" / f"2-{token_hash([i, i])}.state", (t, t))
    assert store.longest([0, 0, 1]) is not None  # entry 0 is used now: 1 is the oldest
    assert store.put([9, 9], b"y" * 150)
    assert store.longest([1, 1, 0]) is None
    assert store.longest([0, 0, 1]) is not None and store.longest([9, 9, 1]) is not None
    assert store.usage() <= store.max_bytes
    # Protected entries are not evicted: nothing else to drop, so the new one is skipped.
    protect = {token_hash([0, 0]), token_hash([2, 2]), token_hash([9, 9])}
    assert not store.put([5, 5], b"z" * 150, protect=protect)
    assert store.longest([5, 5, 1]) is None and len(store) == 3
    assert not store.put([6], b"w" * 10_000)  # bigger than the whole cap


def test_retain_drops_what_no_passage_needs_any_more(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put([1], b"a")
    store.put([2], b"b")
    assert store.retain({token_hash([2])}) == 1
    assert store.longest([1, 0]) is None and store.longest([2, 0]) == (1, b"b")


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put([1, 2, 3], b"abc")
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == [
        f"3-{token_hash([1, 2, 3])}.state"
    ]


def test_entries_another_process_adds_are_found(tmp_path: Path) -> None:
    server = _store(tmp_path)
    assert server.longest([4, 5, 6]) is None
    _store(tmp_path).put([4, 5], b"from rag ingest")  # another process, same folder
    assert server.longest([4, 5, 6]) == (2, b"from rag ingest")
