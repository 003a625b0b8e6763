"""A dataset's history and contents: commits, folder listings, file downloads, diffs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import quote

import blake3
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lakecache.data.index import ManifestIndex
from lakecache.errors import IntegrityError, NotFoundError
from lakecache.lake.objects import EMPTY_DIGEST, Commit, normalize_folder, normalize_path
from lakecache.server.auth import (
    Plane,
    Principal,
    User,
    kept_reader_access,
    require_access,
    require_dataset,
)
from lakecache.server.errors import COMMON_RESPONSES, ErrorBody, InvalidCursorError, Responses, log
from lakecache.server.listing import content_type
from lakecache.server.lookups import KeptPage, commit_at, kept_commit
from lakecache.server.models import ChangeOut, CommitOut, DiffPage, TreeItem, TreePage
from lakecache.server.pagination import Page, Paging, decode_cursor, encode_cursor, paginate
from lakecache.server.params import DatasetName
from lakecache.server.runtime import ControlPlane

router = APIRouter(prefix="/datasets/{dataset}", tags=["commits"], responses=COMMON_RESPONSES)

Ref = Annotated[
    str, Path(min_length=1, max_length=128, description="Tag, 'latest' or commit id (prefix)")
]
FilePath = Annotated[str, Path(min_length=1, max_length=4096, description="Path inside the commit")]

#: Shown in the browser; anything else downloads as a file. Never HTML or SVG inline:
#: a dataset's files are not trusted, and the dashboard shares this origin.
_INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})
_FILE_RESPONSES: Responses = {
    200: {
        "content": {"application/octet-stream": {}, "image/png": {}, "image/jpeg": {}},
        "description": "The file's bytes, streamed from the lake",
    },
    304: {"description": "Not modified (If-None-Match matched the file's digest)"},
    502: {"model": ErrorBody, "description": "The lake lost or damaged the file's bytes"},
}


@contextmanager
def open_index(plane: ControlPlane, manifest: str) -> Iterator[ManifestIndex]:
    """The local index of a manifest, built once even when many requests ask at once."""
    state = plane.settings.state_dir
    if ManifestIndex.location(state, manifest).exists():
        idx = ManifestIndex.open(state, manifest, lambda: plane.hub.lake)
    else:
        with plane.index_lock(manifest):
            idx = ManifestIndex.open(state, manifest, lambda: plane.hub.lake)
    try:
        yield idx
    finally:
        idx.close()


def commit_out(commit_id: str, c: Commit, tags: list[str]) -> CommitOut:
    return CommitOut(
        id=commit_id,
        parents=list(c.parents),
        author=c.author,
        message=c.message,  # type: ignore[attr-defined]
        created_at=c.created_at,
        file_count=c.file_count,
        bytes=c.bytes,
        tags=tags,  # type: ignore[attr-defined]
    )


@router.get("/commits", response_model=Page[CommitOut])
def list_commits(
    dataset: DatasetName,
    principal: User,
    plane: Plane,
    paging: Paging,
    ref: Annotated[
        str | None, Query(max_length=128, description="Start here (default: latest)")
    ] = None,
) -> Page[CommitOut]:
    """History from ``ref``, newest first, with parents (for the lineage graph) and tags."""
    require_dataset(plane, principal, dataset)
    catalog = plane.hub.catalog
    tags = catalog.tags(dataset)
    commits = catalog.log(dataset, ref)
    page = paginate(commits, paging)
    items = [commit_out(c.id, c, tags.get(c.id, [])) for c in page.items]
    return Page[CommitOut](items=items, next_cursor=page.next_cursor, total=page.total)


@router.get("/commits/{ref}", response_model=CommitOut)
def get_commit(dataset: DatasetName, ref: Ref, principal: User, plane: Plane) -> CommitOut:
    """One commit, by tag, 'latest' or id prefix."""
    access = require_access(plane, principal, dataset)
    commit_id, commit = commit_at(plane, access.dataset, ref)
    return commit_out(commit_id, commit, plane.hub.catalog.tags(dataset).get(commit_id, []))


_LISTING_RESPONSES: Responses = {
    304: {"description": "Not modified (If-None-Match matched the page's ETag)"},
}


def _tree(
    plane: ControlPlane, principal: Principal, dataset: str, ref: str, path: str, paging: Paging
) -> KeptPage:
    """A folder's page as sent: the rights and the ref checked in the catalog (this blocks)."""
    commit_id, commit, folder, after = _resolve(plane, principal, dataset, ref, path, paging)
    # A commit's page never changes: made once, then sent as it was (see server.lookups).
    key = ("tree", commit_id, folder, after, paging.limit)
    kept = plane.pages.get(key)
    if kept is None:
        page = _tree_page(plane, commit_id, commit, folder, after, paging.limit)
        kept = plane.pages.put(key, page.model_dump_json().encode())
    return kept


