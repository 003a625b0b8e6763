"""The backend protocol: submit a prepared attempt, poll it, cancel it, find its log.

A backend is told everything in a :class:`LaunchSpec` (the runner has already
made the inputs ready and the folders); it never touches the catalog. Calls come
from the runner's threads: one thread per attempt, which submits, polls and, if
asked, cancels; implementations must be safe for that.
"""

from __future__ import annotations

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
