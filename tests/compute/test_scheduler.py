"""Admission, fallback, deadlines, data-aware placement, fencing and cancel, on the catalog."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import World
from helpers import make_files

from lakecache.cache.clock import ManualClock
from lakecache.cache.service import CacheService
from lakecache.compute.model import InputSpec, Resources
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import ConflictError, NotFoundError, UserError

ONE_CPU = Resources(1000, 10**9)
STALE = timedelta(seconds=30)


def _submit(store: ComputeStore, clock: ManualClock, queue: str = "burst", **kw: object) -> int:
    job = store.submit(
        queue,
        ["true"],
        request=kw.pop("request", ONE_CPU),
        submitted_by="tester",  # type: ignore[arg-type]
        now=clock.now(),
        **kw,  # type: ignore[arg-type]
    )
    return job.id


def test_a_full_onprem_pool_sends_the_next_job_to_the_cloud(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    ids = [_submit(store, clock) for _ in range(3)]
    assert store.schedule(now=clock.now()) == 3
    jobs = [store.get_job(i) for i in ids]
    assert [(j.state, j.site, j.template) for j in jobs] == [
        ("placed", "onprem", "onprem-small"),
        ("placed", "onprem", "onprem-small"),
        ("placed", "cloud", "cloud-small"),
    ]
    why = {v.template: v.verdict for v in jobs[2].placement}
    assert why == {"onprem-small": "full", "cloud-small": "chosen"}
    assert {v.template: v.verdict for v in jobs[0].placement} == {
        "onprem-small": "chosen",
        "cloud-small": "lower in order",
    }
    used = {c.compute: c.used.cpu_milli for c in store.capacity()}
    assert used == {"cloud-pool": 1000, "onprem-pool": 2000}
    kinds = [e.kind for e in store.timeline(ids[2])]
    assert kinds == ["queued", "placed"]


def test_a_job_waits_when_nothing_has_room_and_moves_as_soon_as_room_appears(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    store.set_capacity("cloud-pool", Resources(1000, 16 * 10**9))
    first = [_submit(store, clock) for _ in range(3)]
    store.schedule(now=clock.now())
    waiting = _submit(store, clock)
    assert store.schedule(now=clock.now()) == 0
    job = store.get_job(waiting)
    assert job.state == "queued"
    assert [v.verdict for v in job.placement] == ["full", "full"]
    assert store.timeline(waiting)[-1].kind == "waiting"
    # The cloud job ends: its slot frees, and the waiting job takes it on the next pass.
    cloud_job = store.get_job(first[2])
    token = store.claim(cloud_job, "w1", now=clock.now())
    assert token == 1
    assert store.finish(
        first[2], token, state="succeeded", exit_code=0, reason=None, now=clock.now()
    )
    assert store.schedule(now=clock.now()) == 1
    assert store.get_job(waiting).site == "cloud"


def test_a_job_larger_than_every_template_is_refused_at_submit(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    with pytest.raises(UserError, match="larger than every template") as info:
        _submit(store, clock, request=Resources(4000, 10**9))
    assert "larger template" in info.value.hint
    assert store.list_jobs() == []


def test_past_the_pending_deadline_a_waiting_job_fails_fitting_nowhere(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    store.set_capacity("cloud-pool", Resources(0, 0))
    store.add_queue(
        "short",
        ["onprem-small", "cloud-small"],
        pending_deadline=timedelta(seconds=30),
        now=clock.now(),
    )
    [_submit(store, clock, "short") for _ in range(2)]
    store.schedule(now=clock.now())
    late = _submit(store, clock, "short")
    store.schedule(now=clock.now())
    clock.advance(timedelta(seconds=29))
    store.schedule(now=clock.now())
    assert store.get_job(late).state == "queued"
    clock.advance(timedelta(seconds=2))
    store.schedule(now=clock.now())
    job = store.get_job(late)
    assert job.state == "failed"
    assert job.reason is not None and job.reason.startswith("fits nowhere")
    assert "onprem-small: full" in job.reason and "cloud-small: full" in job.reason


def test_unknown_names_and_oversized_templates_are_refused_with_hints(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    with pytest.raises(NotFoundError, match="no queue 'nope'") as info:
        _submit(store, clock, "nope")
    assert "queue ls" in info.value.hint
    with pytest.raises(NotFoundError, match="no template 'nope'") as info:
        store.add_queue("q2", ["onprem-small", "nope"], now=clock.now())
    assert "template ls" in info.value.hint
    with pytest.raises(NotFoundError, match="no compute resource") as info:
        store.add_template("t", "nope", ONE_CPU, None, clock.now())
    assert "compute ls" in info.value.hint
    with pytest.raises(UserError, match="larger than compute resource 'onprem-pool'"):
        store.add_template("huge", "onprem-pool", Resources(3000, 10**9), None, clock.now())
    with pytest.raises(UserError, match="policy"):
        store.add_queue("q3", ["onprem-small"], policy="fastest", now=clock.now())
    assert [q.name for q in store.list_queues()] == ["burst"]


def test_data_policy_places_a_cached_input_where_its_cache_is_ready(
    hub: Hub, store: ComputeStore, clock: ManualClock, world: World, tmp_path: Path
) -> None:
    ds = Dataset.create("xray", hub=hub)
    commit = ds.commit(make_files(tmp_path / "src", n=6), message="v1")
    caches = CacheService(hub, clock=clock)
    rec = caches.request("xray", commit.id, site="cloud")
    assert caches.ensure_ready(rec).state == "ready"
    store.add_queue("near", ["onprem-small", "cloud-small"], policy="data", now=clock.now())
    spec = InputSpec("xray", "xray", "main", commit.id, "cached")
    near = store.submit(
        "near", ["true"], request=ONE_CPU, inputs=[spec], submitted_by="t", now=clock.now()
    )
    strict = store.submit(
        "burst", ["true"], request=ONE_CPU, inputs=[spec], submitted_by="t", now=clock.now()
    )
    streamed = store.submit(
        "near",
        ["true"],
        request=ONE_CPU,
        submitted_by="t",
        now=clock.now(),
        inputs=[InputSpec("xray", "xray", "main", commit.id, "stream")],
    )
    store.schedule(now=clock.now())
    near_job, strict_job, stream_job = (store.get_job(j.id) for j in (near, strict, streamed))
    assert near_job.site == "cloud"
    assert [v.verdict for v in near_job.placement] == ["no cache", "chosen"]
    assert strict_job.site == "onprem"
    assert [v.verdict for v in strict_job.placement] == ["chosen", "policy"]
    assert stream_job.site == "onprem"  # a streamed input reads the lake: no preference


def test_a_stale_attempt_never_reports_over_the_new_one(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    job_id = _submit(store, clock)
    store.schedule(now=clock.now())
    old = store.claim(store.get_job(job_id), "agent-a", now=clock.now())
    assert old == 1
    assert store.claim(store.get_job(job_id), "agent-b", now=clock.now()) is None  # taken
    clock.advance(STALE + timedelta(seconds=1))
    assert store.requeue_stale(now=clock.now(), stale_after=STALE) == [(job_id, "queued")]
    assert store.requeue_stale(now=clock.now(), stale_after=STALE) == []  # once
    store.schedule(now=clock.now())
    new = store.claim(store.get_job(job_id), "agent-b", now=clock.now())
    assert new == 2
    assert store.heartbeat(job_id, old, now=clock.now()) == "lost"
    assert not store.record(job_id, old, "started", "late", now=clock.now())
    assert not store.finish(job_id, old, state="failed", exit_code=1, reason="x", now=clock.now())
    assert store.heartbeat(job_id, new, now=clock.now()) == "run"
    assert store.finish(job_id, new, state="succeeded", exit_code=0, reason=None, now=clock.now())
    job = store.get_job(job_id)
    assert (job.state, job.exit_code, job.attempt) == ("succeeded", 0, 2)
    kinds = [(e.kind, e.attempt) for e in store.timeline(job_id)]
    assert ("requeued", 1) in kinds and ("succeeded", 2) in kinds
    assert ("started", 1) not in kinds


def test_a_job_whose_agents_keep_dying_fails_after_its_last_attempt(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    job_id = _submit(store, clock, max_attempts=1)
    store.schedule(now=clock.now())
    store.claim(store.get_job(job_id), "agent-a", now=clock.now())
    clock.advance(STALE * 2)
    assert store.requeue_stale(now=clock.now(), stale_after=STALE) == [(job_id, "failed")]
    job = store.get_job(job_id)
    assert job.reason is not None and "the last of 1" in job.reason
    assert store.capacity()[1].used == Resources()  # onprem-pool's slot is free again


def test_cancel_before_start_and_while_running(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    queued = _submit(store, clock)
    assert store.cancel(queued, now=clock.now()).state == "cancelled"
    running = _submit(store, clock)
    store.schedule(now=clock.now())
    token = store.claim(store.get_job(running), "w", now=clock.now())
    assert token is not None
    assert store.cancel(running, now=clock.now()).cancel_requested
    assert store.heartbeat(running, token, now=clock.now()) == "cancel"
    store.finish(
        running, token, state="cancelled", exit_code=-15, reason="cancelled", now=clock.now()
    )
    with pytest.raises(ConflictError):
        done = _submit(store, clock)
        store.schedule(now=clock.now())
        t = store.claim(store.get_job(done), "w", now=clock.now())
        assert t is not None
        store.finish(done, t, state="succeeded", exit_code=0, reason=None, now=clock.now())
        store.cancel(done, now=clock.now())


def test_a_pass_plans_one_batch_when_the_queued_jobs_are_alike_and_the_slots_fill(
    store: ComputeStore, clock: ManualClock, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of one shape that found no room are passed over before they are read: the
    queued jobs beyond the first batch (all alike) cost the pass no batch of their own."""
    from lakecache.compute import admission

    monkeypatch.setattr(admission, "ADMIT_BATCH", 20)
    ids = [_submit(store, clock) for _ in range(70)]
    batches: list[int] = []
    real = store._queued

    def counted(job_ids: list[int]) -> object:
        batches.append(len(job_ids))
        return real(job_ids)

    monkeypatch.setattr(store, "_queued", counted)
    # onprem has 2 one-CPU slots, cloud 8: 10 placed, the other 60 wait.
    assert store.schedule(now=clock.now()) == 10
    assert batches == [20]
    states = [store.get_job(i).state for i in ids]
    assert states.count("placed") == 10 and states.count("queued") == 60
    # A job of another shape (less memory) further back is still planned in the same pass.
    two = _submit(store, clock, request=Resources(1000, 10**8))
    batches.clear()
    assert store.schedule(now=clock.now()) == 0
    assert batches == [20, 1]  # the alike ones once, then the one of its own shape
    assert "no template has room" in store.timeline(two)[-1].detail