def _kept_tree(
    plane: ControlPlane, principal: Principal, dataset: str, ref: str, path: str, paging: Paging
) -> KeptPage | None:
    """The same page from memory alone, when the caller's right to read the dataset, the
    commit (named by its full id) and the page are all kept; else None. Never blocks, so
    the route answers on the event loop, without a hop to a worker thread and back."""
    access = kept_reader_access(plane, principal, dataset)
    if access is None:
        return None
    commit = kept_commit(plane, access.dataset, ref)
    if commit is None:
        return None
    folder, after = _where(path, paging)
    return plane.pages.get(("tree", ref, folder, after, paging.limit))


async def _tree_response(
    plane: ControlPlane,
    principal: Principal,
    dataset: str,
    ref: str,
    path: str,
    paging: Paging,
    request: Request,
) -> Response:
    kept = _kept_tree(plane, principal, dataset, ref, path, paging)
    if kept is None:
        kept = await run_in_threadpool(_tree, plane, principal, dataset, ref, path, paging)
    return immutable_json(request, kept.body, kept.etag)


def listing(
    plane: ControlPlane, principal: Principal, dataset: str, ref: str, path: str, paging: Paging
) -> TreePage:
    """A folder's page as the tree routes send it, as a model (for the dashboard's pages)."""
    commit_id, commit, folder, after = _resolve(plane, principal, dataset, ref, path, paging)
    return _tree_page(plane, commit_id, commit, folder, after, paging.limit)


def _resolve(
    plane: ControlPlane, principal: Principal, dataset: str, ref: str, path: str, paging: Paging
) -> tuple[str, Commit, str, tuple[str, str] | None]:
    """The caller's right checked, then the commit, the folder and where the page starts."""
    access = require_access(plane, principal, dataset)
    folder, after = _where(path, paging)
    commit_id, commit = commit_at(plane, access.dataset, ref)
    return commit_id, commit, folder, after


def _where(path: str, paging: Paging) -> tuple[str, tuple[str, str] | None]:
    """The folder listed and the entry the page starts after (from the cursor)."""
    folder = normalize_folder(path)
    if paging.cursor is None:
        return folder, None
    data = decode_cursor(paging.cursor)
    kind, name = data.get("k"), data.get("n")
    if kind not in ("d", "f") or not isinstance(name, str):
        raise InvalidCursorError("the cursor is not one of this listing's")
    return folder, (kind, name)


def _tree_page(
    plane: ControlPlane,
    commit_id: str,
    commit: Commit,
    folder: str,
    after: tuple[str, str] | None,
    limit: int,
) -> TreePage:
    with open_index(plane, commit.manifest) as idx:
        entries, last = idx.ls_page(folder, limit=limit, after=after)
        totals = idx.folder_totals(folder) or (1, entries[0].size if entries else 0)
    items = [
        TreeItem(
            name=e.name,
            path=e.path,
            type="folder" if e.is_dir else "file",
            size=e.size,
            files=e.files,
            digest=e.digest,
            content_type=None if e.is_dir else content_type(e.name),
        )
        for e in entries
    ]
    return TreePage(
        items=items,
        next_cursor=encode_cursor({"k": last[0], "n": last[1]}) if last else None,
        commit=commit_id,
        path=folder,
        folder_files=totals[0],
        folder_bytes=totals[1],
    )


def immutable_json(request: Request, body: bytes, etag: str) -> Response:
    """A JSON body that never changes under its ETag: 304 when the client has it.

    ``no-cache`` makes a browser ask every time (the caller's rights are checked on each
    request), and the answer is then an empty 304 instead of the page again."""
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    wanted = request.headers.get("if-none-match")
    if wanted is not None and (wanted.strip() == "*" or etag in _etags(wanted)):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header, weak ones compared by their opaque tag."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


@router.get("/commits/{ref}/tree", response_model=TreePage, responses=_LISTING_RESPONSES)
async def tree_root(
    dataset: DatasetName,
    ref: Ref,
    principal: User,
    plane: Plane,
    paging: Paging,
    request: Request,
) -> Response:
    """The top folder of a commit: sub-folders (with file counts and bytes), then files.

    The page carries an ETag: send it back as If-None-Match to get 304 when it is the same."""
    return await _tree_response(plane, principal, dataset, ref, "", paging, request)


@router.get(
    "/commits/{ref}/tree/{path:path}", response_model=TreePage, responses=_LISTING_RESPONSES
)
async def tree(
    dataset: DatasetName,
    ref: Ref,
    path: FilePath,
    principal: User,
    plane: Plane,
    paging: Paging,
    request: Request,
) -> Response:
    """One folder of a commit, paginated by name; a file path lists just that file.

    The page carries an ETag: send it back as If-None-Match to get 304 when it is the same."""
    return await _tree_response(plane, principal, dataset, ref, path, paging, request)


