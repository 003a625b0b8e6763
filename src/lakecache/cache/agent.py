"""The site agent: takes the fill, verify and evict work for one site's volumes.

It connects outward only (no listening port), to the catalog or, logged in, to
a lakecache server, so a site behind a firewall works. Fills run in a bounded
pool; everything else is quick.
Several agents for the same site are safe: claims are compare-and-set.

An agent outlives any error of one work item: a fill, a verify, an eviction,
a volume's space report that fails (an OSError, a stale NFS handle, a bug) is
logged and recorded on that cache where there is one (its state or report),
and the agent goes on to the next item and the next pass.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from lakecache.cache.service import CacheFillError, CacheService
from lakecache.catalog.leader import exclusive
from lakecache.catalog.topology import CacheRecord
from lakecache.errors import LakecacheError
from lakecache.oserrors import explain_os_error

log = logging.getLogger("lakecache.agent")


class SiteAgent:
    def __init__(
        self,
        service: CacheService,
        site: str,
        *,
        max_fills: int = 2,
        interval: float = 1.0,
        gc_every: float = 60.0,
        space_every: float = 60.0,
    ) -> None:
        self.service = service
        self.site = site
        self.max_fills = max_fills
        self.interval = interval
        self.gc_every = gc_every
        self._pool = ThreadPoolExecutor(max_fills, thread_name_prefix=f"agent-{site}")
        self._running: dict[int, Future[object]] = {}
        self._last_gc = 0.0
        self.space_every = space_every
        self._last_space = 0.0
        self._space_refused = False
        self.stop_event = threading.Event()
        #: This agent process's own name in the caches it claims (two agents of one
        #: site are two workers; the fence token tells their claims apart).
        self.worker = f"agent:{site}:{socket.gethostname()}:{os.getpid()}"

    def run_once(self) -> int:
        """One pass: start fills that are waiting, serve requests, run GC when due.

        Returns the number of fills started.
        """
        svc = self.service
        topo = svc.topology
        started = 0
        for cid in [c for c, f in self._running.items() if f.done()]:
            exc = self._running.pop(cid).exception()
            # A fill records its own failure on the row (state failed, with the
            # reason); anything else escaped that, and is at least logged here.
            if exc is not None and not isinstance(exc, CacheFillError):
                log.warning("fill of cache %s failed: %s", cid, describe(exc))
        now = svc.clock.now()
        for rec in topo.list_caches(site=self.site, states=("pending", "filling")):
            if len(self._running) >= self.max_fills or rec.id in self._running:
                continue
            if (
                rec.state == "filling"
                and rec.heartbeat_at
                and now - rec.heartbeat_at < svc.stale_after
            ):
                continue
            try:
                token = topo.claim_fill(rec.id, self.worker, now=now, stale_after=svc.stale_after)
            except Exception as exc:  # noqa: BLE001 - one cache's error must not stop the agent
                # e.g. through a server, no writer role on it; not claimed, so not ours to mark.
                log.warning("cannot fill %s: %s", rec.name, describe(exc))
                continue
            if token is not None:
                log.info("filling %s on %s", rec.name, rec.volume)
                self._running[rec.id] = self._pool.submit(svc.fill_claimed, rec.id, token=token)
                started += 1
        for rec in topo.list_caches(site=self.site, states=("ready", "failed")):
            if rec.request is None:
                continue
            try:
                if rec.request == "evict":
                    # Starting the eviction consumes the request in the same step (of
                    # several agents, one starts it); one that cannot start says why.
                    if not svc.evict(rec.id):
                        self._refused_eviction(rec.id)
                    continue
                if not topo.take_request(rec.id, rec.request):
                    continue  # another agent of this site took it
                if rec.request in ("verify", "repair") and rec.state == "ready":
                    svc.verify(rec.id, repair=rec.request == "repair")
            except Exception as exc:  # noqa: BLE001 - reported on the cache; the next one goes on
                self._report_failure(rec, rec.request, exc)
        # Evictions a killed or stalled worker left half done: every pass, not only at gc.
        try:
            svc.finish_stale_evictions(site=self.site)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("finishing evictions on site %s failed: %s", self.site, describe(exc))
        if time.monotonic() - self._last_gc >= self.gc_every:
            self._last_gc = time.monotonic()
            try:
                # Every agent of the site plans the same evictions: one at a time does.
                with exclusive(svc.hub.catalog, f"cache-gc:{self.site}") as held:
                    if held:
                        svc.gc(site=self.site)
            except Exception as exc:  # noqa: BLE001 - the next pass collects again
                log.warning("garbage collection on site %s failed: %s", self.site, describe(exc))
        if not self._space_refused and time.monotonic() - self._last_space >= self.space_every:
            self._last_space = time.monotonic()
            self.report_space()
        return started

    def report_space(self) -> int:
        """Tell the catalog (or server) what each mounted volume's filesystem holds.

        The server cannot see a filesystem it does not mount; this keeps its
        capacity bars and /metrics right for every site. Returns volumes reported.
        """
        topo = self.service.topology
        done = 0
        for v in topo.list_volumes(self.site):
            if not os.path.isdir(v.root):
                continue
            try:
                st = os.statvfs(v.root)
            except OSError as exc:  # e.g. a stale NFS handle: the other volumes still report
                log.warning("cannot read the space of volume %s: %s", v.name, describe(exc))
                continue
            free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            try:
                topo.report_volume_space(
                    v.name, free=free, total=total, now=self.service.clock.now()
                )
            except LakecacheError as exc:  # e.g. a writer's token: only org admins report
                log.warning("not reporting volume space (%s); no more tries", exc.message)
                self._space_refused = True
                return done
            done += 1
        return done

    def _refused_eviction(self, cache_id: int) -> None:
        """An asked eviction that could not start: if the cache still waits for it (a job
        leased it or someone pinned it since it was asked), drop the request and say why
        on the cache, rather than leave it looking as if its agent never came."""
        topo = self.service.topology
        rec = topo.get_cache(cache_id)
        if rec.request != "evict" or rec.state not in ("ready", "failed"):
            return  # another agent of this site is evicting it, or it is gone
        if not topo.take_request(cache_id, "evict"):
            return
        why = "it is pinned" if rec.pinned else f"it is in use by {rec.leases} job(s)"
        log.info("not evicting %s: %s", rec.name, why)
        topo.set_report(cache_id, f"evict not done: {why}; ask again when it is free")

    def _report_failure(self, rec: CacheRecord, work: str, exc: BaseException) -> None:
        """Log a failed work item and say so on its cache (``cache ls`` shows the report)."""
        reason = describe(exc)
        log.warning("%s of %s failed: %s", work, rec.name, reason)
        try:
            self.service.topology.set_report(rec.id, f"{work} failed: {reason}")
        except Exception as again:  # noqa: BLE001 - the log line above still says it
            log.warning("could not record that on %s: %s", rec.name, describe(again))

    def run_forever(self) -> None:
        """Loop until :attr:`stop_event` is set (the CLI sets it on SIGINT/SIGTERM).

        A pass that fails as a whole (the catalog or server unreachable) is
        logged and tried again after :attr:`interval`.
        """
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - an agent outlives one bad pass
                log.warning("agent pass failed: %s", describe(exc))
            self.stop_event.wait(self.interval)
        self.close()

    def wait_idle(self) -> None:
        for f in list(self._running.values()):
            try:
                f.result()
            except Exception:  # noqa: BLE001 - the failure is on the cache row
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def describe(exc: BaseException) -> str:
    """One line for a log or a cache's report: lakecache's message, or what the OS said."""
    if isinstance(exc, LakecacheError):
        return exc.message
    if isinstance(exc, OSError):
        return explain_os_error(exc)[0]
    return f"{type(exc).__name__}: {exc}"
