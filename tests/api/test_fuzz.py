"""Bad input: the API fuzzed from its own OpenAPI schema, then hand-picked hostile questions and
uploads. Nothing may produce a 5xx; every response is one the schema documents (status, content
type, body); refusals are 4xx with a reason; nothing is lost or written outside the corpus
folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.modes import GenerationMode

from api.main import create_app
from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.service import RAG
from rag.settings import Settings
from tests.live_server import live_server

ROOT = Path(__file__).resolve().parents[2]
Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
#: What a peer tool checks: no 5xx, and each response is what the schema documents.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _operations() -> list[tuple[str, str]]:
    """Every operation of the schema (building the app loads nothing: no engine, no index)."""
    spec: dict[str, Any] = create_app(Settings(_env_file=None)).openapi()
    methods = {"get", "post", "put", "patch", "delete"}
    return [(m.upper(), path) for path, item in spec["paths"].items() for m in item if m in methods]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(ROOT / "data" / "articles", tmp / "articles")
    s = Settings(
        data_dir=tmp / "articles", index_dir=tmp / "index", embedder="fake", generator="fake",
        models_dir=ROOT / "models", n_threads=2, _env_file=None,
    )  # fmt: skip
    service = RAG(s, HashingEmbedder(), FakeGenerator())
    service.ingest()
    yield create_app(s, rag=service)
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # the fuzzer keeps the app started for the whole process


@pytest.fixture(scope="module")
def api_schema(fuzz_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.mark.parametrize(("method", "path"), _operations())
def test_fuzzing_the_schema_finds_no_server_error_and_no_undocumented_response(
    api_schema: Any, method: str, path: str
) -> None:
    """Valid and invalid requests generated from the schema (30 per operation, same every run);
    each response must be documented: its status, content type and body schema."""
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=30,
        derandomize=True,  # the same examples every run
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call()
        case.validate_response(response, checks=CHECKS)

    fuzz()


# --- questions ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """One app for the tests that must change nothing (each checks that it did not)."""
    tmp = tmp_path_factory.mktemp("shared")
    shutil.copytree(ROOT / "data" / "articles", tmp / "articles")
    s = Settings(
        data_dir=tmp / "articles", index_dir=tmp / "index", embedder="fake", generator="fake",
        models_dir=ROOT / "models", n_threads=2, _env_file=None,
    )  # fmt: skip
    service = RAG(s, HashingEmbedder(), FakeGenerator())
    service.ingest()
    with TestClient(create_app(s, rag=service)) as c:
        yield c, tmp


@pytest.fixture
def client(shared: tuple[TestClient, Path]) -> TestClient:
    return shared[0]


@pytest.fixture
def own_client(settings: Settings, rag: RAG) -> Iterator[TestClient]:
    """A client on an app of its own, for tests that add documents."""
    with TestClient(create_app(settings, rag=rag)) as c:
        yield c


@pytest.mark.parametrize(
    ("question", "status"),
    [
        ("", 422),
        ("   \n\t ", 422),
        ("\u200b\u200b", 200),  # zero-width spaces are not whitespace to Python: answered
        ("x" * 2001, 422),
        ("x" * 1_000_000, 422),  # a 1 MB body
        ("\x00", 200),
        ("câu hỏi\x00 có NUL", 200),
        ("\x1b[31mđỏ\x1b[0m \x07\x08", 200),
        ("\u202eRTL override \u202d", 200),
        ("\ufeffBOM đầu câu", 200),
        ("2024年越南签署了多少合作协议？", 200),
        ("كم عدد اتفاقيات التعاون التي وقعت في عام 2024؟", 200),
        ("🙂" * 500, 200),
        ("' OR 1=1; DROP TABLE chunks; --", 200),
        ("{{7*7}} ${jndi:ldap://x} <script>alert(1)</script>", 200),
    ],
)
def test_hostile_questions_get_an_answer_or_a_reason(
    client: TestClient, question: str, status: int
) -> None:
    r = client.post("/v1/ask", json={"question": question})
    assert r.status_code == status, r.text[:300]
    body = r.json()
    if status == 422:
        assert "question" in json.dumps(body)
    else:
        for c in body["citations"]:  # whatever was asked, citations are real passages
            assert c["text"] and c["source"].endswith(".txt")
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "question",
    ["2024年越南签署了多少合作协议？", "كم عدد اتفاقيات التعاون التي وقعت في عام 2024؟"],
)
def test_other_languages_do_not_crash_and_are_not_made_up(
    client: TestClient, question: str
) -> None:
    body = client.post("/v1/ask", json={"question": question}).json()
    assert body["abstained"] and body["citations"] == []
    streamed = client.post("/v1/ask", json={"question": question, "stream": True})
    assert streamed.status_code == 200 and "event: done" in streamed.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"question": "\\ud800 GDP?"}',  # a lone surrogate: valid JSON, not valid Unicode
        b"\xff\xfe" * 1000,
        b"[" * 100_000,
        b'{"question": ' + b'"x",' * 10_000 + b"}",
        b'{"question": "ok?", "top_k": 99999999999999999999999, "extra": ['
        + b"{}," * 10_000
        + b"1]}",
        b"",
        b"null",
    ],
)
def test_malformed_bodies_are_refused(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/ask", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text[:300]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/ask", b'{"question": 1e999}'),
        ("/v1/ask", b'{"question": "ok?", "history": [{"role": "user", "content": "\\udfff"}]}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 1e999}]}'),
    ],
)
def test_unencodable_bad_input_gets_422(client: TestClient, path: str, raw: bytes) -> None:
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_a_lone_surrogate_in_a_chat_message_is_refused(client: TestClient) -> None:
    raw = b'{"messages": [{"role": "user", "content": "GDP \\ud800?"}]}'
    r = client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_nfc_and_nfd_questions_get_the_same_answer(client: TestClient) -> None:
    nfc, nfd = unicodedata.normalize("NFC", Q170), unicodedata.normalize("NFD", Q170)
    assert nfc != nfd
    a = client.post("/v1/ask", json={"question": nfc}).json()
    b = client.post("/v1/ask", json={"question": nfd}).json()
    assert not a["abstained"] and "170" in a["answer"]
    assert (a["question"], a["answer"], a["citations"]) == (
        b["question"],
        b["answer"],
        b["citations"],
    )
    mixed = nfc[:20] + nfd[20:]  # half and half
    c = client.post("/v1/ask", json={"question": mixed}).json()
    assert (c["answer"], c["citations"]) == (a["answer"], a["citations"])
    hits = [client.get("/v1/search", params={"q": q}).json()["passages"] for q in (nfc, nfd)]
    assert hits[0] == hits[1]


# --- uploads ------------------------------------------------------------------------------------
def _upload(client: TestClient, name: str, data: bytes) -> Any:
    return client.post("/v1/documents", files={"file": (name, data, "text/plain")})


def _names(client: TestClient) -> list[str]:
    return [d["name"] for d in client.get("/v1/documents").json()]


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("cp1258.txt", "Hà Nội mùa thu".encode("cp1258", errors="replace"), 422),
        ("latin1.txt", "Hà Nôi, Huê".encode("latin-1"), 422),
        ("utf16.txt", "Hà Nội".encode("utf-16"), 422),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422),
        ("big.txt", b"a" * 2_000_001, 413),
        ("../escape.txt", b"noi dung", 422),
        ("../../../../tmp/escape.txt", b"noi dung", 422),
        ("/etc/escape.txt", b"noi dung", 422),
        ("..\\escape.txt", b"noi dung", 422),
        ("sub/dir.txt", b"noi dung", 422),
        ("..", b"noi dung", 422),
        (".hidden.txt", b"noi dung", 422),
        ("nul\x00.txt", b"noi dung", 422),
        ("\u202etxt.exe", b"noi dung", 422),
        ("x" * 300 + ".txt", b"noi dung", 422),
        ("script.py", b"print(1)", 422),
        ("", b"noi dung", 422),
    ],
)
def test_bad_uploads_change_nothing(
    shared: tuple[TestClient, Path], name: str, data: bytes, status: int
) -> None:
    client, tmp = shared
    before = client.get("/v1/documents").json()
    files_before = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    r = _upload(client, name, data)
    assert r.status_code == status, r.text[:300]
    assert client.get("/v1/documents").json() == before
    files_after = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    assert files_after == files_before  # nothing written, inside the corpus or out of it
    assert not Path("/tmp/escape.txt").exists() and not Path("/etc/escape.txt").exists()


@pytest.mark.parametrize("data", [b"", b"  \n\n\t ", b"\xef\xbb\xbf"])
def test_an_empty_upload_is_refused_and_changes_nothing(
    own_client: TestClient, data: bytes
) -> None:
    before = own_client.get("/v1/documents").json()
    r = _upload(own_client, "trong.txt", data)
    assert r.status_code == 422, r.text
    assert "empty" in r.json()["detail"]
    assert own_client.get("/v1/documents").json() == before


def test_uploading_a_name_again_replaces_the_document(own_client: TestClient) -> None:
    n = len(_names(own_client))
    first = "Bài A\n\nThành phố Đà Lạt đón 9 triệu lượt khách năm 2030.\n".encode()
    second = "Bài A\n\nThành phố Huế đón 4 triệu lượt khách năm 2031.\n".encode()
    assert _upload(own_client, "lap.txt", first).json()["added"] == ["lap.txt"]
    r = _upload(own_client, "lap.txt", second)
    assert r.status_code == 201 and r.json()["updated"] == ["lap.txt"]
    assert len(_names(own_client)) == n + 1
    texts = [
        p["text"]
        for p in own_client.get("/v1/search", params={"q": "lượt khách"}).json()["passages"]
    ]
    assert any("Huế" in t for t in texts) and not any("Đà Lạt đón 9" in t for t in texts)
    # The same name in NFD is the same document.
    nfd = unicodedata.normalize("NFD", "Bài Huế.txt")
    assert _upload(own_client, unicodedata.normalize("NFC", nfd), second).status_code == 201
    assert _upload(own_client, nfd, first).json()["updated"] == ["Bài Huế.txt"]
    assert len(_names(own_client)) == n + 2


@pytest.mark.parametrize(
    "path",
    [
        "/v1/documents/..%2F..%2Fetc%2Fpasswd",
        "/v1/documents/%2e%2e",
        "/v1/documents/..%5C..%5Cwin.ini",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/index.html/../../../../etc/passwd",
    ],
)
def test_paths_cannot_leave_their_folders(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (404, 422)
    assert "root:" not in r.text


# --- every schemathesis phase, as a peer tool runs it --------------------------------------------
def _schemathesis(url: str, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`schemathesis run` over real HTTP, all four phases and the conformance checks, bounded
    in examples and time."""
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(exe), "run", f"{url}/openapi.json",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", ",".join(check.__name__ for check in CHECKS),
        "--max-examples", "15", "--max-time", "120", "--seed", "7",
        "--request-timeout", "20", "--warnings", "off",
        "--report", "junit", "--report-junit-path", str(report),
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _fuzz_target(tmp: Path, **overrides: Any) -> tuple[RAG, Settings]:
    shutil.copytree(ROOT / "data" / "articles", tmp / "articles")
    s = Settings(
        data_dir=tmp / "articles", index_dir=tmp / "index", embedder="fake", generator="fake",
        models_dir=ROOT / "models", n_threads=2, generator_process=False, _env_file=None,
        **overrides,
    )  # fmt: skip
    service = RAG(s, HashingEmbedder(), FakeGenerator())
    service.ingest()
    return service, s


