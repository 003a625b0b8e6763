"""The catalog, as a lakecache server serves it: what commit, pull and the CLI ask of it.

:class:`RemoteCatalog` answers the :class:`~lakecache.catalog.Catalog` methods
the data layer uses, with the same types and the same errors, through the
server's REST API (``/datasets``, ``/datasets/{name}/commits|tags``) and its
lake endpoints (``/lake/known|locate|packs|blobs|commits|log``). The server
checks every write against the lake before it records it, and the caller's
role on the dataset; this side only translates.

Blob-index calls are batched (:data:`BATCH` digests a request) and consume
their input lazily, so memory stays flat in the number of files. Records of
uploaded packs and blobs go in the background, a few at a time, so a commit's
coordinating thread does not wait while the server checks each pack in the
lake; :meth:`RemoteCatalog.add_commit` waits for them all first, and the first
one the server refused is raised there (or from the next blob-index call). Things only
the server's own database can do are not here (sites, volumes and caches are
:class:`~lakecache.client.topology.RemoteTopology`'s; accounts are the
server's): asking for them raises a :class:`UserError` that says so.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from lakecache.client.connection import ServerConnection, path_part
from lakecache.errors import IntegrityError, UserError
from lakecache.lake.objects import BlobLocation, Commit

if TYPE_CHECKING:
    from lakecache.catalog import DatasetRecord, DatasetStats

#: The branch commits go to: :data:`lakecache.catalog.names.MAIN`, named again here
#: because importing the catalog package loads SQLAlchemy, which a client never needs.
MAIN = "main"
#: Digests per known/locate request (the server takes up to 10,000).
BATCH = 10_000
#: Records sent at once, and in flight at most (then a new one waits for the oldest).
#: A record is a few hundred bytes; the server reads each pack back before answering, so
#: a commit whose uploads outrun those checks runs on, up to MAX_PENDING records ahead.
RECORDERS = 4
MAX_PENDING = 64


class RemoteCatalog:
    """The catalog behind a lakecache server. Thread-safe; the hub makes it."""

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        # list_datasets already carries each dataset's stats; the CLI asks for them next.
        self._listed: dict[str, DatasetStats] = {}
        self._records: ThreadPoolExecutor | None = None
        self._pending: deque[Future[Any]] = deque()
        self._records_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"the catalog of {self._conn.url}"

    def __repr__(self) -> str:
        return f"RemoteCatalog({self._conn.url!r})"

    def close(self) -> None:
        """Wait for the records still in flight (the hub closes the connection next).

        Their errors are not raised here: a commit that needed them raised them
        from :meth:`add_commit`; one that stopped early for another reason has
        that error to report, and an unrecorded pack is only an upload to redo.
        """
        with self._records_lock:
            pool, self._records = self._records, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._pending.clear()

    # -- datasets --------------------------------------------------------------------------

    def create_dataset(self, name: str, owner: str, description: str = "") -> DatasetRecord:
        """Create the dataset on the server; the logged-in user becomes its admin and owner."""
        self._conn.touch(name)
        out = self._conn.call("POST", "/datasets", json={"name": name, "description": description})
        return _record(out)

    def get_dataset(self, name: str) -> DatasetRecord:
        self._conn.touch(name)
        return _record(self._conn.call("GET", f"/datasets/{path_part(name)}"))

    def list_datasets(self) -> list[DatasetRecord]:
        """The datasets the logged-in user can read, by name."""
        out = []
        for item in self._conn.pages("/datasets"):
            out.append(_record(item))
            self._listed[item["name"]] = _stats(item)
        return out

    def dataset_stats(self, name: str) -> DatasetStats:
        cached = self._listed.pop(name, None)
        if cached is not None:
            return cached
        self._conn.touch(name)
        return _stats(self._conn.call("GET", f"/datasets/{path_part(name)}"))

    # -- blob index --------------------------------------------------------------------------

    def record_pack(self, pack_id: str, size: int, blobs: Sequence[BlobLocation]) -> None:
        """Have the server record an uploaded pack; it reads the blobs from the pack's index.

        Sent in the background (see :meth:`flush`): the server checks the pack in
        the lake before it records it, which takes a round trip or two there, and
        a commit's coordinating thread need not wait for it.
        """
        for loc in blobs:
            if loc.pack_id != pack_id:
                raise ValueError(f"blob {loc.digest} is located in {loc.pack_id}, not {pack_id}")
        body = {
            "datasets": self._conn.scope(),
            "pack_id": pack_id,
            "size": size,
            "blob_count": len(blobs),
        }
        self._record("/lake/packs", body)

    def record_blob(self, loc: BlobLocation) -> None:
        """Have the server record a large blob stored alone; in the background, as packs."""
        if loc.pack_id is not None:
            raise ValueError(f"blob {loc.digest} is in pack {loc.pack_id}: use record_pack")
        body = {"datasets": self._conn.scope(), "digest": loc.digest, "size": loc.size}
        self._record("/lake/blobs", body)

    def _record(self, path: str, body: dict[str, Any]) -> None:
        self._raise_failed()
        with self._records_lock:
            if self._records is None:
                self._records = ThreadPoolExecutor(RECORDERS, thread_name_prefix="remote-record")
            pool = self._records
            oldest = self._pending[0] if len(self._pending) >= MAX_PENDING else None
        if oldest is not None:
            wait([oldest])  # backpressure: a bounded number of records in flight
            self._raise_failed()
        future = pool.submit(self._conn.call, "POST", path, json=body)
        with self._records_lock:
            self._pending.append(future)

    def _raise_failed(self) -> None:
        """Forget finished records; raise the first error among them."""
        with self._records_lock:
            done = [f for f in self._pending if f.done()]
            for f in done:
                self._pending.remove(f)
        for f in done:
            f.result()

    def flush(self) -> None:
        """Wait until every record sent is made; raise the first that failed.

        :meth:`add_commit` flushes first, so a commit is never added before the
        packs and blobs it names are recorded.
        """
        with self._records_lock:
            pending = list(self._pending)
        wait(pending)
        self._raise_failed()

    def known_blobs(self, digests: Iterable[str]) -> set[str]:
        self._raise_failed()
        out: set[str] = set()
        for batch in _batches(digests):
            answer = self._conn.call(
                "POST", "/lake/known", json={"datasets": self._conn.scope(), "digests": batch}
            )
            out.update(answer["known"])
        return out

    def locate_blobs(self, digests: Iterable[str]) -> dict[str, BlobLocation]:
        out: dict[str, BlobLocation] = {}
        for batch in _batches(digests):
            answer = self._conn.call(
                "POST", "/lake/locate", json={"datasets": self._conn.scope(), "digests": batch}
            )
            packs = answer["packs"]
            for digest, size, pack, offset in answer["blobs"]:
                out[digest] = BlobLocation(digest, size, packs[pack] if pack >= 0 else None, offset)
        return out

    # -- commits and refs --------------------------------------------------------------------

    def add_commit(self, commit: Commit, *, expected_head: str | None, branch: str = MAIN) -> str:
        """Add a commit whose objects are in the lake; ConflictError if the branch moved."""
        self.flush()
        self._conn.touch(commit.dataset)
        out = self._conn.call(
            "POST",
            "/lake/commits",
            json={
                "commit": commit.to_json().decode(),
                "expected_head": expected_head,
                "branch": branch,
            },
        )
        return str(out["id"])

    def head(self, dataset: str, branch: str = MAIN) -> str | None:
        if branch != MAIN:
            raise UserError(f"only the {MAIN!r} branch is served", hint=f"Use {MAIN!r}.")
        return self.dataset_stats(dataset)["head"]

    def get_commit(self, dataset: str, commit_id: str) -> Commit:
        self._conn.touch(dataset)
        out = self._conn.call(
            "GET", f"/lake/commits/{path_part(commit_id)}", params={"dataset": dataset}
        )
        return _commit(out)

    def resolve(self, dataset: str, ref: str | None) -> str:
        self._conn.touch(dataset)
        out = self._conn.call(
            "GET", f"/datasets/{path_part(dataset)}/commits/{path_part(ref or 'latest')}"
        )
        return str(out["id"])

    def log(self, dataset: str, start: str | None = None, limit: int | None = None) -> list[Commit]:
        self._conn.touch(dataset)
        params: dict[str, Any] = {"dataset": dataset}
        if start is not None:
            params["ref"] = start
        if limit is not None:
            params["limit"] = limit
        return [_commit(c) for c in self._conn.call("GET", "/lake/log", params=params)]

    def set_tag(self, dataset: str, tag: str, commit_id: str, *, force: bool = False) -> None:
        self._conn.touch(dataset)
        self._conn.call(
            "PUT",
            f"/datasets/{path_part(dataset)}/tags/{path_part(tag)}",
            json={"ref": commit_id, "force": force},
        )

    def delete_tag(self, dataset: str, tag: str) -> None:
        self._conn.touch(dataset)
        self._conn.call("DELETE", f"/datasets/{path_part(dataset)}/tags/{path_part(tag)}")

    def tags(self, dataset: str) -> dict[str, list[str]]:
        self._conn.touch(dataset)
        out: dict[str, list[str]] = {}
        for item in self._conn.pages(f"/datasets/{path_part(dataset)}/tags"):
            out.setdefault(item["commit"], []).append(item["name"])
        for names in out.values():
            names.sort()
        return out

    # -- what only the server's database can do ------------------------------------------------

    def _read(self) -> NoReturn:
        self._direct_only()

    def _write(self) -> NoReturn:
        self._direct_only()

    def _direct_only(self) -> NoReturn:
        raise UserError(
            f"this needs the catalog database itself, and this machine works through the "
            f"lakecache server at {self._conn.url}",
            hint="Use the server's REST API or dashboard for it (the `cache`, `site`, "
            "`volume`, `user` and `member` commands already do); or run this where the "
            "catalog is configured (unset LAKECACHE_SERVER, or `lakecache logout`).",
        )


def _batches(digests: Iterable[str]) -> Iterator[list[str]]:
    it = iter(digests)
    while batch := list(itertools.islice(it, BATCH)):
        yield batch


def _record(d: dict[str, Any]) -> DatasetRecord:
    from lakecache.catalog.db import DatasetRecord  # loads SQLAlchemy: only when asked

    # The API does not expose the catalog's row ids; nothing in the data layer uses them.
    return DatasetRecord(0, d["name"], d["owner"], d["description"], _time(d["created_at"]))


def _stats(d: dict[str, Any]) -> DatasetStats:
    return {
        "commit_count": int(d["commit_count"]),
        "head": d["head"],
        "file_count": int(d["file_count"]),
        "bytes": int(d["bytes"]),
    }


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _commit(d: dict[str, Any]) -> Commit:
    commit = Commit(
        dataset=d["dataset"],
        manifest=d["manifest"],
        parents=tuple(d["parents"]),
        author=d["author"],
        message=d["message"],
        created_at=d["created_at"],
        file_count=int(d["file_count"]),
        bytes=int(d["bytes"]),
    )
    if commit.id != d["id"]:
        raise IntegrityError(
            f"the server sent commit {d['id'][:12]} of {d['dataset']!r} with content that hashes "
            f"to {commit.id[:12]}",
            hint="The server's catalog or this client is damaged; report it to the server's admin.",
        )
    return commit
