"""The local backend: the contract suite, and processes that die with their agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backend_contract import BackendContract

from lakecache.compute.backends import Backend, open_backend

SRC = Path(__file__).resolve().parents[2] / "src"


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> Backend:
        return open_backend("local", {"grace": 2.0})


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_job_dies_with_the_agent_that_started_it(tmp_path: Path) -> None:
    """Else a requeued job could run twice at once: once orphaned, once again."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lakecache.compute.backends import open_backend, LaunchSpec\n"
        "from lakecache.compute.model import Resources\n"
        "w = Path(sys.argv[1]); w.mkdir()\n"
        "b = open_backend('local')\n"
        "spec = LaunchSpec(1, 1, ('sh', '-c', 'echo $$; exec sleep 60'), {'PATH': '/usr/bin:/bin'},"
        " w, w / 'job.log', Resources())\n"
        "b.submit(spec)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    agent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "w")],
        env={"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert agent.stdout is not None
    assert agent.stdout.readline().strip() == "started"
    log = tmp_path / "w" / "job.log"
    deadline = time.monotonic() + 10
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    job_pid = int(log.read_text().split()[0])
    assert _alive(job_pid)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    agent.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(job_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(job_pid)


def test_an_unknown_backend_says_which_exist() -> None:
    from lakecache.compute.backends import BackendError

    with pytest.raises(BackendError, match="'slurm'") as info:
        open_backend("slurm")
    assert "local" in info.value.hint
