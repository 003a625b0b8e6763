"""Shared fixtures. Real services (SeaweedFS, PostgreSQL) start in their own plugin modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lakecache.settings import Settings

pytest_plugins = ["fixtures.seaweed", "fixtures.postgres", "fixtures.parallel"]

# Ray reads this when it is first imported, by whichever test (or module) comes first:
# without it, the nodes of a test cluster on 127.0.0.1 do not find each other.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Under `make test` two workers share the cores: a second OpenMP/MKL thread in each (PyTorch,
# numpy) only spin-waits for a core the other worker holds. Read when they are imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded default: a local-folder lake and a SQLite catalog under tmp_path."""
    return Settings(home=tmp_path / "home", workers=4, author="tester")
