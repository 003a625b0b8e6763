"""Lake garbage collection: mark what any commit reaches, plan, then sweep the rest.

Why here: the collector needs every dataset's commits (the catalog, and the
lake's own ref log) and the lake's objects, so it sits in the data layer above
both, like commit and pull.

Phases.

1. **Mark** (:func:`mark`). The live commits are the catalog's (every dataset)
   together with those the lake's ref log names for datasets not deleted, so a
   catalog that lost rows, or a fresh one pointed at an old lake, never makes
   the collector delete history. The manifests of jobs' collected outputs
   are roots as well. Their manifests are streamed one at a time
   into a set of reachable blob digests (32 bytes each: about 60 MB for
   600,000 files; manifest entries are never all held). The blob index is then
   streamed once to count, per pack, the reachable blobs it locates there.
2. **Plan** (:func:`plan_gc`, pure). From the lake listing, the marks, the
   condemned list of the previous run, the time and the grace period, a frozen
   :class:`GcPlan` says which keys go, the bytes freed by kind, which packs
   are rewritten and which objects are condemned now.
3. **Sweep** (:func:`sweep`). Executes the plan.

Why a commit running during a collection stays whole.

* *Its fresh uploads* are younger than the grace period (default one day):
  nothing younger is ever deleted, by the store's own last-modified time,
  checked again by a fresh listing right before the deletes. Rewriting an
  object (the same manifest or pack written again) makes it young again.
* *Its deduplication against old blobs* is the subtle case: a commit asks the
  blob index which blobs exist and uploads only the others, so a pack that is
  garbage now may be named by a commit that asked a moment ago. Hence two
  phases. An unreachable pack or loose blob is first *condemned*: its rows
  leave the blob index (so from then on every commit uploads those bytes
  anew, into young packs) and the time is written to the lake under
  ``gc/condemned/``. It is deleted only by a later run, once it has been
  condemned for a whole grace period and is still unreachable. A commit that
  learned of it before the condemnation has finished by then (the grace
  period must exceed the longest commit, as for fresh uploads), so the later
  run's mark sees its manifest: the blob is reachable again, and that run
  *resurrects* it, putting its rows back in the index instead of deleting.
  The re-check right before deleting (commits added since the mark) covers
  what the grace period cannot: a commit added meanwhile spares any doomed
  object it names.
* Rewriting a mostly-garbage pack writes its live blobs to a new pack, points
  the index at the new pack in one transaction, and condemns the old pack like
  any other; readers that located a blob in it a moment ago still find it, for
  a grace period.

With ``grace=0`` a condemned object goes in the same run: reclaiming at once,
safe only when nothing commits meanwhile (a lake nobody uses, a test).

Commit objects, manifests and ref log records of deleted datasets are never
deduplicated against (a commit writes its own), so they go once unreachable
and older than the grace period.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from lakecache.catalog import sweep as index
from lakecache.errors import IntegrityError, ObjectNotFoundError, UserError
from lakecache.lake.objects import (
    BlobLocation,
    Commit,
    blob_key,
    commit_key,
    decode_pack_index,
    encode_pack_index,
    hash_bytes,
    manifest_key,
    pack_index_key,
    pack_key,
)
from lakecache.lake.reflog import REFS_PREFIX, RefLog

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.lake import Lake, ObjectInfo

#: Unreachable objects younger than this are never deleted (in-flight commits).
DEFAULT_GRACE = timedelta(days=1)
#: A pack whose live bytes are under this share of its size is rewritten.
REPACK_BELOW = 0.5
CONDEMNED_PREFIX = "gc/condemned/"
GC_FORMAT = "lakecache-gc/1"
#: Manifests fetched at once while marking.
FETCH_THREADS = 8

Kind = Literal["pack", "blob", "manifest", "commit", "ref"]
KINDS: tuple[Kind, ...] = ("commit", "manifest", "ref", "pack", "blob")


@dataclass(frozen=True)
class LakeObject:
    """One object the plan may delete."""

    key: str
    kind: Kind
    size: int


@dataclass(frozen=True)
class PackUsage:
    """What the blob index locates in one pack, and how much of that is reachable."""

    indexed_blobs: int = 0
    live_blobs: int = 0
    live_bytes: int = 0


@dataclass(frozen=True)
class Marks:
    """What the mark phase found (see :func:`mark`)."""

    live_commits: frozenset[str]
    live_manifests: frozenset[str]
    #: Ref log records at or before a deleted dataset's newest tombstone.
    dead_refs: frozenset[str]
    #: Per pack id, what the blob index locates there.
    packs: Mapping[str, PackUsage]
    #: Digests of loose blobs (``blobs/...``) that some live commit reaches.
    live_loose: frozenset[str]
    #: Reachable blobs the index had lost, found in the lake: put back by the sweep.
    resurrect: tuple[BlobLocation, ...] = ()
    #: Reachable blobs found nowhere in the lake (damage to report, never to hide).
    missing_blobs: int = 0
    missing_manifests: int = 0


@dataclass(frozen=True)
class Repack:
    """A mostly-garbage pack whose live blobs go to a new pack."""

    pack_id: str
    size: int
    live_blobs: int
    live_bytes: int


@dataclass(frozen=True)
class GcPlan:
    """What one collection does. Built by :func:`plan_gc`; nothing has happened yet."""

    now: datetime
    grace: timedelta
    #: Objects deleted by this run: unreachable, old, and (packs, blobs) condemned long enough.
    delete: tuple[LakeObject, ...]
    #: Packs and loose blobs newly unreachable: unpublished now, deleted by a later run.
    condemn: tuple[str, ...]
    repack: tuple[Repack, ...]
    #: Condemned key -> when, as the next run must find it (after this run's deletes).
    condemned: Mapping[str, datetime]
    #: Condemned objects still inside their grace period: (count, bytes).
    waiting: tuple[int, int] = (0, 0)
    #: Unreachable objects too young to touch: (count, bytes).
    young: tuple[int, int] = (0, 0)
    live: tuple[int, int] = (0, 0)
    missing_blobs: int = 0
    missing_manifests: int = 0

    @property
    def bytes_freed(self) -> int:
        """Bytes the deletes of this run free (a repack frees its pack on a later run)."""
        return sum(o.size for o in self.delete)

    def by_kind(self) -> dict[Kind, tuple[int, int]]:
        """Kind -> (objects, bytes) deleted."""
        out: dict[Kind, tuple[int, int]] = {k: (0, 0) for k in KINDS}
        for o in self.delete:
            n, b = out[o.kind]
            out[o.kind] = (n + 1, b + o.size)
        return out

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary (``lakecache lake gc --json``)."""
        return {
            "now": self.now.isoformat(),
            "grace_seconds": self.grace.total_seconds(),
            "bytes_freed": self.bytes_freed,
            "by_kind": {k: {"objects": n, "bytes": b} for k, (n, b) in self.by_kind().items()},
            "delete": [{"key": o.key, "kind": o.kind, "bytes": o.size} for o in self.delete],
            "condemn": list(self.condemn),
            "repack": [
                {
                    "pack": r.pack_id,
                    "bytes": r.size,
                    "live_blobs": r.live_blobs,
                    "live_bytes": r.live_bytes,
                }
                for r in self.repack
            ],
            "waiting": {"objects": self.waiting[0], "bytes": self.waiting[1]},
            "young": {"objects": self.young[0], "bytes": self.young[1]},
            "live": {"objects": self.live[0], "bytes": self.live[1]},
            "missing_blobs": self.missing_blobs,
            "missing_manifests": self.missing_manifests,
        }


