"""Document management: list, upload (indexed incrementally) and delete articles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import RagDep, ReadAuth, SettingsDep, WriteAuth
from rag.ingest.loader import UnreadableFile, decode_article
from rag.service import DocumentError, IngestReport, check_document_name

router = APIRouter(tags=["documents"])


class Document(BaseModel):
    name: str = Field(description="File name; citations use it as `source`.")
    sha256: str
    size: int = Field(description="Size in bytes.")
    chunks: int = Field(description="Number of indexed passages.")
    indexed_at: float = Field(description="Unix time it was indexed.")
    title: str = ""
    date: str = ""


class DocumentText(BaseModel):
    name: str = Field(description="File name; citations use it as `source`.")
    title: str = Field("", description="Title of the article, when the text gives one.")
    date: str = Field("", description="Date of the article, when the text gives one.")
    text: str = Field(
        description="The whole file, decoded from UTF-8 and otherwise untouched: a citation's "
        "`text` is `text[start:end]` (offsets count Unicode code points)."
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
    responses={401: {"description": "A key is required for reads"}},
)
def list_documents(rag: RagDep) -> list[Document]:
    """The indexed articles with their chunk counts, hashes and indexing times."""
    return [Document.model_validate(r.__dict__) for r in rag.documents()]


@router.get(
    "/v1/documents/{name}",
    response_model=DocumentText,
    dependencies=[ReadAuth],
    responses={
        401: {"description": "A Bearer key is required (`require_key_for_reads`)"},
        404: {"description": "No such document"},
        422: {"description": "Not a plain .txt/.md file name, or the file is unreadable"},
    },
)
async def get_document(
    name: Annotated[str, Path(description="File name of the article (a citation's `source`).")],
    rag: RagDep,
) -> DocumentText:
    """One indexed article in full, to show a cited passage in its context.

    `text` is the original file exactly as stored (decoded from UTF-8, nothing cleaned or
    normalised), so for every citation of this article `text[start:end]` equals the
    citation's `text`: a page can highlight the cited span in the whole article. Offsets
    count Unicode code points (as Python strings do), not bytes or UTF-16 units. Names are
    plain file names; anything with folders or `..` is refused.
    """
    try:
        name = check_document_name(name)
    except DocumentError as exc:
        raise HTTPException(422, str(exc)) from None
    record = rag.index.files.get(name)
    if record is None:
        raise HTTPException(404, f"no document named {name!r}")
    path = rag.settings.data_dir / name
    try:
        data = await run_in_threadpool(path.read_bytes)
        text = decode_article(name, data)
    except FileNotFoundError:
        raise HTTPException(404, f"no document named {name!r}") from None
    except UnreadableFile as exc:
        raise HTTPException(422, str(exc)) from None
    return DocumentText(name=name, title=record.title, date=record.date, text=text)


@router.post(
    "/v1/documents",
    response_model=DocumentChange,
    status_code=201,
    dependencies=[WriteAuth],
    responses={
        401: {},
        403: {"description": "Writes are disabled (no key configured)"},
        413: {"description": "File too large"},
        422: {"description": "Bad file"},
    },
)
async def upload_document(file: UploadFile, rag: RagDep, settings: SettingsDep) -> DocumentChange:
    """Upload a UTF-8 `.txt` or `.md` article; it is indexed at once, incrementally.

    A file with the name of an existing article replaces it (the old version goes to the
    trash, restorable). Names must be plain file names
    (no folders); non-UTF-8 or binary files are refused with 422 and change nothing; files over
    the size limit get 413. Requires `Authorization: Bearer <key>` when API keys are set.
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
    responses={
        401: {},
        403: {"description": "Writes are disabled (no key configured)"},
        404: {"description": "No such document"},
    },
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
    responses={401: {"description": "A key is required for reads"}},
)
def list_trash(rag: RagDep) -> list[TrashItem]:
    """Deleted and replaced articles, newest first: each can be restored until purged."""
    return [TrashItem.model_validate(e.__dict__) for e in rag.trashed()]


@router.post(
    "/v1/trash/{key}/restore",
    response_model=DocumentChange,
    dependencies=[WriteAuth],
    responses={
        401: {}, 403: {"description": "Writes are disabled (no key configured)"},
        404: {"description": "No such trash entry"},
    },
)  # fmt: skip
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
    responses={
        401: {}, 403: {"description": "Writes are disabled (no key configured)"},
        404: {"description": "No such trash entry"},
    },
)  # fmt: skip
async def purge_document(key: Annotated[str, _TRASH_ID], rag: RagDep) -> Purged:
    """Delete a trashed article for good (this cannot be undone)."""
    try:
        entry = await run_in_threadpool(rag.purge_document, key)
    except KeyError:
        raise HTTPException(404, f"no trash entry {key!r}") from None
    return Purged(purged=entry.id, name=entry.name)
