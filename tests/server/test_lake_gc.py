"""The server's opt-in lake garbage collection in its maintenance pass."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from lakecache.data.dataset import Dataset
from lakecache.server.config import load_config
from lakecache.server.runtime import ControlPlane
from lakecache.settings import Settings


def test_lake_gc_is_opt_in_and_reads_its_grace_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "team.toml"
    config.write_text('[server]\nlake_gc = true\nlake_gc_grace = "2h"\n')
    _, server = load_config(config, {})
    assert server.lake_gc is True and server.lake_gc_grace == timedelta(hours=2)
    _, default = load_config(None, {})
    assert default.lake_gc is False and default.lake_gc_grace == timedelta(days=1)


def test_maintenance_gc_reclaims_a_deleted_datasets_bytes(
    settings: Settings, tmp_path: Path
) -> None:
    _, server = load_config(None, {}, lake_gc=True, lake_gc_grace=timedelta(0))
    plane = ControlPlane.open(settings, server)
    try:
        (tmp_path / "f").mkdir()
        (tmp_path / "f" / "a.bin").write_bytes(os.urandom(10_000))
        plane.accounts.create_owned_dataset("gone", "admin", now=plane.clock.now())
        Dataset("gone", hub=plane.hub).commit(tmp_path / "f")
        plane.accounts.delete_dataset("gone")
        assert plane.collect_lake_garbage() >= 10_000
        assert not [o for o in plane.hub.lake.list("packs/")]
    finally:
        plane.close()