@dataclass
class GcResult:
    """What a sweep did."""

    plan: GcPlan
    deleted: int = 0
    bytes_freed: int = 0
    repacked: int = 0
    #: Objects the plan doomed that the last checks spared (rewritten, or named by a new commit).
    spared: int = 0
    resurrected: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


Report = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# -- mark ------------------------------------------------------------------------------------


def reachable_digests(lake: Lake, manifests: Iterable[str], into: set[bytes]) -> int:
    """Add the raw digest of every blob of ``manifests`` to ``into``; return how many
    manifests were missing from the lake. Each manifest is decoded as a stream."""
    import msgpack
    import zstandard

    def fetch(digest: str) -> bytes | None:
        try:
            return lake.get(manifest_key(digest))
        except ObjectNotFoundError:
            return None

    missing = 0
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="lakecache-gc") as pool:
        for data in pool.map(fetch, sorted(set(manifests))):
            if data is None:
                missing += 1
                continue
            reader = zstandard.ZstdDecompressor().stream_reader(data)
            unpacker = msgpack.Unpacker(reader, raw=False, use_list=False)
            header = next(unpacker)
            if not isinstance(header, dict) or "count" not in header:
                raise IntegrityError("a manifest in the lake is not a lakecache manifest")
            for entry in unpacker:
                into.add(entry[1])
    return missing


