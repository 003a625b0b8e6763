"""The contract every job backend keeps. A backend opts in with one class:

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend(self) -> Backend: ...

Commands are POSIX shell, which every backend's environment has.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lakecache.compute.backends import Backend, BackendError, Exit, LaunchSpec
from lakecache.compute.model import Resources


def make_spec(tmp_path: Path, *command: str, **kw: object) -> LaunchSpec:
    workdir = tmp_path / "attempt"
    (workdir / "outputs").mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LAKECACHE_OUTPUTS": str(workdir / "outputs")}
    env.update(kw.pop("env", {}))  # type: ignore[arg-type]
    return LaunchSpec(
        job_id=int(kw.pop("job_id", 1)),  # type: ignore[call-overload]
        attempt=1,
        command=command,
        env=env,
        workdir=workdir,
        log_path=workdir / "job.log",
        slot=Resources(1000, 10**9),
        **kw,  # type: ignore[arg-type]
    )


def wait_exit(backend: Backend, handle: str, timeout: float = 30.0) -> Exit:
    deadline = time.monotonic() + timeout
    while (end := backend.poll(handle)) is None:
        assert time.monotonic() < deadline, f"{handle} still running after {timeout} s"
        time.sleep(0.02)
    return end


class BackendContract:
    """Tests every backend passes; subclasses provide the ``backend`` fixture."""

    def test_a_command_that_succeeds_exits_zero(self, backend: Backend, tmp_path: Path) -> None:
        handle = backend.submit(make_spec(tmp_path, "true"))
        assert wait_exit(backend, handle) == Exit(0)

    def test_the_exit_code_comes_back(self, backend: Backend, tmp_path: Path) -> None:
        handle = backend.submit(make_spec(tmp_path, "sh", "-c", "exit 3"))
        assert wait_exit(backend, handle).code == 3

    def test_a_command_that_does_not_exist_is_refused_with_the_reason(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        with pytest.raises(BackendError, match="no-such-program-here"):
            handle = backend.submit(make_spec(tmp_path, "no-such-program-here"))
            # An engine that only finds out when it runs reports it as the exit instead.
            end = wait_exit(backend, handle)
            raise BackendError(f"{end.reason}: no-such-program-here (exit {end.code})")

    def test_stdout_and_stderr_go_to_the_log(self, backend: Backend, tmp_path: Path) -> None:
        handle = backend.submit(make_spec(tmp_path, "sh", "-c", "echo to-out; echo to-err >&2"))
        wait_exit(backend, handle)
        text = backend.logs(handle).read_text()
        assert "to-out" in text and "to-err" in text

    def test_the_environment_and_outputs_folder_reach_the_job(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        spec = make_spec(
            tmp_path,
            "sh",
            "-c",
            'echo "$GREETING" > "$LAKECACHE_OUTPUTS/said"',
            env={"GREETING": "hi"},
        )
        assert wait_exit(backend, backend.submit(spec)).code == 0
        assert (spec.workdir / "outputs" / "said").read_text() == "hi\n"

    def test_inputs_are_readable_at_the_path_the_job_is_told(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        data = tmp_path / "input"
        data.mkdir()
        (data / "a.txt").write_text("payload")
        spec = make_spec(
            tmp_path,
            "sh",
            "-c",
            'cat "$LAKECACHE_INPUT_X/a.txt" > "$LAKECACHE_OUTPUTS/copy"',
            env={"LAKECACHE_INPUT_X": str(data)},
            inputs={str(data): data},
        )
        assert wait_exit(backend, backend.submit(spec)).code == 0
        assert (spec.workdir / "outputs" / "copy").read_text() == "payload"

    def test_cancel_stops_a_running_job(self, backend: Backend, tmp_path: Path) -> None:
        handle = backend.submit(make_spec(tmp_path, "sleep", "60"))
        time.sleep(0.2)
        assert backend.poll(handle) is None
        t0 = time.monotonic()
        backend.cancel(handle)
        end = wait_exit(backend, handle, timeout=10)
        assert end.code != 0 and time.monotonic() - t0 < 10
        backend.cancel(handle)  # idempotent
