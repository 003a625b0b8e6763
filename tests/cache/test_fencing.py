"""Fencing: a filler or evictor that stalls and is taken over never undoes a newer one.

The fill tests pause a real filler process with SIGSTOP past the stale time and
resume it with SIGCONT while a second real filler has taken over; each runs
on SQLite and on a real PostgreSQL catalog.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import tree

from lakecache.cache.agent import SiteAgent
from lakecache.cache.clock import ManualClock
from lakecache.cache.service import CacheFillError, CacheService
from lakecache.cache.volume import VolumeLayout
from lakecache.catalog.topology import Topology
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import LeaseLostError, TakenOverError

STALE = 1.0  # seconds without a heartbeat before a fill is taken over, in these tests

_FILLER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import lakecache.data.materialize as m
    from lakecache.cache.service import CacheService
    from lakecache.data.hub import Hub
    from lakecache.errors import TakenOverError
    from lakecache.settings import Settings
    m.RANGE_MAX = 64 * 1024
    cfg = json.loads(sys.argv[1])
    hub = Hub(Settings(home=Path(cfg["home"]), catalog_url=cfg["catalog_url"], workers=2,
                       fill_stale_after=cfg["stale"]))
    lake = hub.lake
    real_get = lake.get
    def slow_get(key, start=0, length=None):
        time.sleep(0.25)  # slow enough for the test to pause us midway
        return real_get(key, start, length)
    lake.get = slow_get
    real_get_into = lake.get_into
    def slow_get_into(key, start, buf):
        time.sleep(0.25)
        real_get_into(key, start, buf)
    lake.get_into = slow_get_into
    svc = CacheService(hub, heartbeat_every=0.1, poll_every=0.05)
    taken_over = []
    real_fill = svc.fill_claimed
    def fill_claimed(cache_id, *, token, progress=None):
        try:
            return real_fill(cache_id, token=token, progress=progress)
        except TakenOverError:
            taken_over.append(token)
            raise
    svc.fill_claimed = fill_claimed
    rec = svc.ensure_ready(svc.request("xray", "v1", volume="onprem-vol"), timeout=120)
    print(json.dumps({"state": rec.state, "taken_over": taken_over}), flush=True)
    """
)