def mark(lake: Lake, catalog: Catalog, report: Report = _quiet) -> tuple[Marks, set[bytes]]:
    """Find what is live: (the marks, the set of reachable raw digests).

    Reads every commit in the catalog and in the lake's ref log, streams their
    manifests, and streams the blob index once (twice if it lost reachable rows).
    """
    commits = index.commit_manifests(catalog)
    state = RefLog(lambda: lake).state()
    from_log = {c for h in state.datasets.values() for c in h.commits} - commits.keys()
    missing_manifests = 0
    for cid in sorted(from_log):
        try:
            commits[cid] = Commit.from_json(lake.get(commit_key(cid))).manifest
        except ObjectNotFoundError:
            missing_manifests += 1
    # Jobs' collected outputs are kept like commits: their manifests are roots too.
    kept = index.kept_manifests(catalog)
    report(f"marking from {len(commits)} commits and {len(kept)} job outputs")
    reachable: set[bytes] = set()
    missing_manifests += reachable_digests(lake, [*commits.values(), *kept], reachable)
    report(f"{len(reachable)} reachable blobs; reading the blob index")

    usage: dict[str, list[int]] = {}
    hits = 0
    for digest, size, pack_id in index.index_rows(catalog):
        live = digest in reachable
        hits += live
        if pack_id is not None:
            u = usage.setdefault(pack_id, [0, 0, 0])
            u[0] += 1
            if live:
                u[1] += 1
                u[2] += size
    loose_keys = {o.key for o in lake.list("blobs/")}
    live_loose = frozenset(
        name
        for key in loose_keys
        if len(name := _loose_digest(key)) == 64 and bytes.fromhex(name) in reachable
    )
    resurrect: list[BlobLocation] = []
    missing_blobs = 0
    if hits < len(reachable):
        lost = set(reachable)
        for digest, _, _ in index.index_rows(catalog):
            lost.discard(digest)
        resurrect, missing_blobs = _find_lost(lake, lost, usage.keys(), loose_keys)
        for loc in resurrect:
            if loc.pack_id is not None:
                u = usage.setdefault(loc.pack_id, [0, 0, 0])
                u[1] += 1
                u[2] += loc.size
    marks = Marks(
        live_commits=frozenset(commits),
        live_manifests=frozenset([*commits.values(), *kept]),
        dead_refs=frozenset(state.dead_keys),
        packs={p: PackUsage(*u) for p, u in usage.items()},
        live_loose=live_loose,
        resurrect=tuple(resurrect),
        missing_blobs=missing_blobs,
        missing_manifests=missing_manifests,
    )
    return marks, reachable


