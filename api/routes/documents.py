"""Document management: list, upload (indexed incrementally) and delete articles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, UploadFile
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import RagDep, ReadAuth, SettingsDep, WriteAuth
from api.errors import error_responses
from rag.index import FileRecord
from rag.ingest.formats import TextSource, text_source
from rag.ingest.loader import UnreadableFile
from rag.service import RAG, DocumentError, IngestReport, check_document_name

router = APIRouter(tags=["documents"])


class Document(BaseModel):
    name: str = Field(description="File name; citations use it as `source`.")
    sha256: str
    size: int = Field(description="Size in bytes.")
    chunks: int = Field(description="Number of indexed passages.")
    indexed_at: float = Field(description="Unix time it was indexed.")
    title: str = ""
    date: str = ""
    format: str = Field("text", description="text (.txt/.md), html, pdf or docx.")
    author: str = Field("", description="Author, when the page or file metadata names one.")
    text_source: TextSource = Field(
        "file", description="What citation offsets point into: the file, or its extracted text."
    )


class DocumentText(BaseModel):
    name: str = Field(description="File name; citations use it as `source`.")
    title: str = Field("", description="Title of the article, when the text gives one.")
    date: str = Field("", description="Date of the article, when the text gives one.")
    author: str = Field("", description="Author, when the page or file metadata names one.")
    text_source: TextSource = Field(
        "file",
        description="`file`: `text` is the file itself; `extracted`: the text extracted from "
        "a converted file (HTML, PDF, DOCX) when it was indexed.",
    )
    pages: list[int] = Field(
        default_factory=list, description="PDFs: the offset in `text` where each page starts."
    )
    text: str = Field(
        description="What citation offsets point into: the whole file decoded from UTF-8 and "
        "otherwise untouched (.txt/.md), or the text extracted from a converted file; a "
        "citation's `text` is `text[start:end]` (offsets count Unicode code points)."
    )


class DocumentChange(BaseModel):
    added: list[str]
    updated: list[str]
    removed: list[str]
    chunks: int = Field(description="Chunks in the whole index afterwards.")


def _change(r: IngestReport) -> DocumentChange:
    return DocumentChange(added=r.added, updated=r.updated, removed=r.removed, chunks=r.chunks)


@router.get(
    "/v1/documents",
    response_model=list[Document],
    dependencies=[ReadAuth],
    responses=error_responses(401),
)
def list_documents(rag: RagDep) -> list[Document]:
    """The indexed articles with their chunk counts, hashes and indexing times."""
    return [
        Document.model_validate({**r.__dict__, "text_source": text_source(r.name)})
        for r in rag.documents()
    ]


@router.get(
    "/v1/documents/{name}",
    response_model=DocumentText,
    dependencies=[ReadAuth],
    responses=error_responses(
        401, 404, 422,
        notes={404: "No such document",
               422: "Not a plain .txt/.md file name, or the file is unreadable"},
    ),
)  # fmt: skip
async def get_document(
    name: Annotated[str, Path(description="File name of the article (a citation's `source`).")],
    rag: RagDep,
) -> DocumentText:
    """One indexed article in full, to show a cited passage in its context.

    For a `.txt`/`.md` article `text` is the original file exactly as stored (decoded from
    UTF-8, nothing cleaned or normalised); for a converted one (HTML, PDF, DOCX,
    `text_source: "extracted"`) it is the text extracted from it when it was indexed. Either
    way, for every citation of this article `text[start:end]` equals the citation's `text`:
    a page can highlight the cited span in the whole article. Offsets count Unicode code
    points (as Python strings do), not bytes or UTF-16 units. Names are plain file names;
    anything with folders or `..` is refused.
    """
    text, record = await _document_text(rag, name)
    return DocumentText(
        name=record.name, title=record.title, date=record.date, author=record.author,
        text_source=text_source(record.name), pages=record.pages, text=text,
    )  # fmt: skip


async def _document_text(rag: RAG, name: str) -> tuple[str, FileRecord]:
    try:
        name = check_document_name(name)
    except DocumentError as exc:
        raise HTTPException(422, str(exc)) from None
    record = rag.index.files.get(name)
    if record is None:
        raise HTTPException(404, f"no document named {name!r}")
    try:
        return await run_in_threadpool(rag.document_text, name), record
    except KeyError:
        raise HTTPException(404, f"no document named {name!r}") from None


@router.get(
    "/v1/documents/{name}/text",
    response_class=PlainTextResponse,
    dependencies=[ReadAuth],
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}},
              "description": "The text citation offsets point into (UTF-8)."},
        **error_responses(401, 404, 422),
    },
)  # fmt: skip
async def get_document_text(
    name: Annotated[str, Path(description="File name of the article (a citation's `source`).")],
    rag: RagDep,
) -> PlainTextResponse:
    """The text a citation's `start`/`end` point into, as `text/plain; charset=utf-8`.

    For `.txt`/`.md` it is the file itself; for a converted file (HTML, PDF, DOCX: citations
    say `text_source: "extracted"`) it is the text extracted when it was indexed, kept with
    the index, so `text[start:end]` equals the citation's `text` (offsets in code points).
    """
    text, _ = await _document_text(rag, name)
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


@router.post(
    "/v1/documents",
    response_model=DocumentChange,
    status_code=201,
    dependencies=[WriteAuth],
    responses=error_responses(
        400, 401, 403, 413, 422, notes={422: "Bad file: its name, type, encoding or content"}
    ),
)
async def upload_document(file: UploadFile, rag: RagDep, settings: SettingsDep) -> DocumentChange:
    """Upload an article; it is indexed at once, incrementally.

    Accepted: UTF-8 `.txt`/`.md` (cited as they are), and `.html`/`.htm` pages (the article
    is extracted with trafilatura, its title, date and author from the page's metadata),
    `.pdf` with a text layer (citations carry the page) and `.docx` (cited in the text
    extracted from them: `GET /v1/documents/{name}/text`). A file with the name of an
    existing article replaces it (the old version goes to the trash, restorable). Names must
    be plain file names (no folders); a file that cannot be read (non-UTF-8 or binary text, a
    scanned PDF with no text layer, an encrypted PDF, a truncated or corrupt file) is refused
    with 422 saying why, and changes nothing; files over the size limit get 413. Requires
    `Authorization: Bearer <key>` when API keys are set.
    """
    limit = settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the file is larger than {limit} bytes")
    try:
        report = await run_in_threadpool(rag.add_document, file.filename or "", data)
    except (DocumentError, UnreadableFile) as exc:
        raise HTTPException(422, str(exc)) from None
    return _change(report)


@router.delete(
    "/v1/documents/{name}",
    response_model=DocumentChange,
    dependencies=[WriteAuth],
    responses=error_responses(
        401, 403, 404, 422, notes={404: "No such document", 422: "Not a plain file name"}
    ),
)
async def delete_document(
    name: Annotated[str, Path(description="File name of the article.")], rag: RagDep
) -> DocumentChange:
    """Move an article to the trash and drop its passages from the index.

    The file is not unlinked: `GET /v1/trash` lists it and `POST /v1/trash/{id}/restore`
    brings it back, until `DELETE /v1/trash/{id}` purges it. Needs a key (403 when no keys
    are configured, unless `RAG_ALLOW_OPEN_WRITES=true`)."""
    try:
        report = await run_in_threadpool(rag.delete_document, name)
    except DocumentError as exc:
        raise HTTPException(422, str(exc)) from None
    except KeyError:
        raise HTTPException(404, f"no document named {name!r}") from None
    return _change(report)


class TrashItem(BaseModel):
    id: str = Field(description="Trash entry id: restore or purge it by this id.")
    name: str = Field(description="The article's file name.")
    reason: str = Field(description="Why it was moved aside: deleted, or replaced.")
    deleted_at: float = Field(description="Unix time it was moved aside.")
    sha256: str
    size: int


class Purged(BaseModel):
    purged: str = Field(description="Id of the trash entry deleted for good.")
    name: str


_TRASH_ID = Path(description="A trash entry id (from GET /v1/trash), or an article's file name "
                 "(its newest entry).")  # fmt: skip


@router.get(
    "/v1/trash",
    response_model=list[TrashItem],
    dependencies=[ReadAuth],
    responses=error_responses(401),
)
def list_trash(rag: RagDep) -> list[TrashItem]:
    """Deleted and replaced articles, newest first: each can be restored until purged."""
    return [TrashItem.model_validate(e.__dict__) for e in rag.trashed()]


@router.post(
    "/v1/trash/{key}/restore",
    response_model=DocumentChange,
    dependencies=[WriteAuth],
    responses=error_responses(401, 403, 404, 422, notes={404: "No such trash entry"}),
)
async def restore_document(key: Annotated[str, _TRASH_ID], rag: RagDep) -> DocumentChange:
    """Put a trashed article back in the corpus and index it. An article of the same name in
    the corpus now goes to the trash first, so nothing is lost."""
    try:
        report = await run_in_threadpool(rag.restore_document, key)
    except KeyError:
        raise HTTPException(404, f"no trash entry {key!r}") from None
    return _change(report)


@router.delete(
    "/v1/trash/{key}",
    response_model=Purged,
    dependencies=[WriteAuth],
    responses=error_responses(401, 403, 404, 422, notes={404: "No such trash entry"}),
)
async def purge_document(key: Annotated[str, _TRASH_ID], rag: RagDep) -> Purged:
    """Delete a trashed article for good (this cannot be undone)."""
    try:
        entry = await run_in_threadpool(rag.purge_document, key)
    except KeyError:
        raise HTTPException(404, f"no trash entry {key!r}") from None
    return Purged(purged=entry.id, name=entry.name)
