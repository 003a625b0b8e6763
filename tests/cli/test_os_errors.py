"""An OSError reads like any other error: 'error:' and 'hint:' lines, exit 1, no traceback.

Each error is caused for real: a full filesystem (a tiny tmpfs), a folder
root may not write into (immutable), and a read-only folder that a user who
is not root pulls into.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_files

from lakecache.cli.main import main
from lakecache.oserrors import explain_os_error

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, chattr, setuid)")


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


def committed(env: Path, capsys: pytest.CaptureFixture[str], n: int = 40) -> None:
    make_files(env / "src", n=n, size=8000)
    assert run(capsys, "data", "init", "xray")[0] == 0
    assert run(capsys, "data", "commit", "xray", str(env / "src"), "-m", "v1", "-q")[0] == 0


def assert_error_and_hint(code: int, err: str, reason: str, hint: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and reason in lines[0], err
    assert lines[1].startswith("hint: ") and hint in lines[1], err


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@as_root
def test_a_full_disk_is_an_error_with_a_hint(
    env: Path, capsys: pytest.CaptureFixture[str], tiny_fs: Path
) -> None:
    committed(env, capsys)  # 320 KB into 64 KB
    code, _, err = run(capsys, "data", "pull", "xray", str(tiny_fs / "xray"), "-q")
    assert_error_and_hint(code, err, "No space left on device", "is full")
    assert "(ENOSPC)" in err


@pytest.fixture
def immutable(env: Path) -> Iterator[Path]:
    folder = env / "frozen"
    folder.mkdir()
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {done.stderr.strip()}")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@as_root
def test_a_folder_nobody_may_write_is_an_error_with_a_hint(
    env: Path, capsys: pytest.CaptureFixture[str], immutable: Path
) -> None:
    committed(env, capsys, n=3)
    code, _, err = run(capsys, "data", "pull", "xray", str(immutable), "-q")
    assert_error_and_hint(code, err, "Operation not permitted", "owner and mode")
    assert str(immutable) in err


@as_root
def test_a_user_pulling_into_a_read_only_folder_gets_an_error_and_a_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI run by ``nobody`` (a fork: this Python lives where nobody may not read)."""
    world = Path(tempfile.mkdtemp(prefix="lakecache-cli-"))
    try:
        world.chmod(0o755)
        monkeypatch.setenv("LAKECACHE_HOME", str(world / "home"))
        monkeypatch.setenv("LAKECACHE_AUTHOR", "cli-tester")
        for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT"):
            monkeypatch.delenv(k, raising=False)
        committed(world, capsys, n=3)
        # Once as root, so that every module the child needs is loaded.
        assert run(capsys, "data", "pull", "xray", str(world / "warm"), "-q")[0] == 0
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(world)], check=True)
        locked = world / "locked"
        locked.mkdir()
        locked.chmod(0o555)  # root's, read-only for everyone else
        out = world / "child.json"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 99
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    code = main(["data", "pull", "xray", str(locked / "xray"), "-q"])
                out.write_text(json.dumps({"code": code, "stderr": err.getvalue()}))
            except BaseException:  # noqa: BLE001 - the parent reads it from the file
                out.write_text(json.dumps({"error": traceback.format_exc()}))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        result = json.loads(out.read_text())
        assert "error" not in result, result["error"]
        err = result["stderr"]
        assert_error_and_hint(result["code"], err, "Permission denied", "owner and mode")
        assert "(EACCES)" in err and str(locked) in err
    finally:
        shutil.rmtree(world, ignore_errors=True)


def test_a_stale_nfs_handle_says_to_remount() -> None:
    message, hint = explain_os_error(OSError(errno.ESTALE, "Stale file handle", "/mnt/cache/x"))
    assert message == "Stale file handle: /mnt/cache/x (ESTALE)"
    assert "remount" in hint


def test_an_os_error_without_a_path_still_reads_well() -> None:
    message, hint = explain_os_error(OSError(errno.EIO, "Input/output error"))
    assert message == "Input/output error (EIO)"
    assert "dmesg" in hint