def _find_lost(
    lake: Lake, lost: set[bytes], indexed_packs: Iterable[str], loose_keys: set[str]
) -> tuple[list[BlobLocation], int]:
    """Look for reachable blobs the index does not locate: loose objects, then packs the
    index knows nothing of (or condemned ones). Returns their locations and how many
    are nowhere."""
    found: list[BlobLocation] = []
    for digest in list(lost):
        key = blob_key(digest.hex())
        if key in loose_keys:
            found.append(BlobLocation(digest.hex(), _size(lake, key)))
            lost.discard(digest)
    known = set(indexed_packs)
    if lost:
        for info in lake.list("packs/"):
            if not info.key.endswith(".idx"):
                continue
            pack_id = info.key[len("packs/") : -len(".idx")]
            if pack_id in known:
                continue
            for d, offset, length in decode_pack_index(lake.get(info.key)):
                raw = bytes.fromhex(d)
                if raw in lost:
                    lost.discard(raw)
                    found.append(BlobLocation(d, length, pack_id, offset))
            if not lost:
                break
    return found, len(lost)


def _size(lake: Lake, key: str) -> int:
    return next((o.size for o in lake.list(key) if o.key == key), 0)


# -- plan ------------------------------------------------------------------------------------


def classify(key: str) -> tuple[Kind, str] | None:
    """(kind, the object's unit key) of a lake key gc looks after; None for any other key.

    A pack's data and index are one unit, named by the data key.
    """
    if key.startswith("packs/"):
        if key.endswith(".pack"):
            return "pack", key
        if key.endswith(".idx"):
            return "pack", key[: -len(".idx")] + ".pack"
        return None
    if key.startswith("blobs/"):
        return "blob", key
    if key.startswith("manifests/"):
        return "manifest", key
    if key.startswith("commits/") and key.endswith(".json"):
        return "commit", key
    if key.startswith(REFS_PREFIX):
        return "ref", key
    return None


def plan_gc(
    objects: Iterable[ObjectInfo],
    marks: Marks,
    *,
    condemned: Mapping[str, datetime],
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
    repack_below: float = REPACK_BELOW,
) -> GcPlan:
    """Decide what one collection does. Pure: no I/O, the same inputs give the same plan.

    ``objects`` is a listing of the lake; ``condemned`` the previous run's
    condemned keys and times. See the module doc for the rules.
    """
    units: dict[str, list[ObjectInfo]] = {}
    kinds: dict[str, Kind] = {}
    for info in objects:
        c = classify(info.key)
        if c is None:
            continue
        kinds[c[1]] = c[0]
        units.setdefault(c[1], []).append(info)
    resurrected = {
        pack_key(loc.pack_id) if loc.pack_id else blob_key(loc.digest) for loc in marks.resurrect
    }

    delete: list[LakeObject] = []
    condemn: list[str] = []
    repack: list[Repack] = []
    next_condemned: dict[str, datetime] = {}
    waiting = young = live = (0, 0)
    for unit, infos in sorted(units.items()):
        kind = kinds[unit]
        size = sum(i.size for i in infos)
        modified = max((i.modified or now for i in infos), default=now)
        old = now - modified >= grace
        if _is_live(kind, unit, marks, resurrected):
            live = (live[0] + 1, live[1] + size)
            usage = marks.packs.get(_pack_id(unit)) if kind == "pack" else None
            if usage is not None and old and usage.live_bytes < repack_below * size:
                repack.append(Repack(_pack_id(unit), size, usage.live_blobs, usage.live_bytes))
                next_condemned[unit] = now  # its old copy, once the live blobs moved
                if grace <= timedelta(0):
                    delete.extend(LakeObject(i.key, kind, i.size) for i in infos)
            continue
        if not old:
            young = (young[0] + 1, young[1] + size)
            continue
        if kind in ("pack", "blob"):
            since = condemned.get(unit)
            if since is None:
                since = now
                condemn.append(unit)
            if now - since < grace:
                next_condemned[unit] = since
                waiting = (waiting[0] + 1, waiting[1] + size)
                continue
        # Index before data: a half-done sweep never leaves an index without its pack.
        for i in sorted(infos, key=lambda i: not i.key.endswith(".idx")):
            delete.append(LakeObject(i.key, kind, i.size))
    order = {k: n for n, k in enumerate(KINDS)}
    delete.sort(key=lambda o: order[o.kind])
    return GcPlan(
        now=now,
        grace=grace,
        delete=tuple(delete),
        condemn=tuple(condemn),
        repack=tuple(repack),
        condemned=next_condemned,
        waiting=waiting,
        young=young,
        live=live,
        missing_blobs=marks.missing_blobs,
        missing_manifests=marks.missing_manifests,
    )


