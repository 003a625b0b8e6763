"""Who may touch which lake key: roles on the named datasets, each commit's keys, URL signing."""

from __future__ import annotations

import bisect
import itertools
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Request
from pydantic import Field

from lakecache.catalog.accounts import ROLE_RANK
from lakecache.durable import fsync_dir
from lakecache.errors import (
    DatasetNotFoundError,
    InvalidPathError,
    NotFoundError,
    UserError,
)
from lakecache.lake.objects import (
    Commit,
    ManifestEntry,
    commit_key,
    manifest_key,
    pack_key,
)
from lakecache.server.auth import Principal, dataset_role
from lakecache.server.errors import PermissionDeniedError
from lakecache.server.routes.commits import open_index

if TYPE_CHECKING:
    from lakecache.lake import Lake
    from lakecache.lake.s3 import S3Lake
    from lakecache.server.runtime import ControlPlane


#: Seconds a presigned URL stays valid.
URL_TTL = 900
#: Headers a presigned PUT is signed with, which the client must send: no overwrites.
PUT_HEADERS = {"If-None-Match": "*"}
#: Digests, keys or URLs in one request.
MAX_BATCH = 10_000
MAX_PRESIGN = 1_000
#: Datasets one request may name.
MAX_DATASETS = 16
#: S3's limits on one PUT and on the parts of one multipart upload.
MAX_PUT = 5 << 30
MIN_PART = 5 << 20
MAX_PARTS = 10_000
#: Commits whose key sets stay in memory.
SCOPE_CACHE = 256
#: Digests asked of the blob index at once while working out a commit's scope.
LOCATE_CHUNK = 20_000
#: Bytes a streamed upload gathers before each write (written in a worker thread).
STREAM_WRITE = 4 << 20

_HEX64 = "[0-9a-f]{64}"
_KEY_KINDS = {
    "pack": re.compile(rf"packs/({_HEX64})\.pack"),
    "pack_index": re.compile(rf"packs/({_HEX64})\.idx"),
    "blob": re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{62})"),
    "manifest": re.compile(rf"manifests/({_HEX64})"),
    "commit": re.compile(rf"commits/({_HEX64})\.json"),
}
_KEY_HINT = (
    "Lake keys a client may use: packs/<id>.pack, packs/<id>.idx, blobs/ab/<rest>, "
    "manifests/<digest>, commits/<id>.json (lowercase hex)."
)

Digest = Annotated[str, Field(pattern=f"^{_HEX64}$")]
DatasetList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    Field(min_length=1, max_length=MAX_DATASETS, description="Datasets this work is for"),
]
LakeKey = Annotated[str, Field(min_length=1, max_length=300)]


# -- the shared state: scopes and the presigner ----------------------------------------------


