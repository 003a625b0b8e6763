"""The backend protocol: submit a prepared attempt, poll it, cancel it, find its log.

A backend is told everything in a :class:`LaunchSpec` (the runner has already
made the inputs ready and the folders); it never touches the catalog. Calls come
from the runner's threads: one thread per attempt, which submits, polls and, if
asked, cancels; implementations must be safe for that.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lakecache.compute.model import Resources
from lakecache.errors import LakecacheError


class BackendError(LakecacheError):
    """The backend refused or lost a job: its message says why (the job fails with it)."""


@dataclass(frozen=True)
class LaunchSpec:
    """One attempt of one job, ready to start."""

    job_id: int
    attempt: int
    command: tuple[str, ...]
    #: The job's whole environment (the runner adds LAKECACHE_INPUT_* and LAKECACHE_OUTPUTS).
    env: Mapping[str, str]
    #: The attempt's folder: the working directory, holding ``outputs/``.
    workdir: Path
    #: Where stdout and stderr go, interleaved as written.
    log_path: Path
    slot: Resources
    image: str | None = None
    #: Read-only inputs: the path the job is told -> the folder on this machine.
    inputs: Mapping[str, Path] = field(default_factory=dict)
    #: Seconds the attempt may run, if it has a limit (backends that can enforce it do).
    timeout_seconds: int | None = None

    @property
    def handle(self) -> str:
        return f"job-{self.job_id}-{self.attempt}"


@dataclass(frozen=True)
class Exit:
    """How an attempt ended: the exit code (a signal N reads as 128 + N) and why, if known."""

    code: int
    reason: str | None = None


class Backend(Protocol):
    """What the runner asks of an engine that runs commands."""

    name: str

    def submit(self, spec: LaunchSpec) -> str:
        """Start the attempt; returns its handle. Raises BackendError when refused
        (a command that does not exist, an engine that is down), with the engine's message."""
        ...

    def poll(self, handle: str) -> Exit | None:
        """None while it runs, else how it ended."""
        ...

    def cancel(self, handle: str) -> None:
        """Stop it (politely, then by force); poll then reports the end. Idempotent."""
        ...

    def logs(self, handle: str) -> Path:
        """The file its stdout and stderr are written to."""
        ...


class ProcessTable:
    """What the backends that run one local process per attempt (``local``, and
    ``container``'s attached engine client) keep: the process and the log file of each
    handle, behind one lock. Safe to use from several threads."""

    def __init__(self, kind: str) -> None:
        #: Said in errors: "no <kind> job ... on this machine".
        self.kind = kind
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Path] = {}
        self._lock = threading.Lock()

    def add(self, spec: LaunchSpec, proc: subprocess.Popen[bytes]) -> str:
        """Remember ``spec``'s process and log; returns its handle."""
        with self._lock:
            self._procs[spec.handle] = proc
            self._logs[spec.handle] = spec.log_path
        return spec.handle

    def proc(self, handle: str) -> subprocess.Popen[bytes]:
        """The process of ``handle``; BackendError if this machine started none."""
        with self._lock:
            proc = self._procs.get(handle)
        if proc is None:
            raise BackendError(f"no {self.kind} job {handle!r} on this machine")
        return proc

    def log(self, handle: str) -> Path:
        """The log file of ``handle``; BackendError if this machine started none."""
        with self._lock:
            path = self._logs.get(handle)
        if path is None:
            raise BackendError(f"no {self.kind} job {handle!r} on this machine")
        return path

    def exit_code(self, handle: str) -> int | None:
        """The process's exit code (None while it runs; a signal N reads as 128 + N)."""
        code = self.proc(handle).poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code


def signal_reason(code: int) -> str | None:
    """``killed by SIGKILL`` for an exit code of 128 + a signal's number, else None."""
    try:
        return f"killed by {signal.Signals(code - 128).name}" if code > 128 else None
    except ValueError:
        return None
