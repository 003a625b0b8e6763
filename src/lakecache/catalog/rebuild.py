"""Rebuild a lost catalog from the lake alone.

The lake is the source of truth. What the catalog holds about datasets comes
back from the lake's ref log (:mod:`lakecache.lake.reflog`): each live dataset
with its owner, description and creation time, every commit it added (the
commit objects under ``commits/`` give their content and parents), its branch
heads and its tags. The blob index comes back from the packs' own indexes
(``packs/*.idx``) and the loose blobs (``blobs/``), except packs and blobs a
garbage collection condemned (they are on their way out, and no new commit may
deduplicate against them).

Not rebuilt: users, tokens, memberships and roles, sites, volumes, caches and
everything else that is not the lake's. A rebuilt dataset keeps its owner's
name; an org admin gives people their roles again.

The catalog is written directly, in one transaction per dataset, without
telling its journal (the records are already in the lake).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from lakecache.catalog import tables as t
from lakecache.errors import ObjectNotFoundError, UserError
from lakecache.lake.objects import BlobLocation, Commit, commit_key, decode_pack_index
from lakecache.lake.reflog import DatasetHistory, RefLog

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog
    from lakecache.lake import Lake

#: Objects fetched from the lake at once.
FETCH_THREADS = 16
#: Where garbage collection keeps its condemned list (see lakecache.data.gc).
CONDEMNED_PREFIX = "gc/condemned/"


@dataclass
class RebuildResult:
    """What a rebuild recreated, and what it could not."""

    datasets: int = 0
    commits: int = 0
    tags: int = 0
    branches: int = 0
    packs: int = 0
    blobs: int = 0
    #: Datasets the catalog already had (only with ``force``); left as they were.
    skipped: list[str] = field(default_factory=list)
    #: Commits the ref log names whose objects are gone from the lake.
    missing_commits: list[str] = field(default_factory=list)


def is_empty(catalog: Catalog) -> bool:
    """Whether the catalog holds no dataset and no blob."""
    with catalog._read() as conn:
        datasets = conn.scalar(select(func.count()).select_from(t.datasets))
        blobs = conn.scalar(select(func.count()).select_from(t.blobs))
    return not datasets and not blobs


def rebuild(
    catalog: Catalog,
    lake: Lake,
    *,
    force: bool = False,
    report: Callable[[str], None] = lambda _: None,
) -> RebuildResult:
    """Recreate datasets, commits, refs and the blob index in ``catalog`` from ``lake``.

    Refuses (UserError) a catalog that holds datasets or blobs unless
    ``force``; then datasets it has already are kept as they are, and the blob
    index only gains rows. Raises lake and catalog errors.
    """
    if not force and not is_empty(catalog):
        raise UserError(
            f"the catalog at {catalog.url} is not empty",
            hint="Rebuild into an empty catalog (a new SQLite file or PostgreSQL database), "
            "or pass --force to add what the lake has to this one.",
        )
    result = RebuildResult()
    report("reading the ref log")
    state = RefLog(lambda: lake).state()
    existing = {d.name for d in catalog.list_datasets()}
    for name in sorted(state.datasets):
        if name in existing:
            result.skipped.append(name)
            continue
        _rebuild_dataset(catalog, lake, state.datasets[name], result)
        report(f"dataset {name}: {len(state.datasets[name].commits)} commits")
    report("indexing packs and blobs")
    _rebuild_blob_index(catalog, lake, result)
    return result


def _rebuild_dataset(
    catalog: Catalog, lake: Lake, history: DatasetHistory, result: RebuildResult
) -> None:
    def fetch(commit_id: str) -> tuple[str, Commit | None]:
        try:
            return commit_id, Commit.from_json(lake.get(commit_key(commit_id)))
        except ObjectNotFoundError:
            return commit_id, None

    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="lakecache-rebuild") as pool:
        fetched = dict(pool.map(fetch, history.commits))
    commits = {cid: c for cid, c in fetched.items() if c is not None}
    result.missing_commits.extend(cid for cid, c in fetched.items() if c is None)
    created_at = _parse_time(history.created_at) or _earliest(commits.values())
    with catalog._write() as conn:
        dataset_id = conn.execute(
            t.datasets.insert().values(
                name=history.name,
                owner=history.owner or "unknown",
                description=history.description,
                created_at=created_at,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        # Parents before children, in the order they were added: ``seq`` breaks ties in logs.
        for cid in _topological(history.commits, commits):
            c = commits[cid]
            conn.execute(
                t.commits.insert().values(
                    id=cid,
                    dataset_id=dataset_id,
                    manifest=c.manifest,
                    author=c.author,
                    message=c.message,
                    created_at=c.created_at,
                    file_count=c.file_count,
                    bytes=c.bytes,
                )
            )
            parents = [p for p in c.parents if p in commits]
            if parents:
                conn.execute(
                    t.commit_parents.insert(),
                    [
                        {"commit_id": cid, "position": i, "parent_id": p}
                        for i, p in enumerate(parents)
                    ],
                )
        now = datetime.now(UTC)
        refs = [(n, "branch", c) for n, c in history.branches.items()]
        refs += [(n, "tag", c) for n, c in history.tags.items()]
        rows = [
            {"dataset_id": dataset_id, "name": n, "kind": k, "commit_id": c, "updated_at": now}
            for n, k, c in refs
            if c in commits
        ]
        if rows:
            conn.execute(t.refs.insert(), rows)
    result.datasets += 1
    result.commits += len(commits)
    result.branches += sum(1 for r in rows if r["kind"] == "branch")
    result.tags += sum(1 for r in rows if r["kind"] == "tag")


def _topological(order: list[str], commits: dict[str, Commit]) -> list[str]:
    """``order`` with every commit after its parents (it already is, unless the log was odd)."""
    out: list[str] = []
    placed: set[str] = set()

    def place(cid: str) -> None:
        stack = [cid]
        while stack:
            top = stack[-1]
            if top in placed:
                stack.pop()
                continue
            waiting = [p for p in commits[top].parents if p in commits and p not in placed]
            if waiting:
                stack.extend(waiting)
                continue
            placed.add(top)
            out.append(top)
            stack.pop()

    for cid in order:
        if cid in commits:
            place(cid)
    return out


def _rebuild_blob_index(catalog: Catalog, lake: Lake, result: RebuildResult) -> None:
    condemned = _condemned(lake)
    sizes = {o.key: o.size for o in lake.list("packs/")}
    indexes = [
        k for k in sizes if k.endswith(".idx") and k[: -len(".idx")] + ".pack" not in condemned
    ]

    def read(key: str) -> tuple[str, list[tuple[str, int, int]]]:
        return key, decode_pack_index(lake.get(key))

    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="lakecache-rebuild") as pool:
        for key, entries in pool.map(read, indexes):
            pack_id = key[len("packs/") : -len(".idx")]
            data_key = f"packs/{pack_id}.pack"
            if data_key not in sizes:
                continue  # an index whose pack is gone: nothing to locate there
            locs = [BlobLocation(d, n, pack_id, o) for d, o, n in entries]
            catalog.record_pack(pack_id, sizes[data_key], locs)
            result.packs += 1
            result.blobs += len(locs)
    for info in lake.list("blobs/"):
        if info.key in condemned:
            continue
        digest = info.key[len("blobs/") :].replace("/", "", 1)
        catalog.record_blob(BlobLocation(digest, info.size))
        result.blobs += 1


def _condemned(lake: Lake) -> set[str]:
    import json

    keys = [o.key for o in lake.list(CONDEMNED_PREFIX) if o.key.endswith(".json")]
    if not keys:
        return set()
    return set(json.loads(lake.get(keys[-1])).get("condemned", {}))


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _earliest(commits: Iterable[Commit]) -> datetime:
    times = [m for c in commits if (m := _parse_time(c.created_at)) is not None]
    return min(times, default=datetime.now(UTC))
