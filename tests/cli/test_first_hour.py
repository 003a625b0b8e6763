"""What a newcomer meets in the CLI: refusals that name the fix, and no silent no-ops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_files, write

from lakecache.cli.main import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAKECACHE_AUTHOR", "cli-tester")
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT", "LAKECACHE_SERVER"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_pull_names_local_edits_and_needs_force(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_files(env / "src", n=6, size=400)
    write(src, "README.txt", b"one", age=10)
    assert run(capsys, "data", "init", "xray")[0] == 0
    assert run(capsys, "data", "commit", "xray", str(src), "-m", "one", "-q")[0] == 0
    assert run(capsys, "data", "tag", "xray", "v1")[0] == 0
    write(src, "README.txt", b"two", age=5)
    write(src, "extra/new.txt", b"new", age=5)
    assert run(capsys, "data", "commit", "xray", str(src), "-m", "two", "-q")[0] == 0

    out_dir = env / "out"
    assert run(capsys, "data", "pull", "xray", str(out_dir), "-q")[0] == 0
    write(out_dir, "README.txt", b"my edit")
    code, out, err = run(capsys, "data", "pull", "xray@v1", str(out_dir), "-q")
    assert code != 0
    assert "error:" in err and "README.txt" in err and "--force" in err
    assert "force=True" not in err  # the CLI names its own flag, not the SDK's argument
    assert (out_dir / "README.txt").read_bytes() == b"my edit"

    code, out, err = run(capsys, "data", "pull", "xray@v1", str(out_dir), "-q", "--force")
    assert code == 0, err
    assert (out_dir / "README.txt").read_bytes() == b"one"
    assert "overwrote 1 file(s)" in out
    assert "1 file(s) not in xray@v1 left" in out and "extra/new.txt" in out

    code, out, _ = run(capsys, "data", "pull", "xray@v1", str(out_dir), "--delete", "--json")
    assert code == 0 and json.loads(out)["deleted_files"] == 1
    assert not (out_dir / "extra").exists()


def test_commit_without_changes_or_message(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_files(env / "src", n=3, size=100)
    run(capsys, "data", "init", "xray")
    code, out, _ = run(capsys, "data", "commit", "xray", str(src), "-q")
    assert code == 0 and "no -m given: the message is 'Update from src'" in out
    code, out, _ = run(capsys, "data", "commit", "xray", str(src), "-m", "again", "-q")
    assert code == 0 and out.startswith("nothing changed since xray@")
    code, out, _ = run(capsys, "data", "log", "xray", "--json")
    assert [e["message"] for e in json.loads(out)] == ["Update from src"]
    code, out, _ = run(capsys, "data", "commit", "xray", str(src), "-m", "x", "--allow-empty", "-q")
    assert code == 0 and out.startswith("committed xray@")
    code, _, err = run(capsys, "data", "commit", "xray", str(env / "missing"), "-m", "x")
    assert code != 0 and "does not exist" in err and "not a folder" not in err


def test_ls_pages_say_how_to_get_the_next(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_files(env / "src", n=9, size=100)
    run(capsys, "data", "init", "xray")
    run(capsys, "data", "commit", "xray", str(src), "-m", "one", "-q")
    code, out, _ = run(capsys, "data", "ls", "xray", "Mass", "-n", "2")
    assert code == 0 and "more items follow" in out
    hint = out.strip().splitlines()[-1]
    last = hint.rsplit("--after ", 1)[1]
    assert "/" not in last  # the name as printed, which --after accepts
    code, out2, _ = run(capsys, "data", "ls", "xray", "Mass", "-n", "2", "--after", last)
    assert code == 0 and last not in out2.split("more items")[0]
    code, out3, _ = run(capsys, "data", "ls", "xray", "Mass", "-n", "3", "--after", last)
    assert "more items follow" not in out3  # 3 items in Mass: the last page