@router.get(
    "/commits/{ref}/files/{path:path}", response_class=StreamingResponse, responses=_FILE_RESPONSES
)
def download(
    dataset: DatasetName, ref: Ref, path: FilePath, request: Request, principal: User, plane: Plane
) -> Response:
    """The bytes of one file, streamed from the lake and checked against the file's digest.

    PNG, JPEG, GIF, WebP and plain text are served inline (image previews);
    everything else as an attachment. The ETag is the file's BLAKE3 digest.
    """
    access = require_access(plane, principal, dataset)
    rel = normalize_path(path)
    catalog = plane.hub.catalog
    commit_id, commit = commit_at(plane, access.dataset, ref)
    with open_index(plane, commit.manifest) as idx:
        entry = idx.get(rel)
        is_folder = entry is None and idx.folder_totals(rel) is not None
    if entry is None:
        hint = (
            ("It is a folder: list it with .../tree/" + rel)
            if is_folder
            else ("List the folder to see what is there.")
        )
        raise NotFoundError(f"no file {rel!r} in {dataset}@{commit_id[:12]}", hint=hint)
    name = rel.rpartition("/")[2]
    ctype = content_type(name) or "application/octet-stream"
    inline = ctype in _INLINE
    etag = f'"{entry.digest}"'
    disposition = "inline" if inline else "attachment"
    headers = {
        "ETag": etag,
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(name)}",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
        # A commit's file never changes; a tag or 'latest' can move to another commit.
        "Cache-Control": "private, max-age=31536000, immutable"
        if ref == commit_id
        else "private, no-cache",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    media = f"{ctype}; charset=utf-8" if ctype == "text/plain" else ctype
    headers["Content-Length"] = str(entry.size)
    if entry.size == 0 or entry.digest == EMPTY_DIGEST:
        return Response(b"", media_type=media, headers=headers)
    loc = catalog.locate_blobs([entry.digest]).get(entry.digest)
    if loc is None:
        raise IntegrityError(f"the bytes of {rel!r} are not in the lake's index")
    chunks = plane.hub.lake.iter_chunks(
        loc.key,
        start=loc.offset if loc.pack_id else 0,
        length=entry.size,
        chunk_size=plane.settings.part_size if entry.size > (1 << 20) else 1 << 20,
    )
    # The first chunk is read here, so a missing or unreachable object is a JSON error,
    # not a response cut short.
    first = next(chunks, b"")
    return StreamingResponse(
        _verified(first, chunks, entry.digest, entry.size, f"{dataset}@{commit_id[:12]}:{rel}"),
        media_type=media,
        headers=headers,
    )


def _verified(
    first: bytes, rest: Iterator[bytes], digest: str, size: int, what: str
) -> Iterator[bytes]:
    """Pass the chunks on, hashing them; on a mismatch break the response (the client sees a
    truncated body, never silently wrong bytes presented as complete)."""
    h = blake3.blake3()
    n = 0
    for chunk in _chain(first, rest):
        h.update(chunk)
        n += len(chunk)
        if n > size:
            break
        if n < size:
            yield chunk
            continue
        if h.hexdigest() != digest:
            break
        yield chunk
        return
    log.error(
        "integrity error: the lake's bytes of %s do not match its digest; response aborted", what
    )
    raise IntegrityError(f"the lake's bytes of {what} do not match its digest")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


@router.get("/diff", response_model=DiffPage)
def diff(
    dataset: DatasetName,
    principal: User,
    plane: Plane,
    paging: Paging,
    from_: Annotated[str, Query(alias="from", min_length=1, max_length=128)],
    to: Annotated[str, Query(min_length=1, max_length=128)] = "latest",
) -> DiffPage:
    """What changed from one commit to another: counts and bytes, and a page of changes."""
    access = require_access(plane, principal, dataset)
    ida, ca = commit_at(plane, access.dataset, from_)
    idb, cb = commit_at(plane, access.dataset, to)
    start = paging.offset()
    counts = {"added": 0, "removed": 0, "modified": 0}
    added_bytes = removed_bytes = 0
    items: list[ChangeOut] = []
    n = 0
    with open_index(plane, ca.manifest) as ia, open_index(plane, cb.manifest) as ib:
        for ch in ia.diff(ib):
            counts[ch.status] += 1
            if ch.status != "removed":
                added_bytes += ch.new_size or 0
            if ch.status != "added":
                removed_bytes += ch.old_size or 0
            if start <= n < start + paging.limit:
                items.append(
                    ChangeOut(
                        path=ch.path,
                        status=ch.status,  # type: ignore[arg-type]
                        old_size=ch.old_size,
                        new_size=ch.new_size,
                        old_digest=ch.old_digest,
                        new_digest=ch.new_digest,
                    )
                )
            n += 1
    end = start + len(items)
    return DiffPage(
        items=items,
        next_cursor=encode_cursor({"o": end}) if end < n else None,
        total=n,
        from_commit=ida,
        to_commit=idb,
        added=counts["added"],
        removed=counts["removed"],
        modified=counts["modified"],
        bytes_added=added_bytes,
        bytes_removed=removed_bytes,
    )