def test_ends_that_arrive_together_share_a_transaction_and_stay_fenced(
    store: ComputeStore, clock: ManualClock, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of short jobs ends together: their ends are written in one transaction,
    each caller still told whether its own was (a stale token is refused alone)."""
    import threading

    from lakecache.compute.together import together

    ids = [_submit(store, clock) for _ in range(4)]
    store.schedule(now=clock.now())
    tokens = {i: store.claim(store.get_job(i), "agent-a", now=clock.now()) for i in ids}
    assert all(t == 1 for t in tokens.values())
    opened: list[int] = []
    real_write = store._c._write

    def counting_write() -> object:
        opened.append(1)
        return real_write()

    monkeypatch.setattr(store._c, "_write", counting_write)
    busy, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:  # a transaction under way: the ends queue behind it
        busy.set()
        assert release.wait(30)

    holder = threading.Thread(target=together.write, args=(store._c, hold))
    holder.start()
    assert busy.wait(30)
    results: dict[int, bool] = {}

    def end(job_id: int, token: int) -> None:
        results[job_id] = store.finish(
            job_id, token, state="succeeded", exit_code=0, reason=None, now=clock.now()
        )

    stale = ids[-1]
    threads = [threading.Thread(target=end, args=(i, tokens[i])) for i in ids[:-1]]
    threads.append(threading.Thread(target=end, args=(stale, 7)))  # not its token
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(together._queue) < len(threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [holder, *threads]:
        t.join(30)
    assert len(opened) == 2  # the one held, then every end in one
    assert results == {**{i: True for i in ids[:-1]}, stale: False}
    assert [store.get_job(i).state for i in ids] == ["succeeded"] * 3 + ["running"]
