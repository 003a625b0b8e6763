"""Batch submit and batch admission: many jobs in one transaction, placed in one pass."""

from __future__ import annotations

import pytest
from conftest import World
from sqlalchemy import event

from lakecache.cache.clock import ManualClock
from lakecache.compute.model import BatchRefusedError, JobSpec, Resources
from lakecache.compute.sdk import submit_many
from lakecache.compute.store import ComputeStore
from lakecache.data.hub import Hub
from lakecache.errors import NotFoundError, UserError

ONE_CPU = Resources(1000, 10**9)


def _spec(*command: str, queue: str = "burst", **kw: object) -> JobSpec:
    return JobSpec(queue, command, kw.pop("request", ONE_CPU), **kw)  # type: ignore[arg-type]


def _writes(hub: Hub) -> list[str]:
    """Write transactions begun on the catalog from now on (SQLite: BEGIN IMMEDIATE)."""
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            seen.append(statement)

    event.listen(hub.catalog._engine, "before_cursor_execute", count)
    return seen


def test_a_batch_is_queued_in_order_in_one_transaction_and_placed_in_one_pass(
    hub: Hub, store: ComputeStore, clock: ManualClock, world: World
) -> None:
    specs = [_spec("echo", str(n), env={"N": str(n)}) for n in range(12)]
    writes = _writes(hub) if hub.catalog._engine.dialect.name == "sqlite" else None
    jobs = store.submit_many(specs, submitted_by="tester", now=clock.now())
    assert [j.command for j in jobs] == [("echo", str(n)) for n in range(12)]
    assert [j.env["N"] for j in jobs] == [str(n) for n in range(12)]
    assert all(j.state == "queued" and j.submitted_by == "tester" for j in jobs)
    if writes is not None:
        assert len(writes) == 1, writes
        writes.clear()
    placed = store.admit_many([j.id for j in jobs], now=clock.now())
    if writes is not None:
        # One transaction places them all; one more notes why the others wait.
        assert len(writes) == 2, writes
    # onprem holds 2 one-CPU jobs and cloud 8, oldest first: 10 placed, 2 wait.
    assert [j.id for j in placed] == [j.id for j in jobs[:10]]
    assert [j.site for j in placed] == ["onprem"] * 2 + ["cloud"] * 8
    assert {v.verdict for v in placed[2].placement} == {"full", "chosen"}
    rest = [store.get_job(j.id) for j in jobs[10:]]
    assert [j.state for j in rest] == ["queued", "queued"]
    assert [v.verdict for v in rest[0].placement] == ["full", "full"]
    assert [e.kind for e in store.timeline(rest[0].id)] == ["queued", "waiting"]
    used = {c.compute: c.used.cpu_milli for c in store.capacity()}
    assert used == {"onprem-pool": 2000, "cloud-pool": 8000}
    # Nothing more has room: a second pass places nothing and writes no new reasons.
    assert store.admit_many([j.id for j in rest], now=clock.now()) == []
    assert [e.kind for e in store.timeline(rest[0].id)] == ["queued", "waiting"]


def test_a_refused_job_refuses_the_whole_batch_and_says_which(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    before = len(store.list_jobs())
    huge = Resources(64_000, 10**9)
    with pytest.raises(BatchRefusedError) as caught:
        store.submit_many(
            [_spec("true"), _spec("true", request=huge), _spec("true")],
            submitted_by="tester",
            now=clock.now(),
        )
    assert caught.value.index == 1
    assert caught.value.message.startswith("job 2 of 3: the job (cpu 64")
    assert "larger than every template" in caught.value.message
    assert caught.value.hint
    with pytest.raises(BatchRefusedError, match="job 1 of 2: no queue 'nope'"):
        store.submit_many(
            [_spec("true", queue="nope"), _spec("true")], submitted_by="t", now=clock.now()
        )
    assert len(store.list_jobs()) == before  # none of either batch was queued
    # A batch of one fails as submit does, with that job's own error.
    with pytest.raises(NotFoundError, match="no queue 'nope'"):
        store.submit_many([_spec("true", queue="nope")], submitted_by="t", now=clock.now())
    assert store.submit_many([], submitted_by="t", now=clock.now()) == []


def test_a_job_cancelled_between_plan_and_commit_leaves_its_room_free(
    store: ComputeStore, clock: ManualClock, world: World
) -> None:
    jobs = store.submit_many([_spec("true")] * 3, submitted_by="t", now=clock.now())
    store.cancel(jobs[0].id, now=clock.now())
    placed = store.admit_many([j.id for j in jobs], now=clock.now())
    assert [j.id for j in placed] == [jobs[1].id, jobs[2].id]
    assert store.get_job(jobs[0].id).state == "cancelled"
    assert {c.compute: c.used.cpu_milli for c in store.capacity()}["onprem-pool"] == 2000


def test_the_sdk_submits_a_batch_and_places_what_has_room(hub: Hub, world: World) -> None:
    jobs = submit_many(
        [{"command": ["echo", str(n)], "queue": "burst", "cpu": "500m"} for n in range(5)],
        hub=hub,
    )
    records = [j.record for j in jobs]
    assert [r.command for r in records] == [("echo", str(n)) for n in range(5)]
    assert [r.request.cpu_milli for r in records] == [500] * 5
    assert all(r.state == "placed" for r in records)
    # Two half-CPU jobs per one-CPU onprem slot: 2 slots of onprem-small (1 CPU each).
    assert [r.site for r in records] == ["onprem", "onprem", "cloud", "cloud", "cloud"]
    for j in jobs:
        j.close()
    assert hub.catalog.resolve  # the caller's hub stays open
    with pytest.raises(UserError, match="job 2 of 2: unknown key"):
        submit_many([{"command": ["true"], "queue": "burst"}, {"comand": ["x"]}], hub=hub)
    with pytest.raises(UserError, match="job 1 of 1: a job needs a command and a queue"):
        submit_many([{"command": ["true"]}], hub=hub)
