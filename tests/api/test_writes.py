"""Writes are closed by default; with a key a delete is recoverable over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from rag.service import RAG
from rag.settings import Settings

NAME = "003_1f44b7b7ded05db5.txt"
KEY = "k-0123456789abcdef"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_with_no_key_configured_writes_are_refused_and_say_how_to_open_them(
    settings: Settings, rag: RAG, corpus: Path
) -> None:
    settings.allow_open_writes = False  # the default
    before = _snapshot(corpus)
    with TestClient(create_app(settings, rag=rag)) as c:
        for r in (
            c.delete(f"/v1/documents/{NAME}"),
            c.post("/v1/documents", files={"file": ("x.txt", "Nội dung.".encode(), "text/plain")}),
            c.post(f"/v1/trash/{NAME}/restore"),
            c.delete(f"/v1/trash/{NAME}"),
        ):
            assert r.status_code == 403, r.text
            detail = r.json()["detail"]
            assert "RAG_API_KEYS" in detail and "RAG_ALLOW_OPEN_WRITES" in detail
        assert c.get("/v1/documents").status_code == 200  # reads stay open
    assert _snapshot(corpus) == before


def test_the_default_settings_close_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAG_ALLOW_OPEN_WRITES", raising=False)
    s = Settings(_env_file=None)
    assert s.api_keys == [] and s.allow_open_writes is False


def test_with_a_key_delete_list_and_restore_over_http(
    settings: Settings, rag: RAG, corpus: Path
) -> None:
    settings.allow_open_writes = False
    settings.api_keys = [KEY]
    before = _snapshot(corpus)
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings, rag=rag)) as c:
        assert c.delete(f"/v1/documents/{NAME}").status_code == 401
        r = c.delete(f"/v1/documents/{NAME}", headers=auth)
        assert r.status_code == 200 and r.json()["removed"] == [NAME]
        [entry] = c.get("/v1/trash").json()
        assert entry["name"] == NAME and entry["reason"] == "deleted"
        assert c.post(f"/v1/trash/{entry['id']}/restore").status_code == 401
        r = c.post(f"/v1/trash/{entry['id']}/restore", headers=auth)
        assert r.status_code == 200 and r.json()["added"] == [NAME]
        assert c.get("/v1/trash").json() == []
        assert c.post("/v1/trash/nothing/restore", headers=auth).status_code == 404
    assert _snapshot(corpus) == before