def _filler(hub: Hub) -> subprocess.Popen[bytes]:
    s = hub.settings
    cfg = json.dumps({"home": str(s.home), "catalog_url": s.catalog_url, "stale": STALE})
    return subprocess.Popen(
        [sys.executable, "-c", _FILLER, cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _pngs(folder: Path) -> int:
    return len(list(folder.rglob("*.png"))) if folder.exists() else 0


def _wait(cond: object, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_paused_filler_is_taken_over_stops_and_leaves_the_cache_whole(
    hub: Hub, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    """Fails on the old code: both fillers shared one staging folder and nobody stopped."""
    topo = Topology(hub.catalog)
    staging_root = sites["onprem"] / ".lakecache" / "staging"
    first = _filler(hub)
    second: subprocess.Popen[bytes] | None = None
    try:
        _wait(lambda: topo.list_caches(), "the first filler's request")
        cache_id = topo.list_caches()[0].id
        first_staging = staging_root / f"{cache_id}-1"
        _wait(lambda: _pngs(first_staging) >= 6, "the first filler to write files")
        first.send_signal(signal.SIGSTOP)
        paused_at = _pngs(first_staging)
        time.sleep(STALE + 0.5)  # its heartbeat goes stale while it sleeps

        second = _filler(hub)
        _wait(lambda: topo.get_cache(cache_id).fence_token == 2, "the takeover")
        second_staging = staging_root / f"{cache_id}-2"
        _wait(lambda: _pngs(second_staging) >= paused_at + 3, "the second filler to progress")
        # Taken over, not shared: the paused filler's folder is now the second's.
        assert not first_staging.exists()
        assert topo.get_cache(cache_id).state == "filling"

        first.send_signal(signal.SIGCONT)  # wakes up in the middle of the second's fill
        out_first, err_first = first.communicate(timeout=120)
        out_second, err_second = second.communicate(timeout=120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.communicate()
    assert first.returncode == 0, err_first.decode()[-3000:]
    assert second.returncode == 0, err_second.decode()[-3000:]
    # The paused one learnt it was taken over, stopped, and then waited for the newer one.
    assert json.loads(out_first) == {"state": "ready", "taken_over": [1]}
    assert json.loads(out_second) == {"state": "ready", "taken_over": []}
    rec = topo.get_cache(cache_id)
    assert rec.state == "ready" and rec.fence_token == 2 and rec.worker is None
    svc = CacheService(hub)
    assert tree(svc.cache_path(rec)) == tree(tmp_path / "src")
    assert svc.verify(cache_id).ok
    assert VolumeLayout(sites["onprem"]).staging_dirs(cache_id) == []  # each cleaned its own


def test_a_stale_token_cannot_heartbeat_publish_or_fail(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock
) -> None:
    """Fails on the old code: claims had no token and any worker could publish."""
    topo = svc.topology
    rec = svc.request("xray", "v1", site="onprem")
    stale = timedelta(seconds=15)
    old = topo.claim_fill(rec.id, "host:1", now=clock.now(), stale_after=stale)
    assert old == 1
    assert topo.claim_fill(rec.id, "host:2", now=clock.now(), stale_after=stale) is None
    clock.advance(timedelta(seconds=16))
    new = topo.claim_fill(rec.id, "host:2", now=clock.now(), stale_after=stale)
    assert new == 2
    with pytest.raises(TakenOverError, match="taken over"):
        topo.beat_fill(rec.id, token=old, done_bytes=1, now=clock.now())
    with pytest.raises(TakenOverError):
        topo.complete_fill(rec.id, token=old, linked_bytes=0, fetched_bytes=0, now=clock.now())
    with pytest.raises(TakenOverError):
        topo.fail_fill(rec.id, token=old, reason="disk", now=clock.now())
    assert topo.get_cache(rec.id).state == "filling"
    assert topo.beat_fill(rec.id, token=new, done_bytes=5, now=clock.now())
    assert topo.complete_fill(rec.id, token=new, linked_bytes=0, fetched_bytes=0, now=clock.now())
    # An evicted and re-armed cache keeps counting: no token of an earlier life matches.
    evicting = topo.start_eviction(rec.id, now=clock.now())
    assert evicting == 3
    assert topo.finish_eviction(rec.id, token=evicting, now=clock.now())
    topo.request_cache("xray", rec.commit_id, rec.volume, "", files=1, nbytes=1, now=clock.now())
    with pytest.raises(TakenOverError):
        topo.beat_fill(rec.id, token=new, done_bytes=1, now=clock.now())


def test_each_agent_process_claims_under_its_own_worker_id(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old code: every agent of a site claimed as ``agent:<site>``."""
    # Slow reads keep the fill going while the claim is looked at (a finished fill clears it).
    lake = svc.hub.lake
    real_get_into = lake.get_into

    def slow_get_into(key: str, start: int, buf: memoryview) -> None:
        time.sleep(0.2)
        real_get_into(key, start, buf)

    monkeypatch.setattr(lake, "get_into", slow_get_into)
    agent = SiteAgent(svc, "onprem", gc_every=3600)
    try:
        rec = svc.request("xray", "v1", site="onprem")
        assert agent.run_once() == 1
        assert svc.topology.get_cache(rec.id).worker == agent.worker
        agent.wait_idle()
    finally:
        agent.close()
    assert agent.worker.startswith("agent:onprem:") and agent.worker.endswith(f":{_pid()}")
    assert svc.topology.get_cache(rec.id).state == "ready"


def _pid() -> int:
    import os

    return os.getpid()


# -- evictions ------------------------------------------------------------------------------


def _ready(svc: CacheService) -> int:
    return svc.ensure_ready(svc.request("xray", "v1", site="onprem")).id


def test_cache_stuck_evicting_is_finished_by_the_next_gc_and_agent_pass(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock
) -> None:
    """Fails on the old code: an eviction whose worker died stayed ``evicting`` forever."""
    topo = svc.topology
    for finisher in ("gc", "agent"):
        cache_id = _ready(svc)
        final = svc.cache_path(topo.get_cache(cache_id))
        # A worker claims the eviction and is killed before it moves anything.
        assert topo.start_eviction(cache_id, now=clock.now()) is not None
        svc.gc()
        assert topo.get_cache(cache_id).state == "evicting"  # not stale yet: it may be alive
        assert final.is_dir()
        clock.advance(svc.stale_after + timedelta(seconds=1))
        if finisher == "gc":
            svc.gc()
        else:
            agent = SiteAgent(svc, "onprem", gc_every=3600)
            agent._last_gc = time.monotonic()  # this pass is not a gc one
            agent.run_once()
            agent.close()
        assert topo.get_cache(cache_id).state == "evicted", finisher
        assert not final.exists()


def test_ensure_ready_waits_with_backoff_and_a_deadline_on_an_evicting_cache(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock
) -> None:
    """Fails on the old code: it spun on an evicting cache without sleeping, forever."""
    topo = svc.topology
    cache_id = _ready(svc)
    assert topo.start_eviction(cache_id, now=clock.now()) is not None  # its evictor stalls
    calls = {"n": 0}
    real_get = topo.get_cache

    def counting_get(cache_id: int, now: object = None) -> object:
        calls["n"] += 1
        return real_get(cache_id, now)  # type: ignore[arg-type]

    svc.poll_every, svc.max_poll_every = 0.02, 0.2
    topo.get_cache = counting_get  # type: ignore[method-assign]
    outcome: list[BaseException | object] = []

    def wait() -> None:
        try:
            outcome.append(svc.ensure_ready(real_get(cache_id), timeout=1.0))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(10)
    assert not waiter.is_alive(), "ensure_ready never gave up"
    assert isinstance(outcome[0], CacheFillError) and "still evicting" in str(outcome[0])
    assert calls["n"] < 40, f"polled {calls['n']} times in one second"
    del topo.get_cache

    # Once the eviction is stale, a process that mounts the volume finishes it and refills.
    clock.advance(svc.stale_after + timedelta(seconds=1))
    rec = svc.ensure_ready(topo.get_cache(cache_id), timeout=30)
    assert rec.state == "ready" and svc.verify(cache_id).ok


class _StallAfterCheck:
    """The topology as one evictor sees it, stalling right after it checks its claim:
    meanwhile another worker takes the eviction over, finishes it and fills the
    cache again (what a SIGSTOP at that instant would let happen)."""

    def __init__(self, topology: object, meanwhile: object) -> None:
        self._topology, self._meanwhile, self.stalled = topology, meanwhile, False

    def holds_claim(self, cache_id: int, token: int) -> bool:
        held = self._topology.holds_claim(cache_id, token)  # type: ignore[attr-defined]
        if not self.stalled:
            self.stalled = True
            self._meanwhile()  # type: ignore[operator]
        return bool(held)

    def __getattr__(self, name: str) -> object:
        return getattr(self._topology, name)


def test_a_stalled_evictor_cannot_undo_a_newer_fill(
    hub: Hub, sites: dict[str, Path], xray: Dataset, clock: ManualClock, tmp_path: Path
) -> None:
    """Fails on the old code: the stalled evictor moved the newly published cache away."""
    newer = CacheService(hub, clock=clock, poll_every=0.02)
    cache_id = _ready(newer)
    topo = newer.topology

    def meanwhile() -> None:
        clock.advance(newer.stale_after + timedelta(seconds=1))
        newer.gc()  # takes the stale eviction over and finishes it
        assert topo.get_cache(cache_id).state == "evicted"
        assert newer.ensure_ready(topo.get_cache(cache_id)).state == "ready"

    stalled = CacheService(hub, clock=clock)
    stalled._topology = _StallAfterCheck(topo, meanwhile)  # type: ignore[assignment]
    assert stalled.evict(cache_id) is False  # it was taken over
    rec = topo.get_cache(cache_id)
    assert rec.state == "ready"
    assert tree(newer.cache_path(rec)) == tree(tmp_path / "src")
    assert newer.verify(cache_id).ok


# -- leases ---------------------------------------------------------------------------------


def test_a_lease_lost_to_eviction_is_reported_to_its_holder(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock
) -> None:
    """Fails on the old code: the eviction deleted the lapsed lease and nobody was told."""
    with (
        pytest.raises(LeaseLostError, match="lapsed"),
        svc.use("xray", "v1", site="onprem") as folder,
    ):
        assert (folder / "Edema").is_dir()
        cache_id = svc.topology.list_caches()[0].id
        clock.advance(svc.lease_ttl * 2)  # the holder stalls; its lease lapses
        assert svc.evict(cache_id)
    assert svc.topology.get_cache(cache_id).state == "evicted"

    lease_holder = Topology(svc.hub.catalog)
    cache_id = _ready(svc)
    lease = lease_holder.add_lease(
        cache_id, "job", now=clock.now(), expires_at=clock.now() + timedelta(seconds=1)
    )
    clock.advance(timedelta(seconds=2))
    assert svc.evict(cache_id)
    with pytest.raises(LeaseLostError):
        lease_holder.renew_lease(lease, now=clock.now(), expires_at=clock.now())
