"""The ``local`` backend: the job's command as a process on the agent's machine.

The process is the leader of its own session, so cancel stops it and whatever
it started (the whole process group). It is also told to die with the runner
thread that started it (Linux ``PR_SET_PDEATHSIG``): an agent that is killed
takes its jobs with it, so a job that the catalog requeues after the agent went
silent can never run twice at once.

The death signal is set by util-linux's ``setpriv --pdeathsig`` in front of the
command (it sets it, then becomes the command: same process), so the process is
started by vfork: about 2 ms, where a fork of a large agent running a Python
``preexec_fn`` takes tens of milliseconds of its CPU. Without such a ``setpriv``
the backend falls back to the ``preexec_fn``.

The cpu/memory/gpu budget is the compute resource's capacity, which admission
counts; this backend does not cage a process beyond hiding GPUs from a job that
asked for none (``CUDA_VISIBLE_DEVICES`` empty).
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lakecache.compute.backends.base import (
    BackendError,
    Exit,
    LaunchSpec,
    ProcessTable,
    signal_reason,
)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: no Python objects shared with threads.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.lru_cache(maxsize=1)
def _setpriv() -> str | None:
    """util-linux's setpriv if it can set a parent-death signal (2.33 and later), else None."""
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in done.stdout else None


def _resolve(command: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """The program ``command`` runs, as a path (looked up on the job's PATH when it has no
    slash): what exec would find, checked here so that a missing or non-executable
    program is a clear error, not an exit code of the wrapper in front of it."""
    program = command[0]
    if "/" in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not path.is_file():
            raise FileNotFoundError(program)
        if not os.access(path, os.X_OK):
            raise PermissionError(program)
        return str(path)
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        if any(
            (Path(d) / program).is_file() for d in env.get("PATH", os.defpath).split(os.pathsep)
        ):
            raise PermissionError(program)
        raise FileNotFoundError(program)
    return found


class LocalBackend:
    """Processes on this machine. Safe to use from several threads."""

    name = "local"

    def __init__(self, grace: float = 5.0) -> None:
        #: Seconds a cancelled job gets after SIGTERM before SIGKILL.
        self.grace = grace
        self._table = ProcessTable("local")

    def submit(self, spec: LaunchSpec) -> str:
        env = dict(spec.env)
        if spec.slot.gpu == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            try:
                # Dies with its runner (see the module docstring): set by setpriv in front
                # of the command where it can (vfork), else by a preexec_fn (a full fork).
                setpriv = _setpriv()
                argv = list(spec.command)
                preexec: Callable[[], None] | None = _die_with_parent
                if setpriv is not None:
                    program = _resolve(spec.command, env, spec.workdir)
                    argv = [setpriv, "--pdeathsig", "KILL", "--", program, *spec.command[1:]]
                    preexec = None
                proc = subprocess.Popen(
                    argv,
                    cwd=spec.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except FileNotFoundError:
                raise BackendError(
                    f"command not found: {spec.command[0]!r}",
                    hint="Give a program on the agent's PATH, or its full path.",
                ) from None
            except PermissionError:
                raise BackendError(
                    f"command not executable: {spec.command[0]!r}",
                    hint="Make the file executable, or run it through its interpreter.",
                ) from None
            except OSError as exc:
                raise BackendError(f"cannot start {spec.command[0]!r}: {exc.strerror}") from exc
        return self._table.add(spec, proc)

    def poll(self, handle: str) -> Exit | None:
        code = self._table.exit_code(handle)
        if code is None:
            return None
        killed = self._table.proc(handle).returncode < 0
        return Exit(code, signal_reason(code) if killed else None)

    def cancel(self, handle: str) -> None:
        proc = self._table.proc(handle)
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        except ProcessLookupError:
            proc.wait()  # it ended between the poll and the signal

    def logs(self, handle: str) -> Path:
        return self._table.log(handle)
