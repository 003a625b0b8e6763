"""`lakecache cache` as a newcomer meets it: waiting caches say why, matches are named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import make_files

from lakecache.cache.service import CacheService
from lakecache.cli.main import main
from lakecache.data.hub import Hub
from lakecache.settings import Settings


def get_caches() -> CacheService:
    """The same catalog the CLI uses (LAKECACHE_HOME of the test)."""
    return CacheService(Hub(Settings.load()))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT", "LAKECACHE_SERVER"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def fail(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    _, err = capsys.readouterr()
    assert code == 1
    return err


@pytest.fixture
def world(env: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    src = make_files(env / "src", n=12, size=200)
    ok(capsys, "data", "init", "xray")
    ok(capsys, "data", "commit", "xray", str(src), "-m", "v1", "-q", "-t", "v1")
    ok(capsys, "site", "add", "onprem")
    ok(capsys, "site", "add", "lab")
    ok(
        capsys,
        "volume",
        "add",
        "nvme",
        "--site",
        "onprem",
        "--root",
        str(env / "nvme"),
        "-c",
        "1GB",
    )
    # lab's volume is mounted on another machine: its root is no folder here.
    ok(
        capsys,
        "volume",
        "add",
        "lab-nfs",
        "--site",
        "lab",
        "--root",
        str(env / "elsewhere"),
        "-c",
        "1GB",
    )
    (env / "elsewhere").rmdir()
    return env


def test_a_pending_cache_at_a_site_without_agent_says_how_to_start_one(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "cache", "add", "xray@v1", "--site", "lab")
    assert "pending" in out and "no agent at lab: run `lakecache agent --site lab`" in out
    out = ok(capsys, "cache", "ls")
    assert "no agent at lab" in out
    rows = json.loads(ok(capsys, "cache", "ls", "--json"))
    assert rows[0]["agent_live"] is False and "lakecache agent --site lab" in rows[0]["note"]

    # An agent at lab reports its volume's space every minute: that is its heartbeat.
    svc = get_caches()
    svc.topology.report_volume_space("lab-nfs", free=10**9, total=2 * 10**9, now=datetime.now(UTC))
    rows = json.loads(ok(capsys, "cache", "ls", "--json"))
    assert rows[0]["agent_live"] is True and rows[0]["note"] is None
    assert "no agent" not in ok(capsys, "cache", "ls")


def test_folder_and_whole_caches_are_told_apart(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A folder first, then the whole commit: two caches of one commit on one volume.
    part = json.loads(
        ok(capsys, "cache", "add", "xray@v1", "--site", "onprem", "--path", "Mass/", "--json")
    )
    whole = json.loads(ok(capsys, "cache", "add", "xray@v1", "--site", "onprem", "--json"))
    # Once the whole commit is cached, a folder of it is that cache.
    again = json.loads(
        ok(capsys, "cache", "add", "xray@v1", "--site", "onprem", "--path", "Edema/", "--json")
    )
    assert again["id"] == whole["id"] and part["id"] != whole["id"]
    err = fail(capsys, "cache", "pin", "xray@v1", "--site", "onprem")
    assert "matches 2 caches" in err and "whole commit" in err and "folder Mass" in err
    assert "--path" in err
    assert f"pinned cache {part['id']}" in ok(
        capsys, "cache", "pin", "xray@v1", "--site", "onprem", "--path", "Mass/"
    )
    assert f"pinned cache {whole['id']}" in ok(
        capsys, "cache", "pin", "xray@v1", "--volume", "nvme", "--path", "/"
    )
    # A pinned cache is kept by rm, and the hint is about the pin, not about leases.
    err = fail(capsys, "cache", "evict", str(whole["id"]))
    assert "pinned" in err and "--force" in err and "runs using it" not in err
    # `rm` is the same command, kept for the people who type it first.
    assert "evicted" in ok(capsys, "cache", "rm", str(whole["id"]), "--force")
    helptext = ok(capsys, "cache", "--help")
    assert "evict" in helptext and " rm " not in helptext


def test_failure_reason_is_not_in_the_state_column(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = json.loads(ok(capsys, "cache", "add", "xray@v1", "--site", "onprem", "--json"))
    svc = get_caches()
    cache_id = int(rec["id"])
    # A failure recorded on the row the way a filler records one.
    svc.topology.update_cache(cache_id, state="failed", error="disk on fire")
    svc.hub.close()
    out = ok(capsys, "cache", "ls")
    table, _, notes = out.partition(f"cache {cache_id}: ")
    assert "disk on fire" not in table and "failed" in table
    assert notes.startswith("failed: disk on fire")
