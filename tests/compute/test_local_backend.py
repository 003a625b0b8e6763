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

from lakecache.compute.backends import Backend, BackendError, LaunchSpec, local, open_backend
from lakecache.compute.model import Resources

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


@pytest.mark.parametrize("how", ["setpriv", "preexec_fn"])
def test_a_job_dies_with_the_agent_that_started_it(tmp_path: Path, how: str) -> None:
    """Else a requeued job could run twice at once: once orphaned, once again. Whether
    the death signal is set by setpriv (vfork) or, without one, by a preexec_fn."""
    if how == "setpriv":
        assert local._setpriv() is not None, "util-linux setpriv with --pdeathsig is missing"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import lakecache.compute.backends.local as local\n"
        "if sys.argv[2] == 'preexec_fn': local._setpriv = lambda: None\n"
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
        [sys.executable, "-c", script, str(tmp_path / "w"), how],
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


def test_a_missing_or_unrunnable_program_is_a_clear_error_not_an_exit_code(
    tmp_path: Path,
) -> None:
    """The program is looked up before setpriv runs it, as exec would have."""
    backend = open_backend("local")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "plain").write_text("#!/bin/sh\necho hi\n")  # not executable
    (bin_dir / "tool").write_text('#!/bin/sh\necho tool-ran "$@"\n')
    (bin_dir / "tool").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def submit(*command: str) -> str:
        work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
        work.mkdir()
        spec = LaunchSpec(1, 1, command, env, work, work / "job.log", Resources())
        return backend.submit(spec)

    for command, said in [
        (("no-such-program-here",), "command not found: 'no-such-program-here'"),
        (("./nothing-here",), "command not found: './nothing-here'"),
        (("plain",), "command not executable: 'plain'"),
        ((str(bin_dir / "plain"),), "command not executable"),
    ]:
        with pytest.raises(BackendError) as info:
            submit(*command)
        assert info.value.message == said or (said in info.value.message)
    handle = submit("tool", "a b", "c")  # found on the job's own PATH, arguments kept
    deadline = time.monotonic() + 30
    while (end := backend.poll(handle)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert end is not None and end.code == 0
    assert backend.logs(handle).read_text() == "tool-ran a b c\n"


def test_an_unknown_backend_says_which_exist() -> None:
    with pytest.raises(BackendError, match="'slurm'") as info:
        open_backend("slurm")
    assert "local" in info.value.hint