def _unit(key: str) -> str:
    c = classify(key)
    return key if c is None else c[1]


def _loose_digest(key: str) -> str:
    """The digest a loose blob's key names (``blobs/ab/cdef...``)."""
    return key[len("blobs/") :].replace("/", "", 1)


def _pack_id(unit: str) -> str:
    return unit[len("packs/") : -len(".pack")]


def _is_live(kind: Kind, unit: str, marks: Marks, resurrected: set[str]) -> bool:
    if unit in resurrected:
        return True
    if kind == "pack":
        usage = marks.packs.get(_pack_id(unit))
        return usage is not None and usage.live_blobs > 0
    if kind == "blob":
        return _loose_digest(unit) in marks.live_loose
    if kind == "manifest":
        return unit[len("manifests/") :] in marks.live_manifests
    if kind == "commit":
        return unit[len("commits/") : -len(".json")] in marks.live_commits
    return unit not in marks.dead_refs


# -- the condemned list, in the lake -------------------------------------------------------------


def read_condemned(lake: Lake) -> dict[str, datetime]:
    """The newest condemned list a collection left (empty before the first)."""
    keys = [o.key for o in lake.list(CONDEMNED_PREFIX) if o.key.endswith(".json")]
    if not keys:
        return {}
    body = json.loads(lake.get(keys[-1]))
    if body.get("format") != GC_FORMAT:
        raise IntegrityError(f"{keys[-1]} is not a lakecache gc record")
    return {k: datetime.fromisoformat(v) for k, v in body["condemned"].items()}


def write_condemned(lake: Lake, condemned: Mapping[str, datetime], now: datetime) -> str:
    """Write the condemned list as a new immutable object; its key."""
    body = json.dumps(
        {
            "format": GC_FORMAT,
            "at": now.isoformat(),
            "condemned": {k: v.isoformat() for k, v in sorted(condemned.items())},
        },
        sort_keys=True,
    ).encode()
    stamp = int(now.timestamp() * 1_000_000)
    key = f"{CONDEMNED_PREFIX}{stamp:020d}-{hash_bytes(body)[:16]}.json"
    lake.put(key, body)
    return key


# -- plan, then sweep ---------------------------------------------------------------------------


def plan(
    lake: Lake,
    catalog: Catalog,
    *,
    grace: timedelta = DEFAULT_GRACE,
    now: datetime | None = None,
    repack_below: float = REPACK_BELOW,
    report: Report = _quiet,
) -> tuple[GcPlan, Marks, set[bytes]]:
    """Mark and plan (no change anywhere): the plan, and the marks the sweep needs."""
    if grace < timedelta(0):
        raise UserError(f"the grace period must not be negative, not {grace}")
    marks, reachable = mark(lake, catalog, report)
    report("listing the lake")
    objects = list(lake.list())
    condemned = read_condemned(lake)
    gc_plan = plan_gc(
        objects,
        marks,
        condemned=condemned,
        now=now or datetime.now(UTC),
        grace=grace,
        repack_below=repack_below,
    )
    return gc_plan, marks, reachable


