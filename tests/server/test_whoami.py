"""`lakecache whoami` and `login` as a newcomer uses them: pasted API URLs, no terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lakecache.cli.main import main
from server.live import ADMIN_PASSWORD, PASSWORD, World


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "client-home"
    monkeypatch.setenv("LAKECACHE_HOME", str(home))
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT", "LAKECACHE_SERVER"):
        monkeypatch.delenv(k, raising=False)
    return home


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_whoami_local_hides_catalog_credentials(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKECACHE_CATALOG", "postgresql+psycopg://lc:s3cret@db.example:5432/lc")
    code, out, err = run(capsys, monkeypatch, "whoami", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["mode"] == "local" and info["catalog"] == "postgresql+psycopg://db.example:5432/lc"
    assert "s3cret" not in out
    code, out, _ = run(capsys, monkeypatch, "whoami")
    assert out.startswith("local: working on the lake directly as ")


def test_login_with_the_api_url_and_no_terminal_then_whoami(
    world_factory: Callable[..., World],
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = world_factory(agents=False)
    # Pasted the API's address, and piped the password without --password-stdin.
    code, out, err = run(
        capsys, monkeypatch, "login", w.url + "/api/v1/", "--user", "wendy", stdin=PASSWORD + "\n"
    )
    assert code == 0, err
    assert f"logged in to {w.url} as wendy" in out and "Warning" not in out + err
    code, out, err = run(capsys, monkeypatch, "whoami", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["server"] == w.url and info["user"] == "wendy" and not info["org_admin"]
    assert info["datasets"]["writer"] == 1  # xray; the hidden dataset is not counted
    code, out, _ = run(capsys, monkeypatch, "whoami")
    assert "as wendy (user); datasets: admin of 0, writer of 1, reader of 0" in out

    code, out, err = run(capsys, monkeypatch, "login", w.url, stdin=PASSWORD + "\n")
    assert code == 1 and "--user" in err


def test_login_in_a_pipe_prints_no_getpass_warning(
    world_factory: Callable[..., World], cli_env: Path
) -> None:
    w = world_factory(agents=False)
    proc = subprocess.run(
        [sys.executable, "-m", "lakecache", "login", w.url, "--user", "rita"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LAKECACHE_HOME": str(cli_env)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "Warning" not in proc.stdout


def test_an_idle_agent_logs_nothing_per_poll(
    world_factory: Callable[..., World], cli_env: Path
) -> None:
    w = world_factory(agents=False)
    env = {**os.environ, "LAKECACHE_HOME": str(cli_env)}
    login = subprocess.run(
        [sys.executable, "-m", "lakecache", "login", w.url, "--user", "admin"],
        input=ADMIN_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert login.returncode == 0, login.stderr
    agent = subprocess.Popen(
        [sys.executable, "-m", "lakecache", "agent", "--site", "local", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Its first pass reports the volume's space; then it only polls, ten times a second.
        deadline = time.monotonic() + 60
        while w.plane.topology.get_volume("local").fs_reported_at is None:
            assert agent.poll() is None, agent.communicate()
            assert time.monotonic() < deadline, "the agent never reported"
            time.sleep(0.2)
        time.sleep(3)
    finally:
        agent.terminate()
        out, err = agent.communicate(timeout=30)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert not [line for line in lines if "HTTP Request" in line], lines
    assert len(lines) < 10, lines