class LakeAccess:
    """What the lake endpoints share for one server: which keys each commit references,
    and how to sign URLs for the lake (None for a lake that is streamed instead).

    Thread-safe. Made once per app, on first use.

    Scopes outlive the blob index they were worked out from. A commit never
    changes, but where its blobs lie does: lake garbage collection rewrites a
    mostly-garbage pack into a new one and re-points the index there (the old
    pack is deleted once condemned), and puts back blobs the index had lost
    (a commit may have named them while they were unlocated). The collector
    may run in another process, or on another machine, so this server is not
    told. Instead a scope is checked when it fails: a request for a key that
    the blob index records (a pack or a loose blob), which no scope of the
    named datasets holds, makes the server check those scopes against the
    index (:meth:`refresh_stale`), one batched query over the packs they
    name; a scope that names a pack the index no longer has, or that was
    worked out while some of its blobs were unlocated, is worked out again
    from the current index, once, and the request placed again. Reads keep
    the cost of a scope that is right; a stale scope costs one pass over its
    manifest, the first time it misses (a commit whose blobs are missing from
    the lake for good pays it at each such miss). A stale scope never grants too much:
    it names only packs that held the commit's blobs, and a pack never changes.
    """

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.presigner = S3Presigner.for_lake(plane.hub.lake)
        from lakecache.server.routes.lake.verify import PackChecker  # verify imports this

        #: Reads uploaded packs back to hash them, a bounded number of GETs at once.
        self.pack_checker = PackChecker()
        self._scopes: OrderedDict[str, CommitScope] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._scope_dir = plane.settings.state_dir / "scopes"

    @property
    def mode(self) -> Literal["presign", "stream"]:
        return "presign" if self.presigner is not None else "stream"

    def commit_scope(self, commit_id: str, commit: Commit) -> CommitScope:
        """The packs and large blobs commit ``commit_id``'s manifest references.

        Worked out once per commit (an immutable list) and kept on disk; a
        commit's first pull through the server pays one pass over its manifest.
        """
        found = self._cached(commit_id)
        if found is not None:
            return found
        # One pass per commit, however many requests ask at once (a pull's first GETs).
        with self._building_lock(commit_id):
            found = self._cached(commit_id)
            if found is not None:
                return found
            path = self._scope_dir / f"{commit_id}.scope"
            try:
                scope = CommitScope.parse(path.read_text())
            except FileNotFoundError:
                scope = self._work_out(commit_id, commit)
            return self._remember(commit_id, scope)

    def _work_out(self, commit_id: str, commit: Commit) -> CommitScope:
        """A commit's scope from its manifest and the blob index as it is now; saved."""
        with open_index(self.plane, commit.manifest) as idx:
            scope = self._scope_of(e.digest for e in idx.entries())
        self._save(self._scope_dir / f"{commit_id}.scope", scope)
        return scope

    def refresh_stale(self, datasets: Iterable[str]) -> int:
        """Work out again the scopes of ``datasets``' commits that the blob index has left
        behind (see the class doc); return how many.

        A scope is stale when it names a pack the index no longer records (garbage
        collection rewrote it into a new pack), or when some of its commit's blobs
        were unlocated as it was worked out (they may be located now). Costs one
        query per :data:`LOCATE_CHUNK` packs named, and a manifest pass per stale scope.
        """
        stale: list[tuple[str, Commit, CommitScope]] = []
        batch: list[tuple[str, Commit, CommitScope]] = []
        named: set[str] = set()

        def check() -> None:
            recorded = self.plane.hub.catalog.pack_sizes(named)
            for commit_id, commit, scope in batch:
                if scope.unlocated or any(p not in recorded for p in scope.pack_ids):
                    stale.append((commit_id, commit, scope))
            batch.clear()
            named.clear()

        for commits in self._commits(list(datasets)):
            for c in commits:
                scope = self.commit_scope(c.id, c)
                batch.append((c.id, c, scope))
                named.update(scope.pack_ids)
                if len(named) >= LOCATE_CHUNK:
                    check()
        check()
        for commit_id, commit, scope in stale:
            with self._building_lock(commit_id):
                current = self._cached(commit_id)
                if current is not None and current is not scope:
                    continue  # another request worked it out again meanwhile
                self._remember(commit_id, self._work_out(commit_id, commit))
        return len(stale)

    def _cached(self, commit_id: str) -> CommitScope | None:
        with self._lock:
            found = self._scopes.get(commit_id)
            if found is not None:
                self._scopes.move_to_end(commit_id)
            return found

    def _building_lock(self, commit_id: str) -> threading.Lock:
        with self._lock:
            return self._building.setdefault(commit_id, threading.Lock())

    def learn(self, commit_id: str, entries: Iterable[ManifestEntry]) -> CommitScope:
        """Work out a new commit's keys from its manifest's entries (at add_commit)."""
        scope = self._scope_of(e.digest for e in entries)
        self._save(self._scope_dir / f"{commit_id}.scope", scope)
        return self._remember(commit_id, scope)

    def _scope_of(self, digests: Iterable[str]) -> CommitScope:
        catalog = self.plane.hub.catalog
        keys: set[str] = set()
        extents: dict[str, list[tuple[int, int]]] = {}
        unlocated = 0
        it = iter(digests)
        while chunk := list(itertools.islice(it, LOCATE_CHUNK)):
            touched = set()
            wanted = set(chunk)
            located = catalog.locate_blobs(wanted)
            unlocated += len(wanted) - len(located)
            for loc in located.values():
                if loc.pack_id is None:
                    keys.add(loc.key)
                    continue
                touched.add(loc.pack_id)
                extents.setdefault(loc.pack_id, []).append((loc.offset, loc.offset + loc.size))
            for pid in touched:  # merged as we go: memory follows packs, not blobs
                extents[pid] = list(merge_extents(extents[pid]))
        sizes = catalog.pack_sizes(extents)
        partial: dict[str, Extents] = {}
        for pid, ext in extents.items():
            key = pack_key(pid)
            keys.add(key)
            merged = merge_extents(ext)
            if merged != ((0, sizes.get(pid, -1)),):
                partial[key] = merged
        return CommitScope(frozenset(keys), partial, unlocated)

    def _save(self, path: Path, scope: CommitScope) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
        # Flushed before the rename: a power loss leaves the old scope or the new one,
        # never a torn file that parses as a narrower scope.
        with open(tmp, "w") as f:
            f.write(scope.dump())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def _remember(self, commit_id: str, scope: CommitScope) -> CommitScope:
        with self._lock:
            self._scopes[commit_id] = scope
            self._scopes.move_to_end(commit_id)
            while len(self._scopes) > SCOPE_CACHE:
                self._scopes.popitem(last=False)
        return scope

    def in_scope(self, datasets: Iterable[str], keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` that ``datasets`` reference whole (see the module doc).

        Manifests and commit objects are matched against the commit list first;
        packs and blobs against each commit's scope, newest commit first,
        stopping as soon as every key is placed. A pack that no commit holds
        whole counts if the commits' parts of it together make the whole pack.
        """
        datasets = list(datasets)
        wanted = set(keys)
        left, in_part = self._unplaced(datasets, wanted)
        if self._indexed(left - in_part) and self.refresh_stale(datasets):
            left, _ = self._unplaced(datasets, left)
        for key in [k for k in left if key_kind(k)[0] == "pack"]:
            size = self.plane.hub.catalog.pack_sizes([key_kind(key)[1]]).get(key_kind(key)[1])
            if size is not None and self.readable_ranges(datasets, key) == ((0, size),):
                left.discard(key)
        return wanted - left

    def _unplaced(self, datasets: list[str], keys: set[str]) -> tuple[set[str], set[str]]:
        """(the keys that no commit of ``datasets`` references whole, those of them that
        some commit references in part), as the commits' scopes say."""
        left = set(keys)
        in_part: set[str] = set()
        for commits in self._commits(datasets):
            if not left:
                break
            for c in commits:
                left.discard(commit_key(c.id))
                left.discard(manifest_key(c.manifest))
            if not any(key_kind(k)[0] in ("pack", "blob") for k in left):
                continue
            for c in commits:
                scope = self.commit_scope(c.id, c)
                left -= scope.whole
                in_part |= left & scope.keys
                if not left:
                    break
        return left, in_part & left

    def _indexed(self, keys: Iterable[str]) -> bool:
        """Whether the blob index records any of these packs or loose blobs: only such a
        miss can be a stale scope's (a made-up key never makes scopes be checked)."""
        catalog = self.plane.hub.catalog
        packs, loose = [], []
        for key in keys:
            kind, ident = key_kind(key)
            if kind == "pack":
                packs.append(ident)
            elif kind == "blob":
                loose.append(ident)
        if packs and catalog.pack_sizes(packs):
            return True
        return bool(loose) and any(
            loc.pack_id is None for loc in catalog.locate_blobs(loose).values()
        )

    def readable_ranges(self, datasets: Iterable[str], key: str) -> Extents:
        """The byte ranges of pack ``key`` that hold blobs of ``datasets`` (merged, sorted).

        A pack written by another dataset's commit and shared by deduplication
        is readable only there: its other blobs belong to datasets the caller
        may not see.
        """
        size = None
        found: list[tuple[int, int]] = []
        for commits in self._commits(list(datasets)):
            for c in commits:
                scope = self.commit_scope(c.id, c)
                if key not in scope.keys:
                    continue
                part = scope.partial.get(key)
                if part is None:  # whole: the pack's every byte
                    if size is None:
                        size = self.plane.hub.catalog.pack_sizes([key_kind(key)[1]]).get(
                            key_kind(key)[1], 0
                        )
                    return ((0, size),)
                found.extend(part)
        return merge_extents(found)

    def _commits(self, datasets: list[str]) -> Iterator[list[Commit]]:
        """Each dataset's commits, newest first."""
        catalog = self.plane.hub.catalog
        for dataset in datasets:
            try:
                yield catalog.log(dataset)
            except NotFoundError:
                continue


#: Merged byte ranges [start, end) of a pack, sorted.
Extents = tuple[tuple[int, int], ...]


def merge_extents(ranges: Iterable[tuple[int, int]]) -> Extents:
    """Sorted, disjoint [start, end) ranges covering what ``ranges`` cover (empty ones dropped)."""
    out: list[list[int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


@dataclass(frozen=True)
class CommitScope:
    """The lake keys one commit references, and the packs it holds only parts of.

    ``partial`` maps such a pack (written by another commit, shared by
    deduplication) to the byte ranges of this commit's blobs in it.
    """

    keys: frozenset[str]
    partial: Mapping[str, Extents]
    #: The commit's blobs the index did not locate when this was worked out (0: none).
    unlocated: int = 0

    @cached_property
    def whole(self) -> frozenset[str]:
        return self.keys - self.partial.keys()

    @cached_property
    def pack_ids(self) -> frozenset[str]:
        """The ids of the packs this scope names (whole or in part)."""
        return frozenset(key_kind(k)[1] for k in self.keys if k.startswith("packs/"))

    def dump(self) -> str:
        lines = [f"? {self.unlocated}"] if self.unlocated else []
        for key in sorted(self.keys):
            ranges = self.partial.get(key)
            if ranges is None:
                lines.append(key)
            else:
                lines.append(" ".join([key, "~", *(f"{a}-{b}" for a, b in ranges)]))
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> CommitScope:
        keys, partial, unlocated = set(), {}, 0
        for line in text.splitlines():
            key, *rest = line.split()
            if key == "?":  # blobs the index did not locate when this was worked out
                unlocated = int(rest[0])
                continue
            keys.add(key)
            if rest and rest[0] == "~":  # only parts of this pack: their ranges follow
                partial[key] = tuple((int(a), int(b)) for a, b in (r.split("-") for r in rest[1:]))
        return cls(frozenset(keys), partial, unlocated)


def lake_access(request: Request) -> LakeAccess:
    state = request.app.state
    access: LakeAccess | None = getattr(state, "lake_access", None)
    if access is None:
        with _ACCESS_LOCK:
            access = getattr(state, "lake_access", None)
            if access is None:
                access = state.lake_access = LakeAccess(state.plane)
    return access


_ACCESS_LOCK = threading.Lock()


class S3Presigner:
    """Signs URLs for one S3 lake with the server's own credentials (SigV4, path style),
    for the lake's public endpoint (``s3_public_endpoint``: what clients reach)."""

    def __init__(self, lake: S3Lake) -> None:
        self._lake = lake

    @classmethod
    def for_lake(cls, lake: Lake) -> S3Presigner | None:
        """A presigner for an S3 lake; None for any other (the server streams those)."""
        if not lake.url.startswith("s3://"):
            return None
        from lakecache.lake.s3 import S3Lake

        return cls(lake) if isinstance(lake, S3Lake) else None

    def get(self, key: str) -> str:
        return self._lake.presign("get_object", key, URL_TTL)

    def put(self, key: str, size: int) -> str:
        """A PUT URL for exactly ``size`` bytes that cannot replace an object: the client
        must send :data:`PUT_HEADERS` (signed), so S3 answers 412 once ``key`` exists."""
        return self._lake.presign("put_object", key, URL_TTL, ContentLength=size, IfNoneMatch="*")

    def part(self, key: str, upload_id: str, number: int, size: int) -> str:
        return self._lake.presign(
            "upload_part", key, URL_TTL, UploadId=upload_id, PartNumber=number, ContentLength=size
        )

    def create_multipart(self, key: str) -> str:
        return self._lake.create_multipart(key)

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> bool:
        """Join the parts, given as (number, ETag), unless ``key`` exists (then False)."""
        return self._lake.complete_multipart(key, upload_id, parts, if_absent=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._lake.abort_multipart(key, upload_id)


def key_kind(key: str) -> tuple[str, str]:
    """(kind, id) of a client key, or raise InvalidPathError."""
    for kind, pattern in _KEY_KINDS.items():
        m = pattern.fullmatch(key)
        if m:
            return kind, "".join(m.groups())
    raise InvalidPathError(f"{key!r} is not a lake key clients may use", hint=_KEY_HINT)


def allowed(plane: ControlPlane, principal: Principal, datasets: list[str], need: str) -> list[str]:
    """The named datasets on which the caller holds ``need`` (at least one, else 404 / 403)."""
    roles = [(d, dataset_role(plane, principal, d)) for d in dict.fromkeys(datasets)]
    ok = [d for d, r in roles if r is not None and ROLE_RANK[r] >= ROLE_RANK[need]]
    if ok:
        return ok
    member = [(d, r) for d, r in roles if r is not None]
    if not member:
        raise DatasetNotFoundError(f"no dataset named {datasets[0]!r}")
    d, r = member[0]
    raise PermissionDeniedError(
        f"your role on dataset {d!r} is {r}; this needs {need}",
        hint=f"Ask an admin of {d!r} for the {need} role.",
    )


def check_readable(access: LakeAccess, datasets: list[str], keys: list[str]) -> set[str]:
    """Refuse keys ``datasets`` do not reference; return the packs they hold only parts of.

    Those are read through the server, which zeroes every byte outside their
    own blobs (:func:`redact`), never with a URL to the whole object.
    """
    for key in keys:
        kind, _ = key_kind(key)
        if kind == "pack_index":
            raise PermissionDeniedError(
                f"{key} is not readable by clients", hint="Ask for the pack itself (.pack)."
            )
    outside = set(keys) - access.in_scope(datasets, keys)
    partial = {
        k for k in outside if key_kind(k)[0] == "pack" and access.readable_ranges(datasets, k)
    }
    outside -= partial
    if outside:
        first = sorted(outside)[0]
        raise PermissionDeniedError(
            f"{first} is not part of dataset {' or '.join(repr(d) for d in datasets)}"
            + (f" (and {len(outside) - 1} more keys)" if len(outside) > 1 else ""),
            hint="Ask only for objects the dataset's commits reference.",
        )
    return partial


def redact(chunks: Iterable[bytes], start: int, readable: Extents) -> Iterator[bytes]:
    """The bytes of a read from offset ``start``, zeroed outside ``readable``.

    A shared pack is served this way: a reader's ranged GETs may span the gap
    between two of its blobs (the client merges near neighbours into one
    request), and the gap may hold another dataset's files. Lengths and offsets
    stay as the client expects; only bytes it has no right to are zeros.
    """
    pos = start
    for chunk in chunks:
        end = pos + len(chunk)
        out = bytearray(len(chunk))
        i = max(bisect.bisect_right(readable, (pos, 2**63)) - 1, 0)
        while i < len(readable) and readable[i][0] < end:
            a, b = max(readable[i][0], pos), min(readable[i][1], end)
            if a < b:
                out[a - pos : b - pos] = chunk[a - pos : b - pos]
            i += 1
        yield bytes(out)
        pos = end


def presigner_of(request: Request) -> S3Presigner:
    presigner = lake_access(request).presigner
    if presigner is None:
        raise UserError(
            "this server's lake is a folder it streams to; there are no URLs or parts to sign",
            hint="PUT the whole object to /api/v1/lake/objects/KEY.",
        )
    return presigner


def size_of(lake: Lake, key: str) -> int | None:
    """The size of the object at ``key``, None if there is none (one LIST request)."""
    for info in lake.list(key):
        if info.key == key:
            return info.size
    return None


def url_expiry() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=URL_TTL)


def check_key_bytes(key: str, digest: str) -> None:
    """Refuse bytes whose BLAKE3 does not match a content-addressed key."""
    kind, ident = key_kind(key)
    if kind in ("blob", "manifest", "commit", "pack_index") and ident != digest:
        raise UserError(
            f"the bytes sent for {key} hash to {digest[:16]}, not to the key",
            hint="Upload the right bytes; a key names its content.",
        )