def collect(
    lake: Lake,
    catalog: Catalog,
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    repack_below: float = REPACK_BELOW,
    report: Report = _quiet,
) -> GcResult:
    """Collect the lake's garbage: mark, plan, and (unless ``dry_run``) sweep.

    Safe while commits run (see the module doc). Run one collection at a time
    per lake. Raises lake and catalog errors; a sweep cut short leaves every
    live object in place and is finished by the next run.
    """
    t0 = time.perf_counter()
    gc_plan, marks, reachable = plan(
        lake, catalog, grace=grace, repack_below=repack_below, report=report
    )
    result = GcResult(gc_plan)
    result.extra["plan_s"] = time.perf_counter() - t0
    if not dry_run:
        sweep(lake, catalog, gc_plan, marks, reachable, result=result, report=report)
    result.seconds = time.perf_counter() - t0
    return result


def sweep(
    lake: Lake,
    catalog: Catalog,
    gc_plan: GcPlan,
    marks: Marks,
    reachable: set[bytes],
    *,
    result: GcResult | None = None,
    report: Report = _quiet,
) -> GcResult:
    """Execute ``gc_plan``: resurrect, unpublish, repack, record, re-check, then delete."""
    result = result or GcResult(gc_plan)
    # 1. Reachable blobs the index had lost go back first.
    _republish(lake, catalog, marks.resurrect)
    result.resurrected = len(marks.resurrect)
    # 2. Nothing may deduplicate against what is condemned or about to go.
    # Everything condemned, not only the new: a rebuilt catalog may have indexed it again.
    doomed_units = {_unit(o.key) for o in gc_plan.delete if o.kind in ("pack", "blob")}
    doomed_units |= set(gc_plan.condemned)
    repacked = {pack_key(r.pack_id) for r in gc_plan.repack}
    packs = [_pack_id(u) for u in doomed_units if u.startswith("packs/") and u not in repacked]
    loose = [_loose_digest(u) for u in doomed_units if u.startswith("blobs/")]
    if packs or loose:
        report(f"unpublishing {len(packs)} packs and {len(loose)} blobs from the blob index")
        index.unpublish(catalog, packs, loose)
    # 3. Mostly-garbage packs: live blobs to a new pack, index re-pointed, old pack condemned.
    kept: set[str] = set()
    for r in gc_plan.repack:
        report(f"rewriting pack {r.pack_id[:12]} ({r.live_blobs} live blobs)")
        if _repack(lake, catalog, r.pack_id, reachable):
            result.repacked += 1
        else:
            # Every blob it holds is live: the rewrite would be the same pack, which
            # the index still points at. It stays, whatever the plan said.
            kept.add(pack_key(r.pack_id))
    # 4. The condemned list, before anything goes: a crash after this loses no time.
    condemned = {u: t for u, t in gc_plan.condemned.items() if u not in kept}
    write_condemned(lake, condemned, gc_plan.now)
    # 5. Commits added since the mark spare what they name; objects rewritten since
    # the listing (young again) are spared too.
    spare = _named_by_new_commits(lake, catalog, marks, gc_plan.delete)
    fresh = {
        o.key: o
        for prefix in ("commits/", "manifests/", "packs/", "blobs/", "refs/")
        for o in lake.list(prefix)
    }
    doomed: list[LakeObject] = []
    for o in gc_plan.delete:
        now_info = fresh.get(o.key)
        if now_info is None:
            continue  # gone already
        if _unit(o.key) in kept:
            continue
        too_young = (
            now_info.modified is not None and gc_plan.now - now_info.modified < gc_plan.grace
        ) or (now_info.modified is not None and now_info.modified > gc_plan.now)
        if o.key in spare or _unit(o.key) in spare or too_young:
            result.spared += 1
            continue
        doomed.append(o)
    if spare:
        _republish_units(lake, catalog, spare)
    report(f"deleting {len(doomed)} objects")
    lake.delete(o.key for o in doomed)
    result.deleted = len(doomed)
    result.bytes_freed = sum(o.size for o in doomed)
    # 6. Older condemned lists are superseded by the one just written.
    lists = [o.key for o in lake.list(CONDEMNED_PREFIX)]
    lake.delete(lists[:-1])
    return result


