"""Periodic work runs in one process at a time across replicas (catalog.leader.exclusive)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakecache.catalog.db import Catalog
from lakecache.catalog.leader import exclusive

_HOLDER = """
import sys, time
from lakecache.catalog.db import Catalog
from lakecache.catalog.leader import exclusive
catalog = Catalog.open(sys.argv[1])
with exclusive(catalog, "pass") as held:
    print("held" if held else "free", flush=True)
    time.sleep(600)
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def test_one_holder_at_a_time_and_free_again_after(url: str) -> None:
    first, second = Catalog.open(url), Catalog.open(url)
    try:
        with exclusive(first, "maintenance") as held:
            assert held
            with exclusive(second, "maintenance") as again:
                assert not again  # another replica is in the pass: skip it
            with exclusive(second, "other-work") as other:
                assert other  # locks are per name
        with exclusive(second, "maintenance") as held:
            assert held
    finally:
        first.close()
        second.close()


def test_a_killed_holder_lets_the_next_replica_take_the_work(url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    catalog = Catalog.open(url)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with exclusive(catalog, "pass") as held:
            assert not held
        holder.kill()  # SIGKILL: no unlock runs; the database (or kernel) drops the lock
        holder.wait()
        deadline = time.monotonic() + 10
        while True:
            with exclusive(catalog, "pass") as held:
                if held:
                    break
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()
        catalog.close()


def test_a_catalog_reached_through_a_server_is_not_locked_here() -> None:
    with exclusive(object(), "maintenance") as held:
        assert held


def test_a_replica_skips_the_maintenance_pass_another_one_is_in(url: str, tmp_path: Path) -> None:
    from lakecache.server.config import ServerConfig
    from lakecache.server.runtime import ControlPlane
    from lakecache.settings import Settings

    settings = Settings(home=tmp_path / "home", catalog_url=url, author="tester")
    plane = ControlPlane.open(settings, ServerConfig(agents=False, admin_password="x" * 12))
    other = Catalog.open(url)
    try:
        with exclusive(other, "server-maintenance") as held:
            assert held
            assert plane.maintenance_pass() is False
        assert plane.maintenance_pass() is True
    finally:
        other.close()
        plane.close()
