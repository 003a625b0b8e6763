"""The last org admin and the last admin of a dataset, with two processes at once.

Two real processes on a real PostgreSQL each take away a different one of the
last two admins at the same moment (a barrier releases them together), many
times over. The checks count under ``SELECT ... FOR UPDATE``, so one of the two
always waits for the other, sees one admin left and is refused: never zero.
Fails on the code before, where both counted two admins and both went ahead.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from typing import Any

import pytest

from lakecache.catalog import Catalog
from lakecache.catalog.accounts import Accounts
from lakecache.errors import ConflictError

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PW = "password-123"
ROUNDS = 12


def _worker(url: str, barrier: Any, tasks: Any, results: Any) -> None:
    """Take one change at a time from ``tasks``; run it when the other worker is ready too."""
    catalog = Catalog.open(url)
    accounts = Accounts(catalog)
    try:
        while (task := tasks.get()) is not None:
            kind, *args = task
            barrier.wait(timeout=60)
            try:
                if kind == "demote":
                    accounts.update_user(args[0], org_admin=False)
                else:
                    accounts.remove_member(args[0], args[1])
                results.put("done")
            except ConflictError:
                results.put("refused")
    finally:
        catalog.close()


@pytest.fixture
def two_processes(pg_url: str) -> Any:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    queues = [ctx.Queue(), ctx.Queue()]
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(pg_url, barrier, q, results), daemon=True) for q in queues
    ]
    for p in procs:
        p.start()

    def race(first: tuple[str, ...], second: tuple[str, ...]) -> list[str]:
        queues[0].put(first)
        queues[1].put(second)
        return sorted(results.get(timeout=120) for _ in range(2))

    yield race
    for q in queues:
        q.put(None)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0


def test_two_processes_demoting_the_last_two_org_admins_leave_one(
    pg_url: str, two_processes: Any
) -> None:
    catalog = Catalog.open(pg_url)
    accounts = Accounts(catalog)
    try:
        survivor = None
        for r in range(ROUNDS):
            a, b = f"a{r}", f"b{r}"
            accounts.create_user(a, PW, org_admin=True, now=NOW)
            accounts.create_user(b, PW, org_admin=True, now=NOW)
            if survivor is not None:
                accounts.update_user(survivor, org_admin=False)
            outcome = two_processes(("demote", a), ("demote", b))
            admins = [u.name for u in accounts.list_users() if u.org_admin and not u.disabled]
            assert len(admins) == 1, (r, outcome, admins)
            assert outcome == ["done", "refused"]
            survivor = admins[0]
    finally:
        catalog.close()


def test_two_processes_removing_the_last_two_dataset_admins_leave_one(
    pg_url: str, two_processes: Any
) -> None:
    catalog = Catalog.open(pg_url)
    accounts = Accounts(catalog)
    try:
        for name in ("ann", "ben"):
            accounts.create_user(name, PW, now=NOW)
        for r in range(ROUNDS):
            dataset = f"ds{r}"
            accounts.create_owned_dataset(dataset, "ann", now=NOW)
            accounts.set_member(dataset, "ben", "admin", now=NOW)
            outcome = two_processes(("remove", dataset, "ann"), ("remove", dataset, "ben"))
            admins = [m.user for m in accounts.list_members(dataset) if m.role == "admin"]
            assert len(admins) == 1, (r, outcome, admins)
            assert outcome == ["done", "refused"]
    finally:
        catalog.close()