def test_every_schemathesis_phase_leaves_the_default_corpus_untouched(tmp_path: Path) -> None:
    """The default configuration (no keys) refuses every write the fuzzer tries."""
    service, s = _fuzz_target(tmp_path, allow_open_writes=False)
    before = _tree(s.data_dir)
    with live_server(create_app(s, rag=service)) as url:
        run = _schemathesis(url, tmp_path / "junit.xml")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert phase in run.stdout, f"phase {phase} did not run:\n{run.stdout[-3000:]}"
    assert _tree(s.data_dir) == before, "the fuzzer changed the corpus"
    assert not s.trash_path.exists() or not any(s.trash_path.iterdir())


def test_with_a_key_what_the_fuzzer_deletes_can_be_restored(tmp_path: Path) -> None:
    key = "fuzz-key-0123456789"
    service, s = _fuzz_target(tmp_path, api_keys=[key])
    before = _tree(s.data_dir)
    with live_server(create_app(s, rag=service)) as url:
        run = _schemathesis(url, tmp_path / "junit.xml", "--header", f"Authorization: Bearer {key}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # Put back every original the fuzzer deleted or overwrote, from the trash.
    for name, data in before.items():
        current = s.data_dir / name
        if current.exists() and current.read_bytes() == data:
            continue
        entry = next(e for e in service.trashed() if e.name == name and e.sha256 == _sha(data))
        service.restore_document(entry.id)
    for name in set(_tree(s.data_dir)) - set(before):
        service.delete_document(name)  # what the fuzzer uploaded
    assert _tree(s.data_dir) == before


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
