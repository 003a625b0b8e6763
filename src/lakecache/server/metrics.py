"""Prometheus metrics: volumes, caches, fills and HTTP requests.

Each :class:`Metrics` has its own registry (no process-global state, so two
servers in one test process never mix their figures). Volume and cache gauges
are read from the catalog at scrape time, so they cover every agent of every
site: the volumes, and the caches summed per volume and state by the database
(:mod:`lakecache.catalog.cache_totals`), so a scrape costs the same at ten
caches or a hundred thousand. Fill bytes and durations are counted by the fills
this process runs.
Labels carry site, volume, state and route templates only: never a dataset
name (a scraper is not a dataset member) and never a raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lakecache.cache.service import ACTIVE, CacheService
from lakecache.catalog.cache_totals import CacheTotals, cache_totals
from lakecache.catalog.topology_tables import CACHE_STATES

if TYPE_CHECKING:
    from lakecache.cache.clock import Clock
    from lakecache.catalog.db import Catalog
    from lakecache.catalog.topology import CacheRecord
    from lakecache.data.hub import Hub
    from lakecache.data.progress import Progress
    from lakecache.server.views import Usage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FILL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.fill_bytes = Counter(
            "lakecache_cache_fill_bytes",
            "Bytes written into caches by fills (the server's agents and those reported to it)",
            ["site", "volume", "source"],
            registry=self.registry,
        )
        self.fill_duration = Histogram(
            "lakecache_cache_fill_duration_seconds",
            "Wall time of cache fills (the server's agents and those reported to it)",
            ["site", "volume", "outcome"],
            buckets=_FILL_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "lakecache_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "lakecache_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )

    def watch_catalog(self, snapshot: Callable[[], CatalogSnapshot]) -> None:
        """Add the catalog gauges; ``snapshot`` returns (volume usages, cache totals) at
        scrape time (see :func:`catalog_snapshot`)."""
        self.registry.register(_CatalogCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


#: What a scrape reads from the catalog: each volume's usage, and the caches' totals.
CatalogSnapshot = tuple[list["Usage"], list[CacheTotals]]


class _CatalogCollector(Collector):
    def __init__(self, snapshot: Callable[[], CatalogSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Any]:
        return []  # collected on demand only; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        usages, totals = self._snapshot()
        labels = ["site", "volume"]
        capacity = GaugeMetricFamily(
            "lakecache_volume_capacity_bytes", "Quota of a cache volume", labels=labels
        )
        committed = GaugeMetricFamily(
            "lakecache_volume_committed_bytes",
            "Bytes committed to caches on a volume (pending and filling count in full)",
            labels=labels,
        )
        free = GaugeMetricFamily(
            "lakecache_volume_free_bytes",
            "Bytes a new cache can still take: quota left, bounded by the filesystem's free space",
            labels=labels,
        )
        fs_free = GaugeMetricFamily(
            "lakecache_volume_filesystem_free_bytes",
            "Free bytes of the volume's filesystem",
            labels=labels,
        )
        saved = GaugeMetricFamily(
            "lakecache_volume_linked_bytes",
            "Bytes saved on a volume by hard links between caches",
            labels=labels,
        )
        for u in usages:
            key = [u.volume.site, u.volume.name]
            capacity.add_metric(key, u.volume.capacity)
            committed.add_metric(key, u.committed)
            free.add_metric(key, u.available)
            if u.free_fs is not None:  # None: the volume is not mounted here
                fs_free.add_metric(key, u.free_fs)
            saved.add_metric(key, u.linked_saved)
        by_state = {(t.site, t.volume, t.state): t for t in totals}
        states = GaugeMetricFamily(
            "lakecache_caches", "Caches by state", labels=["site", "volume", "state"]
        )
        state_bytes = GaugeMetricFamily(
            "lakecache_cache_bytes",
            "Bytes of the caches in each state",
            labels=["site", "volume", "state"],
        )
        in_flight = GaugeMetricFamily(
            "lakecache_cache_filling_done_bytes",
            "Bytes done so far by fills in progress",
            labels=labels,
        )
        for u in usages:
            site, vol = u.volume.site, u.volume.name
            for state in CACHE_STATES:
                t = by_state.get((site, vol, state))
                states.add_metric([site, vol, state], t.caches if t else 0)
                state_bytes.add_metric([site, vol, state], t.bytes if t else 0)
            filling = by_state.get((site, vol, "filling"))
            in_flight.add_metric([site, vol], filling.done if filling else 0)
        yield from (capacity, committed, free, fs_free, saved, states, state_bytes, in_flight)


class MeteredCacheService(CacheService):
    """A cache service that counts the bytes and time of the fills it runs."""

    def __init__(self, hub: Hub, metrics: Metrics, *, clock: Clock | None = None) -> None:
        super().__init__(hub, clock=clock)
        self.metrics = metrics

    def fill_claimed(
        self, cache_id: int, *, token: int, progress: Progress | None = None
    ) -> CacheRecord:
        rec = self.topology.get_cache(cache_id)
        started = time.monotonic()
        outcome = "failed"
        try:
            done = super().fill_claimed(cache_id, token=token, progress=progress)
            outcome = "ready"
            m = self.metrics
            m.fill_bytes.labels(done.site, done.volume, "fetched").inc(done.fetched_bytes)
            m.fill_bytes.labels(done.site, done.volume, "linked").inc(done.linked_bytes)
            return done
        finally:
            self.metrics.fill_duration.labels(rec.site, rec.volume, outcome).observe(
                time.monotonic() - started
            )


def catalog_snapshot(catalog: Catalog) -> CatalogSnapshot:
    """Each volume's usage and the caches' totals per volume and state, for one scrape.

    Two queries (volumes, then one ``GROUP BY`` over caches) and a filesystem
    look per volume mounted here; no cache row is read one by one.
    """
    from lakecache.catalog.topology import Topology
    from lakecache.server.views import Usage, filesystem_free

    totals = cache_totals(catalog)
    usages = []
    for volume in Topology(catalog).list_volumes():
        active = [
            t
            for t in totals
            if t.site == volume.site and t.volume == volume.name and t.state in ACTIVE
        ]
        usages.append(
            Usage(
                volume,
                committed=sum(t.occupied for t in active),
                free_fs=filesystem_free(volume),
                caches=sum(t.caches for t in active),
                linked_saved=sum(t.linked for t in active),
            )
        )
    return usages, totals