def _republish(lake: Lake, catalog: Catalog, locs: Sequence[BlobLocation]) -> None:
    by_pack: dict[str, list[BlobLocation]] = {}
    for loc in locs:
        if loc.pack_id is None:
            catalog.record_blob(loc)
        else:
            by_pack.setdefault(loc.pack_id, []).append(loc)
    for pack_id, pack_locs in by_pack.items():
        catalog.record_pack(pack_id, _size(lake, pack_key(pack_id)), pack_locs)


def _republish_units(lake: Lake, catalog: Catalog, units: set[str]) -> None:
    """Put spared packs and loose blobs back in the index (all their blobs)."""
    for unit in units:
        if unit.startswith("packs/") and unit.endswith(".pack"):
            pack_id = _pack_id(unit)
            try:
                entries = decode_pack_index(lake.get(pack_index_key(pack_id)))
            except ObjectNotFoundError:
                continue
            locs = [BlobLocation(d, n, pack_id, o) for d, o, n in entries]
            catalog.record_pack(pack_id, _size(lake, unit), locs)
        elif unit.startswith("blobs/"):
            digest = _loose_digest(unit)
            catalog.record_blob(BlobLocation(digest, _size(lake, unit)))


def _named_by_new_commits(
    lake: Lake, catalog: Catalog, marks: Marks, delete: Sequence[LakeObject]
) -> set[str]:
    """Units among ``delete`` that a commit added since the mark names."""
    new = {c: m for c, m in index.commit_manifests(catalog).items() if c not in marks.live_commits}
    if not new:
        return set()
    spare = {commit_key(c) for c in new} | {manifest_key(m) for m in new.values()}
    digests: set[bytes] = set()
    reachable_digests(lake, new.values(), digests)
    for o in delete:
        if o.kind == "blob" and bytes.fromhex(_loose_digest(o.key)) in digests:
            spare.add(o.key)
        elif o.kind == "pack" and o.key.endswith(".idx"):
            try:
                entries = decode_pack_index(lake.get(o.key))
            except ObjectNotFoundError:
                continue
            if any(bytes.fromhex(d) in digests for d, _, _ in entries):
                spare.add(o.key[: -len(".idx")] + ".pack")
    return spare


def _repack(lake: Lake, catalog: Catalog, pack_id: str, reachable: set[bytes]) -> bool:
    """Write the live blobs of ``pack_id`` to a new pack and point the index there.

    False when the new pack would be this one (all its located blobs are live).
    """
    entries = decode_pack_index(lake.get(pack_index_key(pack_id)))
    located = catalog.locate_blobs(d for d, _, _ in entries)
    keep = [
        (d, o, n)
        for d, o, n in entries
        if bytes.fromhex(d) in reachable
        and (loc := located.get(d)) is not None
        and loc.pack_id == pack_id
    ]
    parts: list[bytes] = []
    new_index: list[tuple[str, int, int]] = []
    offset = 0
    for d, o, n in keep:
        data = lake.get(pack_key(pack_id), o, n)
        if hash_bytes(data) != d:
            raise IntegrityError(
                f"blob {d[:16]} in pack {pack_id[:16]} does not match its digest; "
                "the pack was not rewritten"
            )
        parts.append(data)
        new_index.append((d, offset, n))
        offset += n
    index_bytes = encode_pack_index(new_index)
    new_id = hash_bytes(index_bytes)
    if new_id == pack_id:
        return False  # every located blob is live: nothing to gain
    data = b"".join(parts)
    lake.put(pack_key(new_id), data)
    lake.put(pack_index_key(new_id), index_bytes)
    moved = [BlobLocation(d, n, new_id, o) for d, o, n in new_index]
    index.move_blobs(catalog, pack_id, new_id, len(data), moved)
    return True


def iter_plan_lines(gc_plan: GcPlan) -> Iterator[str]:
    """The plan as lines of text, for logs."""
    for kind, (n, b) in gc_plan.by_kind().items():
        if n:
            yield f"{kind}: {n} objects, {b} bytes"
