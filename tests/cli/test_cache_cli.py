"""Sites, volumes, compute and caches from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_files, write

from lakecache.cli.main import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


def test_topology_and_cache_lifecycle(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_files(env / "src", n=30)
    ok(capsys, "data", "init", "xray")
    ok(capsys, "data", "commit", "xray", str(src), "-m", "v1", "-q", "-t", "v1")
    ok(capsys, "site", "add", "onprem", "-d", "GPU cluster")
    ok(capsys, "site", "add", "cloud")
    ok(
        capsys,
        "volume",
        "add",
        "nfs",
        "--site",
        "onprem",
        "--root",
        str(env / "nfs"),
        "--capacity",
        "1GB",
    )
    ok(
        capsys,
        "volume",
        "add",
        "pvc",
        "--site",
        "cloud",
        "--root",
        str(env / "pvc"),
        "--capacity",
        "500MB",
        "--ttl",
        "12h",
    )
    ok(capsys, "compute", "add", "gpu", "--site", "onprem", "--volume", "pvc")
    comp = json.loads(ok(capsys, "compute", "ls", "--json"))
    assert [{k: c[k] for k in ("name", "site", "backend", "volumes")} for c in comp] == [
        {"name": "gpu", "site": "onprem", "backend": "local", "volumes": ["nfs", "pvc"]}
    ]
    sites = json.loads(ok(capsys, "site", "ls", "--json"))
    assert [s["name"] for s in sites] == ["cloud", "onprem"]

    added = json.loads(ok(capsys, "cache", "add", "xray@v1", "--site", "onprem", "--json"))
    assert added["state"] == "ready" and added["volume"] == "nfs"
    pending = json.loads(
        ok(capsys, "cache", "add", "xray@v1", "--site", "cloud", "--no-wait", "--json")
    )
    assert pending["state"] == "pending"

    vols = {v["name"]: v for v in json.loads(ok(capsys, "volume", "ls", "--json"))}
    assert vols["nfs"]["capacity"] == 10**9 and vols["nfs"]["committed"] == added["bytes"]
    assert vols["nfs"]["caches"] == 1 and vols["nfs"]["free"] > 0
    assert vols["pvc"]["ttl_seconds"] == 12 * 3600
    table = ok(capsys, "volume", "ls")
    assert table.splitlines()[0].split("\t")[:6] == [
        "volume",
        "site",
        "capacity",
        "committed",
        "free for caches",
        "free on disk",
    ]

    ok(capsys, "agent", "--site", "cloud", "--once")
    caches = json.loads(ok(capsys, "cache", "ls", "--json"))
    assert {c["volume"]: c["state"] for c in caches} == {"nfs": "ready", "pvc": "ready"}
    assert all(c["expires_in_seconds"] > 0 for c in caches)

    path = ok(capsys, "cache", "path", "xray@v1", "--site", "onprem").strip()
    assert Path(path).is_dir() and path.startswith(str(env / "nfs"))

    # verify: clean, then broken (exit 1 naming the file), then repaired.
    assert "0 missing, 0 modified" in ok(capsys, "cache", "verify", str(added["id"]))
    (Path(path) / "Edema" / "00000.png").unlink()
    code, out, _ = run(capsys, "cache", "verify", "xray@v1", "--volume", "nfs")
    assert code == 1 and "missing   Edema/00000.png" in out
    assert "repaired 1" in ok(capsys, "cache", "verify", "xray@v1", "--volume", "nfs", "--repair")

    ok(capsys, "cache", "pin", "xray@v1", "--volume", "nfs")
    code, _, err = run(capsys, "cache", "rm", "xray@v1", "--volume", "nfs")
    assert code == 1 and "pinned" in err
    ok(capsys, "cache", "unpin", str(added["id"]))
    plan = json.loads(ok(capsys, "cache", "gc", "--dry-run", "--json"))
    assert plan == {"dry_run": True, "evictions": []}
    ok(capsys, "cache", "rm", "xray@v1", "--volume", "nfs")
    assert not Path(path).exists()
    states = {
        c["volume"]: c["state"] for c in json.loads(ok(capsys, "cache", "ls", "--all", "--json"))
    }
    assert states == {"nfs": "evicted", "pvc": "ready"}
    code, _, err = run(capsys, "volume", "rm", "pvc")
    assert code == 1 and "still holds 1 cache" in err


def test_bad_input_gets_clear_errors(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "site", "add", "onprem")
    code, _, err = run(
        capsys, "volume", "add", "v", "--site", "nowhere", "--root", str(env), "--capacity", "1GB"
    )
    assert code == 1 and "no site 'nowhere'" in err and "hint:" in err
    code, _, err = run(
        capsys, "volume", "add", "v", "--site", "onprem", "--root", str(env), "--capacity", "lots"
    )
    assert code == 2 and "not a size" in err
    code, _, err = run(capsys, "site", "add", "Bad/Name")
    assert code == 1 and "invalid site name" in err
    code, _, err = run(capsys, "cache", "add", "nope@latest", "--site", "onprem")
    assert code == 1 and err.startswith("error: ")
    write(env / "src", "a.txt", b"a")
    ok(capsys, "data", "init", "xray")
    ok(capsys, "data", "commit", "xray", str(env / "src"), "-q")
    code, _, err = run(capsys, "cache", "add", "xray", "--site", "onprem")
    assert code == 1 and "has no cache volume" in err and "lakecache volume add" in err
