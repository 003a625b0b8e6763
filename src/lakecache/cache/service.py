"""Caches end to end: request, fill, use with a lease, verify, evict.

One :class:`CacheService` per process. It works the same whether it runs in
the CLI (filling in-process), in a site agent, or in the server's embedded
agent: all coordination goes through the catalog, so any number of processes
on any number of machines can ask for the same cache and exactly one fills it.

Fill, step by step:
1. claim the cache row (``pending``, or ``filling`` with a stale heartbeat,
   becomes ``filling`` by this worker): one filler, however many ask. The
   claim carries a fence token that every heartbeat, publish and failure
   presents; a filler that was paused past the stale time and taken over
   learns it (:class:`~lakecache.errors.TakenOverError`), stops, removes only
   its own staging folder, and never touches the published one;
2. make room: the eviction plan for the volume must fit the bytes that cannot
   be hard-linked, else fail at once naming what holds the space;
3. materialise into ``.lakecache/staging/<id>-<token>`` on the same volume:
   files already on the volume (in any other ready cache) are hard-linked, the
   rest fetched with parallel ranged GETs and verified; the staging folder of
   an earlier claim (a killed or stalled fill) is taken over by renaming it to
   this claim's, and resumed (its verified files are kept): never shared;
4. publish with one rename to ``caches/<dataset>/<commit>`` (a rename that
   fails if a folder is already published there), then mark ready.

Eviction is fenced the same way: claiming it raises the token, moving the
files aside is checked against it, and an eviction left half done (its worker
killed or stalled past the stale time) is taken over and finished by the next
gc, agent pass or :meth:`CacheService.ensure_ready` that finds it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lakecache.cache.clock import Clock, SystemClock
from lakecache.cache.plan import CacheView, EvictionPlan, plan_eviction
from lakecache.cache.presence import no_agent_note, sites_with_agent
from lakecache.cache.seal import (
    LinkSource,
    opened,
    seal,
    sealed_at_ns,
    unseal,
    usable_link_source,
)
from lakecache.cache.volume import VolumeLayout, volume_free_bytes
from lakecache.catalog.topology import CacheRecord, TopologyStore, VolumeRecord
from lakecache.data.index import IndexedEntries, ManifestIndex
from lakecache.data.progress import NullProgress, Progress
from lakecache.durable import sync_filesystem
from lakecache.errors import (
    LakecacheError,
    LeaseLostError,
    NotFoundError,
    TakenOverError,
    UserError,
)
from lakecache.lake.objects import ManifestEntry, normalize_folder
from lakecache.units import format_size

if TYPE_CHECKING:
    from lakecache.data.hub import Hub
    from lakecache.lake import Lake

log = logging.getLogger("lakecache.cache")

ACTIVE = ("pending", "filling", "ready", "evicting")


class CacheFillError(LakecacheError):
    """A fill failed; the cache is marked failed with the reason."""


@dataclass
class VerifyReport:
    cache_id: int
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.modified


@dataclass(frozen=True)
class VolumeUsage:
    volume: VolumeRecord
    committed: int  # bytes held by caches (pending/filling count their full size)
    #: Bytes free on the filesystem; None where this machine does not mount the volume.
    free_fs: int | None
    caches: int
    linked_saved: int

    @property
    def available(self) -> int:
        left = max(0, self.volume.capacity - self.committed)
        return left if self.free_fs is None else min(left, self.free_fs)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class CacheService:
    """Request, fill, use, verify and evict caches. Thread-safe."""

    def __init__(
        self,
        hub: Hub,
        *,
        clock: Clock | None = None,
        lease_ttl: timedelta = timedelta(seconds=60),
        stale_after: timedelta | None = None,
        heartbeat_every: float = 5.0,
        poll_every: float = 0.2,
        max_poll_every: float = 2.0,
        no_agent_warning_after: float = 3.0,
    ) -> None:
        self.hub = hub
        self.clock = clock or SystemClock()
        self.lease_ttl = lease_ttl
        #: A fill without a heartbeat (an eviction without progress) for this long is
        #: taken over; from the settings (``fill_stale_after``) unless given.
        self.stale_after = stale_after or timedelta(seconds=hub.settings.fill_stale_after)
        self.heartbeat_every = heartbeat_every
        #: Waiting for another worker polls every ``poll_every`` s at first, backing
        #: off to ``max_poll_every``.
        self.poll_every = poll_every
        self.max_poll_every = max(max_poll_every, poll_every)
        #: Waiting this long on a cache nobody fills says whether its site has an agent.
        self.no_agent_warning_after = no_agent_warning_after
        self._topology: TopologyStore | None = None

    @property
    def remote(self) -> bool:
        """True when this service works through a lakecache server (``lakecache login``)."""
        return self.hub.server is not None

    @property
    def topology(self) -> TopologyStore:
        """The catalog's topology, or the server's when working through one."""
        if self._topology is None:
            server = self.hub.server
            if server is not None:
                from lakecache.client.topology import RemoteTopology

                self._topology = RemoteTopology(server)
            else:
                from lakecache.catalog.topology import Topology

                self._topology = Topology(self.hub.catalog)
        return self._topology

    # -- requesting --------------------------------------------------------------------

    def pick_volume(self, site: str | None, volume: str | None) -> VolumeRecord:
        """The volume named, or the site's volume with the most room."""
        topo = self.topology
        if volume:
            v = topo.get_volume(volume)
            if site and v.site != site:
                raise UserError(f"volume {volume!r} is at site {v.site!r}, not {site!r}")
            return v
        if not site:
            raise UserError(
                "say where to cache: a site or a volume",
                hint='Pass site="NAME" or volume="NAME" (the CLI: --site or --volume).',
            )
        vols = topo.list_volumes(site)
        if not vols:
            topo.get_site(site)
            raise NotFoundError(
                f"site {site!r} has no cache volume",
                hint=f"Add one with `lakecache volume add NAME --site {site} "
                "--root PATH --capacity 500GB`.",
            )
        return max(vols, key=lambda v: self.usage(v).available)

    def request(
        self,
        dataset: str,
        ref: str | None,
        *,
        site: str | None = None,
        volume: str | None = None,
        path: str = "",
    ) -> CacheRecord:
        """Ask for a cache of ``dataset@ref`` (idempotent); it is filled by whoever claims it.

        A folder (``path``) of a commit that the volume already holds whole, or is
        filling whole, is that whole cache: the folder is in it. Through a server,
        the server picks the volume and sizes the cache (the caller needs the
        writer role on the dataset).
        """
        if self.remote:
            from lakecache.client.topology import RemoteTopology

            topo = self.topology
            assert isinstance(topo, RemoteTopology)
            return topo.request(dataset, ref, site=site, volume=volume, path=path)
        commit_id = self.hub.catalog.resolve(dataset, ref)
        commit = self.hub.catalog.get_commit(dataset, commit_id)
        sub = normalize_folder(path)
        v = self.pick_volume(site, volume)
        files, nbytes = commit.file_count, commit.bytes
        if sub:
            whole = self._whole_cache(dataset, commit_id, [v.name])
            if whole is not None:
                return whole
            with self._index(commit.manifest) as idx:
                es = list(idx.entries([sub]))
            files, nbytes = len(es), sum(e.size for e in es)
        rec, _ = self.topology.request_cache(
            dataset, commit_id, v.name, sub, files=files, nbytes=nbytes, now=self.clock.now()
        )
        return rec

    def _index(self, manifest: str) -> ManifestIndex:
        return ManifestIndex.open(self.hub.settings.state_dir, manifest, lambda: self.hub.lake)

    def cache_path(self, rec: CacheRecord) -> Path:
        v = self.topology.get_volume(rec.volume)
        return VolumeLayout(Path(v.root)).cache_dir(rec.dataset, rec.commit_id, rec.subpath)

    # -- filling -----------------------------------------------------------------------

    def ensure_ready(
        self, rec: CacheRecord, *, progress: Progress | None = None, timeout: float | None = None
    ) -> CacheRecord:
        """Return the cache once ready: fill it here if nobody is, else wait for the filler.

        Waiting polls with backoff (``poll_every`` up to ``max_poll_every``). A
        live filler is waited for as long as it heart-beats (a dead one is taken
        over after ``stale_after``); ``timeout`` bounds the whole wait. A cache
        left ``evicting`` is finished here when this machine mounts its volume
        and the eviction is stale, else waited for at most four stale times
        (the site's agent finishes it) before CacheFillError says so.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_every
        evicting_since: float | None = None
        waiting_since = time.monotonic()
        told_no_agent = False
        while True:
            rec = self.topology.get_cache(rec.id, self.clock.now())
            if rec.state == "ready":
                return rec
            if rec.state == "failed":
                raise CacheFillError(
                    f"cache {rec.name} on {rec.volume} failed: {rec.error}",
                    hint="Fix the cause, then ask again: `lakecache cache add "
                    f"{rec.dataset}@{rec.commit_id[:12]} --volume {rec.volume}`.",
                )
            if rec.state == "evicted":
                rec, _ = self.topology.request_cache(
                    rec.dataset,
                    rec.commit_id,
                    rec.volume,
                    rec.subpath,
                    files=rec.files,
                    nbytes=rec.bytes,
                    now=self.clock.now(),
                )
                evicting_since = None
                continue
            if rec.state == "evicting":
                if evicting_since is None:
                    evicting_since = time.monotonic()
                if os.path.isdir(self.topology.get_volume(rec.volume).root) and self.evict(rec.id):
                    continue  # a stale eviction, finished here; now ask again
                if time.monotonic() - evicting_since > 4 * self.stale_after.total_seconds():
                    raise CacheFillError(
                        f"cache {rec.name} on {rec.volume} is stuck evicting",
                        hint=f"The agent of site {rec.site!r} finishes it (`lakecache agent "
                        f"--site {rec.site}`), or run `lakecache cache gc` where the volume "
                        "is mounted; then ask again.",
                    )
            else:
                token = self.topology.claim_fill(
                    rec.id, _worker_id(), now=self.clock.now(), stale_after=self.stale_after
                )
                if token is not None:
                    try:
                        return self.fill_claimed(rec.id, token=token, progress=progress)
                    except TakenOverError as exc:
                        # This fill stalled and a newer worker has it now: wait for that one.
                        log.warning("%s", exc.message)
                        delay = self.poll_every
                        continue
                if (
                    rec.state == "pending"
                    and not told_no_agent
                    and time.monotonic() - waiting_since >= self.no_agent_warning_after
                ):
                    # Nobody here may fill it: say so if nobody at the site will either,
                    # rather than wait in silence.
                    told_no_agent = True
                    if rec.site not in sites_with_agent(
                        self.topology.list_volumes(rec.site), self.clock.now()
                    ):
                        log.warning("waiting for cache %s: %s", rec.name, no_agent_note(rec.site))
            if deadline is not None and time.monotonic() > deadline:
                raise CacheFillError(
                    f"cache {rec.name} is still {rec.state} after {timeout} s",
                    hint="`lakecache cache ls` shows who fills it and when it last said so; "
                    "wait longer, or ask again later.",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, self.max_poll_every)

    def fill_claimed(
        self, cache_id: int, *, token: int, progress: Progress | None = None
    ) -> CacheRecord:
        """Fill a cache this worker has claimed with fence ``token``.

        On failure the row says why (state failed). Raises TakenOverError if a
        newer worker took the fill over meanwhile: this one then has removed its
        own staging folder and left the published one alone.
        """
        topo = self.topology
        rec = topo.get_cache(cache_id)
        v = topo.get_volume(rec.volume)
        layout = VolumeLayout(Path(v.root))
        final = layout.cache_dir(rec.dataset, rec.commit_id, rec.subpath)
        staging = layout.staging_dir(rec.id, token)
        stop = threading.Event()
        taken_over = threading.Event()
        done = {"bytes": 0}
        beat = threading.Thread(
            target=self._heartbeat, args=(rec.id, token, stop, taken_over, done), daemon=True
        )
        beat.start()
        try:
            if final.is_dir():
                # Published by an earlier claim whose filler died (or stalled) before
                # marking it ready: a publish is always whole. Its leftovers go.
                for old in layout.staging_dirs(rec.id, older_than=token):
                    layout.remove_tree(old)
                seal(layout, rec.id, final)
                stats_linked = stats_fetched = 0
            else:
                stats_linked, stats_fetched = self._fill_into(
                    rec, v, layout, staging, final, progress, done, token, taken_over
                )
        except BaseException as exc:
            stop.set()
            beat.join()
            try:
                reason = self._fail(rec, layout, staging, exc, token)
            except TakenOverError as taken:
                if taken is exc:
                    raise
                raise taken from exc  # it failed after a newer worker took it over
            if isinstance(exc, Exception) and not isinstance(exc, (CacheFillError, TakenOverError)):
                raise CacheFillError(
                    f"fill of {rec.name} on {v.name} failed: {reason}",
                    hint="`lakecache cache ls` shows the reason; fix it and ask again "
                    "(`lakecache cache add`): files already verified are kept.",
                ) from exc
            raise
        stop.set()
        beat.join()
        now = self.clock.now()
        # Fenced: if this worker stalled after publishing and was taken over, the
        # newer one finds the published folder and marks it ready itself.
        topo.complete_fill(
            rec.id,
            token=token,
            linked_bytes=stats_linked,
            fetched_bytes=stats_fetched,
            now=now,
        )
        return topo.get_cache(rec.id, now)

    def _fill_into(
        self,
        rec: CacheRecord,
        v: VolumeRecord,
        layout: VolumeLayout,
        staging: Path,
        final: Path,
        progress: Progress | None,
        done: dict[str, int],
        token: int,
        taken_over: threading.Event,
    ) -> tuple[int, int]:
        # The lake's client starts in a thread (botocore's import and set-up) while the
        # fill plans and links; only the fetches wait for it.
        self.hub.open_lake_in_background()
        commit = self.hub.catalog.get_commit(rec.dataset, rec.commit_id)
        with self._index(commit.manifest) as idx:
            # Read from the index batch by batch, never listed whole (flat memory in files).
            entries = idx.sequence(rec.subpath)
            try:
                if rec.subpath and not entries:
                    list(idx.entries([rec.subpath]))  # raises NotFoundError, naming the path
                links = self._link_sources(rec, v, layout, idx)
            except BaseException:
                entries.close()
                raise
        with entries:
            return self._fill_entries(
                rec, v, layout, staging, final, progress, done, token, taken_over, entries, links
            )

    def _fill_entries(
        self,
        rec: CacheRecord,
        v: VolumeRecord,
        layout: VolumeLayout,
        staging: Path,
        final: Path,
        progress: Progress | None,
        done: dict[str, int],
        token: int,
        taken_over: threading.Event,
        entries: IndexedEntries,
        links: dict[str, LinkSource],
    ) -> tuple[int, int]:
        from lakecache.data.materialize import materialize

        server = self.hub.server
        if server is not None:
            # Reading other caches' manifests named their datasets to the server last;
            # the fetches below are for this one.
            server.touch(rec.dataset)
        _take_over_staging(layout, rec.id, token, staging)
        need = sum(n for d, n in entries.digest_sizes() if d not in links)
        need -= _tree_bytes(staging)
        self._make_room(rec, v, need)
        resuming = staging.exists()
        _clean_temp_files(staging)
        tracker = _Tracker(progress or NullProgress(), done, taken_over, rec.id, token)

        def link_source(e: ManifestEntry) -> str | None:
            # One lstat per linked file (the seal check; a tampered source is hashed
            # and refused, see cache/seal.py); a failed check downloads the file.
            src = links.get(e.digest)
            return src.path if src is not None and usable_link_source(src, e) else None

        s = self.hub.settings
        stats = materialize(
            # materialize takes len(), iteration and slices: what IndexedEntries reads lazily.
            cast("list[ManifestEntry]", entries),
            staging,
            lake=cast("Lake", _HubLake(self.hub)),
            catalog=self.hub.catalog,
            workers=s.workers,
            chunk_size=s.part_size,
            progress=tracker,
            skip_existing=resuming,
            link_source=link_source,
            linkable=lambda e: e.digest in links,
            # Resumed staging may hold a file an earlier filler still has open (it
            # was paused, not killed): write each file anew under a temp name, so
            # its late writes land in an unlinked inode, never in this fill's file.
            private_dest=not resuming,
            read_only=True,
        )
        # Every file the fill wrote is on disk before the name that publishes them.
        sync_filesystem(staging)
        if taken_over.is_set() or not self.topology.holds_claim(rec.id, token):
            raise _taken_over(rec, token)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # rename(2), never a delete first: onto a published (non-empty) folder
            # it fails, so a filler that stalls right here cannot replace one.
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise
            # An earlier claim of this fill published whole before it was taken over.
            layout.remove_tree(staging)
        # Read-only, and the rename flushed (cache/seal.py); the folders are the
        # manifest's, so sealing walks no file.
        seal(layout, rec.id, final, entries.folders())
        return stats.linked_bytes, stats.fetched_bytes

    def _link_sources(
        self, rec: CacheRecord, v: VolumeRecord, layout: VolumeLayout, index: ManifestIndex
    ) -> dict[str, LinkSource]:
        """For each digest already on this volume (in another ready cache), one file to link."""
        out: dict[str, LinkSource] = {}
        others = [
            c for c in self.topology.list_caches(volume=v.name, states=("ready",)) if c.id != rec.id
        ]
        if not others:
            return out
        # The same dataset's newest caches first: a new commit shares most with those.
        # The first is joined whole; the next are asked only for the blobs still
        # without a source (one index probe each), when those are few.
        others.sort(key=lambda c: (c.dataset != rec.dataset, -c.id))
        missing: set[str] | None = None  # known once a cache has been joined
        for i, other in enumerate(others):
            if missing is not None and not missing:
                break
            base = str(layout.cache_dir(other.dataset, other.commit_id, other.subpath)) + "/"
            try:
                # Through a server, a dataset this user cannot read is skipped.
                commit = self.hub.catalog.get_commit(other.dataset, other.commit_id)
                with self._index(commit.manifest) as idx:
                    # A partial cache holds only the paths under its sub-path.
                    if missing is not None and len(missing) <= max(1000, len(out) // 4):
                        found = idx.paths_of(missing, other.subpath)
                    else:
                        found = index.shared_paths(idx, other.subpath)
            except LakecacheError:
                continue
            sealed_ns = sealed_at_ns(layout, other.id)
            # Caches keep the commit's full paths. The first cache that holds a digest wins.
            for d, p in found.items():
                if d not in out:
                    out[d] = LinkSource(base + p, sealed_ns)
            if missing is None and i + 1 < len(others):
                missing = index.digests() - out.keys()
            elif missing is not None:
                missing -= found.keys()
        return out

    def _make_room(self, rec: CacheRecord, v: VolumeRecord, need: int) -> None:
        """Evict what must go for ``need`` more bytes on ``v``, and say what went.

        The cache being filled is never counted as holding the room it needs.
        Which caches were evicted, and the bytes freed, are logged and kept as
        the new cache's report (shown by `cache ls` and the dashboard).
        """
        if need > v.capacity:
            raise CacheFillError(
                f"{rec.name} needs {format_size(need)} but volume {v.name!r} holds "
                f"{format_size(v.capacity)} in all: it cannot fit even when empty",
                hint=f"Raise the capacity (`lakecache volume set {v.name} --capacity SIZE`), "
                "cache a folder of the commit instead, or use a larger volume.",
            )
        usage = self.usage(v, exclude=rec.id)
        if need <= usage.available:
            return
        plan = self.plan(v, need_bytes=need, available=usage.available, exclude=rec.id)
        if not plan.fits:
            raise CacheFillError(
                f"no room on volume {v.name!r} for {rec.name}: {plan.explain()}",
                hint="Unpin or evict caches (`lakecache cache ls`, `cache unpin`, "
                f"`cache evict`), or raise the capacity (`lakecache volume set {v.name} "
                "--capacity SIZE`).",
            )
        evicted = set(self.execute(plan))
        gone = [e for e in plan.evictions if e.cache_id in evicted]
        if gone:
            freed = sum(e.size for e in gone)
            note = (
                f"made room on {v.name}: evicted {len(gone)} cache(s), {format_size(freed)}: "
                + ", ".join(f"{e.name} ({format_size(e.size)})" for e in gone)
            )
            log.warning("%s for %s", note, rec.name)
            self.topology.set_report(rec.id, note[:2000])

    def _heartbeat(
        self,
        cache_id: int,
        token: int,
        stop: threading.Event,
        taken_over: threading.Event,
        done: dict[str, int],
    ) -> None:
        while not stop.wait(self.heartbeat_every):
            try:
                self.topology.beat_fill(
                    cache_id, token=token, done_bytes=done["bytes"], now=self.clock.now()
                )
            except TakenOverError as exc:
                # The fill stops at its next step (see _Tracker) and cleans up.
                log.warning("%s; stopping this fill", exc.message)
                taken_over.set()
                return
            except LakecacheError as exc:
                # The catalog or server blinked: the next beat tries again, well
                # before the fill goes stale (three beats fit in the stale time).
                log.info("heartbeat of cache %s failed: %s", cache_id, exc.message)

    def _fail(
        self,
        rec: CacheRecord,
        layout: VolumeLayout,
        staging: Path,
        exc: BaseException,
        token: int,
    ) -> str:
        if isinstance(exc, TakenOverError):
            # A newer worker has the fill: remove only what this claim wrote (the
            # newer one renamed it away already if it took it over) and report nothing.
            layout.remove_tree(staging)
            raise exc
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            reason = f"volume full while filling ({exc.strerror}); staging removed"
            layout.remove_tree(staging)
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted; ask again to resume"
        elif isinstance(exc, LakecacheError):
            reason = exc.message
        else:
            reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, CacheFillError):
            layout.remove_tree(staging)
        try:
            self.topology.fail_fill(rec.id, token=token, reason=reason, now=self.clock.now())
        except TakenOverError:
            layout.remove_tree(staging)
            log.warning("fill of %s failed here after it was taken over: %s", rec.name, reason)
            raise
        return reason

    # -- using -------------------------------------------------------------------------

    @contextmanager
    def use(
        self,
        dataset: str,
        ref: str | None,
        *,
        site: str | None = None,
        volume: str | None = None,
        path: str = "",
        holder: str | None = None,
        progress: Progress | None = None,
    ) -> Iterator[Path]:
        """The local folder of a ready cache, held by a lease while the block runs.

        Fills the cache first if needed (or waits for whoever fills it). The lease
        is renewed by a heartbeat thread; if this process dies the lease lapses
        after ``lease_ttl`` and the cache can be evicted again.
        """
        rec = self._find_or_request(dataset, ref, site=site, volume=volume, path=path)
        v = self.topology.get_volume(rec.volume)
        if not os.path.isdir(v.root):
            raise UserError(
                f"this machine does not mount volume {v.name!r} of site {v.site!r} "
                f"(no folder at {v.root})",
                hint="Run where the site's volume is mounted (its agent fills the cache), "
                "or read straight from the lake with cached=False.",
            )
        while True:
            if rec.state != "ready":
                rec = self.ensure_ready(rec, progress=progress)
            now = self.clock.now()
            try:
                lease = self.topology.add_lease(
                    rec.id, holder or _worker_id(), now=now, expires_at=now + self.lease_ttl
                )
                break
            except UserError:
                rec = self.topology.get_cache(rec.id)  # evicted in between: ask again
        stop = threading.Event()
        lost: list[LeaseLostError] = []
        renew = threading.Thread(target=self._renew, args=(lease, stop, lost), daemon=True)
        renew.start()
        body_failed = False
        try:
            yield self.cache_path(rec)
        except BaseException:
            body_failed = True
            raise
        finally:
            stop.set()
            renew.join()
            try:
                self.topology.release_lease(lease, now=self.clock.now())
            except LeaseLostError as exc:
                lost.append(exc)
            if lost:
                # Never silent: the block read files that may have been evicted under it.
                if not body_failed:
                    raise lost[0]
                log.error("while the block failed: %s", lost[0].message)

    def _find_or_request(
        self, dataset: str, ref: str | None, *, site: str | None, volume: str | None, path: str
    ) -> CacheRecord:
        # Warm path: one ref lookup and one cache lookup, no manifest read.
        commit_id = self.hub.catalog.resolve(dataset, ref)
        sub = normalize_folder(path)
        topo = self.topology
        candidates = (
            [volume] if volume else [v.name for v in topo.list_volumes(site)] if site else []
        )
        if sub:
            whole = self._whole_cache(dataset, commit_id, candidates)
            if whole is not None:
                return whole
        for vname in candidates:
            try:
                rec = topo.find_cache(dataset, commit_id, vname, sub)
            except NotFoundError:
                continue
            if rec.state in ("ready", "filling", "pending"):
                return rec
        return self.request(dataset, commit_id, site=site, volume=volume, path=sub)

    def _whole_cache(self, dataset: str, commit_id: str, volumes: list[str]) -> CacheRecord | None:
        """A cache of the whole commit on one of ``volumes`` that is, or will be, ready."""
        for vname in volumes:
            try:
                rec = self.topology.find_cache(dataset, commit_id, vname, "")
            except NotFoundError:
                continue
            if rec.state in ("ready", "filling", "pending"):
                return rec
        return None

    def _renew(self, lease: int, stop: threading.Event, lost: list[LeaseLostError]) -> None:
        every = max(self.lease_ttl.total_seconds() / 3, 0.05)
        while not stop.wait(every):
            now = self.clock.now()
            try:
                self.topology.renew_lease(lease, now=now, expires_at=now + self.lease_ttl)
            except LeaseLostError as exc:
                log.error("%s", exc.message)
                lost.append(exc)  # raised to the holder when its block ends
                return
            except LakecacheError as exc:
                # The catalog or server blinked: two more tries fit in the lease's TTL.
                log.info("renewing lease %s failed: %s", lease, exc.message)

    # -- accounting, eviction ----------------------------------------------------------

    def usage(self, v: VolumeRecord, *, exclude: int | None = None) -> VolumeUsage:
        """What volume ``v`` holds, without cache ``exclude``; free space if mounted here."""
        topo = self.topology
        free = volume_free_bytes(v.root)
        if self.remote:
            from lakecache.client.topology import RemoteTopology

            # The server counts every dataset's caches; this user may see only some.
            assert isinstance(topo, RemoteTopology)
            f = topo.volume_figures(v.name)
            committed, count, saved = f.committed, f.caches, f.linked_saved
            if exclude is not None:
                ex = topo.get_cache(exclude)
                if ex.volume == v.name and ex.state in ACTIVE:
                    committed, count = committed - ex.occupied, count - 1
                    saved -= ex.linked_bytes
            return VolumeUsage(
                v, max(committed, 0), free if free is not None else f.free_fs, count, saved
            )
        caches = [c for c in topo.list_caches(volume=v.name, states=ACTIVE) if c.id != exclude]
        committed = sum(c.occupied for c in caches)
        saved = sum(c.linked_bytes for c in caches)
        return VolumeUsage(v, committed, free, len(caches), saved)

    def plan(
        self,
        v: VolumeRecord,
        *,
        need_bytes: int = 0,
        available: int | None = None,
        exclude: int | None = None,
    ) -> EvictionPlan:
        """What eviction would do on volume ``v`` now (pure planning over a snapshot).

        ``exclude`` is the cache the room is for: it neither goes nor holds room.
        """
        now = self.clock.now()
        caches = self.topology.list_caches(volume=v.name, states=ACTIVE + ("failed",), now=now)
        views = [
            CacheView(c.id, c.name, c.state, c.occupied, c.last_used_at, c.pinned, c.leases)
            for c in caches
            if c.state != "failed" and c.id != exclude
        ]
        if available is None:
            available = self.usage(v).available
        return plan_eviction(views, now=now, ttl=v.ttl, available=available, need_bytes=need_bytes)

    def execute(self, plan: EvictionPlan) -> list[int]:
        """Evict what the plan says; a cache leased or pinned since the plan was made is kept."""
        done = []
        for e in plan.evictions:
            if self.evict(e.cache_id):
                done.append(e.cache_id)
        return done

    def evict(self, cache_id: int, *, force_unpin: bool = False) -> bool:
        """Remove a cache's files. Returns False if a lease or a pin holds it, or
        another worker is evicting it.

        Also finishes an eviction left ``evicting`` for longer than ``stale_after``
        (its worker killed or stalled). Fenced: a worker that stalls here and is
        taken over touches no newer claim's staging, and puts back a published
        folder it moved aside after the cache became ready again.
        """
        topo = self.topology
        now = self.clock.now()
        if force_unpin:
            topo.set_pinned(cache_id, False, now=now)
        token = topo.start_eviction(
            cache_id, now=now, worker=_worker_id(), stale_after=self.stale_after
        )
        if token is None:
            return False
        rec = topo.get_cache(cache_id)
        v = topo.get_volume(rec.volume)
        layout = VolumeLayout(Path(v.root))
        final = layout.cache_dir(rec.dataset, rec.commit_id, rec.subpath)
        trash = layout.trash_dir(rec.id)
        moved = False
        if topo.holds_claim(cache_id, token) and final.exists():
            trash.parent.mkdir(parents=True, exist_ok=True)
            try:
                unseal(layout, rec.id, final)  # a sealed folder cannot be moved
                os.replace(final, trash)  # gone for readers in one step
                moved = True
            except FileNotFoundError:
                pass  # a worker that took this eviction over moved it first
        # Staging folders are named by claim: a newer fill's is never touched here.
        for staging in layout.staging_dirs(rec.id, older_than=token):
            layout.remove_tree(staging)
        try:
            topo.finish_eviction(cache_id, token=token, now=self.clock.now())
        except TakenOverError as exc:
            log.warning("%s", exc.message)
            if moved:
                self._undo_stale_move(cache_id, layout, final, trash)
            return False
        layout.remove_tree(trash)
        return True

    def _undo_stale_move(
        self, cache_id: int, layout: VolumeLayout, final: Path, trash: Path
    ) -> None:
        """This evictor stalled between its check and its move, and was taken over: if
        the cache is ready again, what it moved is the newer publish; put it back."""
        if self.topology.get_cache(cache_id).state == "ready" and not final.exists():
            os.rename(trash, final)
            seal(layout, cache_id, final)
            log.warning("put back %s: this eviction had been taken over", final)
        else:
            layout.remove_tree(trash)

    def gc(
        self, *, dry_run: bool = False, site: str | None = None
    ) -> list[tuple[VolumeRecord, EvictionPlan]]:
        """Evict caches past their TTL on every volume (of ``site``) this machine mounts.

        Returns the plans. A volume mounted elsewhere is its site agent's to
        collect: marking its caches evicted from here would leave their files.
        """
        out = []
        for v in self.topology.list_volumes(site):
            if not os.path.isdir(v.root):
                continue
            if not dry_run:
                self.finish_stale_evictions(volume=v.name)
            plan = self.plan(v)
            if not dry_run:
                self.execute(plan)
            out.append((v, plan))
        return out

    def finish_stale_evictions(
        self, *, site: str | None = None, volume: str | None = None
    ) -> list[int]:
        """Finish the evictions (of ``site`` or ``volume``, on volumes this machine
        mounts) that a killed or stalled worker left ``evicting`` for longer than
        ``stale_after``; returns their cache ids. One listing when there are none."""
        now = self.clock.now()
        done = []
        for c in self.topology.list_caches(site=site, volume=volume, states=("evicting",)):
            if now - c.updated_at <= self.stale_after:
                continue
            if os.path.isdir(self.topology.get_volume(c.volume).root) and self.evict(c.id):
                done.append(c.id)
        return done

    # -- verify ------------------------------------------------------------------------

    def verify(self, cache_id: int, *, repair: bool = False) -> VerifyReport:
        """Check every file of a ready cache against its digest; ``repair`` re-fetches bad ones."""
        from lakecache.data.materialize import file_matches, materialize

        rec = self.topology.get_cache(cache_id)
        if rec.state != "ready":
            raise UserError(
                f"cache {rec.name} is {rec.state}, not ready",
                hint="Only ready caches can be verified.",
            )
        root = self.cache_path(rec)
        commit = self.hub.catalog.get_commit(rec.dataset, rec.commit_id)
        with self._index(commit.manifest) as idx:
            entries = list(idx.entries([rec.subpath] if rec.subpath else None))
        report = VerifyReport(cache_id)
        bad: list[ManifestEntry] = []
        for e in entries:
            p = root / e.path
            report.checked += 1
            if not os.path.lexists(p):
                report.missing.append(e.path)
                bad.append(e)
            elif not file_matches(str(p), e):
                report.modified.append(e.path)
                bad.append(e)
        if repair and bad:
            s = self.hub.settings
            layout = VolumeLayout(Path(self.topology.get_volume(rec.volume).root))
            with opened(layout, rec.id, root, (e.path for e in bad)):
                materialize(
                    bad,
                    root,
                    lake=self.hub.lake,
                    catalog=self.hub.catalog,
                    workers=s.workers,
                    skip_existing=False,
                    read_only=True,
                    durable=True,
                )
            report.repaired = len(bad)
        self.topology.set_report(
            cache_id,
            f"checked {report.checked}, missing {len(report.missing)}, "
            f"modified {len(report.modified)}, repaired {report.repaired}",
        )
        return report


class _Tracker:
    """Passes progress on, keeps the byte count for the fill's heartbeat, and stops
    the fill at its next step once the heartbeat learnt it was taken over."""

    def __init__(
        self,
        inner: Progress,
        done: dict[str, int],
        taken_over: threading.Event,
        cache_id: int,
        token: int,
    ) -> None:
        self.inner, self.done = inner, done
        self.taken_over, self.cache_id, self.token = taken_over, cache_id, token

    def begin(self, label: str, total_files: int, total_bytes: int) -> None:
        self.inner.begin("fill", total_files, total_bytes)

    def advance(self, files: int, nbytes: int) -> None:
        if self.taken_over.is_set():
            raise TakenOverError(
                f"the fill of cache {self.cache_id} (token {self.token}) was taken over "
                "by a newer worker"
            )
        self.done["bytes"] += nbytes
        self.inner.advance(files, nbytes)

    def end(self) -> None:
        self.inner.end()


class _HubLake:
    """The hub's lake, looked up at its first use: it may still be opening in a thread."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hub.lake, name)


def _taken_over(rec: CacheRecord, token: int) -> TakenOverError:
    return TakenOverError(
        f"the fill of {rec.name} (token {token}) was taken over by a newer worker; not publishing"
    )


def _take_over_staging(layout: VolumeLayout, cache_id: int, token: int, staging: Path) -> None:
    """Make the newest earlier claim's staging folder this claim's own, by one rename.

    Taken over, not shared: the earlier filler, if it is only paused, finds its
    folder gone when it wakes up (and its heartbeat tells it to stop), so no
    file is ever written by two fillers. Older leftovers are removed.
    """
    for i, old in enumerate(layout.staging_dirs(cache_id, older_than=token)):
        if i == 0 and not staging.exists():
            try:
                os.rename(old, staging)
                continue
            except FileNotFoundError:
                pass  # removed meanwhile (an eviction): start afresh
        layout.remove_tree(old)


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _clean_temp_files(staging: Path) -> None:
    """Remove the temp files of a killed fill; its finished files stay (they are verified again)."""
    if not staging.exists():
        return
    for dirpath, _, files in os.walk(staging):
        for f in files:
            if ".lakecache-tmp-" in f:
                os.unlink(os.path.join(dirpath, f))
