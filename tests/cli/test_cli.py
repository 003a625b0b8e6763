"""The CLI end to end, in-process: tables, --json, errors as 'error:'/'hint:' lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write

from lakecache.cli.main import main
from lakecache.services.seaweed import SeaweedServer


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAKECACHE_AUTHOR", "cli-tester")
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_full_cli_flow(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = env / "chest-xray"
    for i in range(30):
        write(src, f"{['Edema', 'Mass'][i % 2]}/{i:05d}.png", f"png {i}".encode() * 50, age=10)
    assert run(capsys, "data", "init", "xray")[0] == 0
    code, out, err = run(capsys, "data", "commit", "xray", str(src), "-m", "first import", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["files"] == 30 and first["uploaded_blobs"] == 30
    assert run(capsys, "data", "tag", "xray", "v1")[0] == 0
    write(src, "Mass/00001.png", b"relabelled", age=5)
    code, out, _ = run(capsys, "data", "commit", "xray", str(src), "-m", "fix labels", "-q")
    assert code == 0 and out.startswith("committed xray@")

    code, out, _ = run(capsys, "data", "log", "xray", "--json")
    log = json.loads(out)
    assert [e["message"] for e in log] == ["fix labels", "first import"]
    assert log[1]["tags"] == ["v1"] and log[1]["id"] == first["id"]

    code, out, _ = run(capsys, "data", "log", "xray")
    lines = out.splitlines()
    assert lines[0].split("\t")[:2] == ["commit", "tags"] and "fix labels" in lines[1]

    code, out, _ = run(capsys, "data", "ls", "xray@v1", "Mass", "--json")
    mass = json.loads(out)
    assert code == 0 and len(mass) == 15
    code, out, _ = run(capsys, "data", "ls", "xray@v1", "Mass", "-n", "4", "--json")
    assert [i["path"] for i in json.loads(out)] == [i["path"] for i in mass[:4]]
    after = mass[3]["path"]
    code, out, _ = run(capsys, "data", "ls", "xray@v1", "Mass", "--after", after, "--json")
    assert [i["path"] for i in json.loads(out)] == [i["path"] for i in mass[4:]]
    code, out, _ = run(capsys, "data", "ls", "--json")
    assert json.loads(out)[0]["name"] == "xray"

    code, out, _ = run(capsys, "data", "diff", "xray@v1", "latest", "--json")
    d = json.loads(out)
    assert (d["added"], d["removed"], d["modified"]) == (0, 0, 1)
    assert d["changes"][0]["path"] == "Mass/00001.png"
    code, out, _ = run(capsys, "data", "diff", "xray@v1")
    assert "1 modified" in out and "Mass/00001.png" in out

    code, out, _ = run(capsys, "data", "show", f"xray@{first['id'][:8]}", "--json")
    assert json.loads(out)["id"] == first["id"]

    dest = env / "out"
    code, out, _ = run(capsys, "data", "pull", "xray@v1", str(dest), "--path", "Edema/", "--json")
    assert code == 0 and json.loads(out)["files"] == 15
    assert sorted(p.name for p in (dest / "Edema").iterdir())[:1] == ["00000.png"]
    assert not (dest / "Mass").exists()


def test_errors_are_one_line_with_a_hint(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "data", "log", "nope")
    assert code == 1
    first, hint = err.splitlines()[:2]
    assert first.startswith("error: ") and "nope" in first
    assert hint.startswith("hint: ") and "lakecache data" in hint
    assert "Traceback" not in err

    run(capsys, "data", "init", "xray")
    code, out, _ = run(capsys, "data", "log", "xray")
    assert code == 0 and "no commits yet" in out
    code, _, err = run(capsys, "data", "pull", "xray", str(env / "o"))
    assert code == 1 and "no commits yet" in err
    code, _, err = run(capsys, "data", "pull", "xray", str(env / "o"), "--path", "../etc")
    assert code == 1 and err.startswith("error: ") and ".." in err
    code, _, err = run(capsys, "data", "init", "Bad Name!")
    assert code == 1 and err.startswith("error: ")


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["--help"],
        ["data", "--help"],
        ["data", "commit", "--help"],
        ["data", "pull", "--help"],
    ):
        code, out, _ = run(capsys, *args)
        assert code == 0 and "Usage:" in out
    assert "ranged GET" in run(capsys, "data", "pull", "--help")[1]


@pytest.mark.s3
def test_lake_unreachable_names_the_endpoint(
    env: Path, seaweed: SeaweedServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKECACHE_LAKE", f"s3://{s3_bucket}/p")
    monkeypatch.setenv("LAKECACHE_S3_ENDPOINT", seaweed.endpoint)
    monkeypatch.setenv("LAKECACHE_S3_ACCESS_KEY", seaweed.access_key)
    monkeypatch.setenv("LAKECACHE_S3_SECRET_KEY", seaweed.secret_key)
    import os

    src = env / "src"
    write(src, "a.txt", b"a")
    cli = [sys.executable, "-m", "lakecache"]
    assert (
        subprocess.run(
            [*cli, "data", "init", "xray"], env=os.environ, capture_output=True
        ).returncode
        == 0
    )
    seaweed.stop()
    try:
        r = subprocess.run(
            [*cli, "data", "commit", "xray", str(src)],
            env={**os.environ, "LAKECACHE_S3_RETRIES": "2"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        seaweed.start()
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: ") and seaweed.endpoint.split("//")[1] in first
    assert "Traceback" not in r.stderr
    assert seaweed.secret_key not in r.stderr + r.stdout
