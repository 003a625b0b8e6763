"""Attempt-lifecycle hooks: what other parts of lakecache do beside each job attempt.

The job runner knows nothing of what watches its attempts (tracking records a run
per attempt); it calls the hooks registered here at each step of an attempt:

1. :meth:`AttemptHook.begin` once the attempt is claimed, with an
   :class:`AttemptContext`; it returns an :class:`AttemptObserver` (or None to
   sit this attempt out);
2. :meth:`AttemptObserver.env` for the variables the job gets (before it starts);
3. :meth:`AttemptObserver.on_input` as each input is ready;
4. :meth:`AttemptObserver.on_start` once the command runs;
5. :meth:`AttemptObserver.on_end` once, when the attempt ends, whatever ended it
   (``cancelled`` for one given back or stopped).

A hook may also have ``warm()``: a runner calls it once, on a thread of its own, as
it starts (before its first attempt), for one-time work of the process (tracking
reads the environment it records) that no attempt should wait for.

Hooks are found as entry points of the group ``lakecache.attempt_hooks`` (so a
package adds one without compute importing it; lakecache's own tracking is one),
plus any :func:`register`-ed in this process. A hook must never fail a job: the
runner logs and ignores what one raises, and a hook keeps slow work (network,
subprocesses) off the path to the command's start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lakecache.compute.model import InputSpec, JobRecord

log = logging.getLogger("lakecache.jobs")

#: The entry-point group hooks are registered under (pyproject.toml).
ENTRY_POINT_GROUP = "lakecache.attempt_hooks"


@dataclass(frozen=True)
class AttemptContext:
    """One attempt as its runner starts it."""

    #: The runner's hub (its catalog, lake and settings; logged in when ``remote``).
    hub: Any
    job: JobRecord
    attempt: int
    #: The attempt's own folder: ``job.log``, ``outputs/``, room for a hook's files.
    workdir: Path
    site: str
    #: Whether the runner works through a server (no catalog of its own).
    remote: bool
    #: The image it runs in (the job's or its template's), if any.
    image: str | None


class AttemptObserver(Protocol):
    """What a hook does for one attempt. Every method may be called whatever happened
    before; ``on_end`` is called once."""

    def env(self) -> Mapping[str, str]: ...

    def on_input(self, spec: InputSpec, seconds: float, *, hit: bool | None) -> None: ...

    def on_start(self) -> None: ...

    def on_end(self, state: str, exit_code: int | None) -> None: ...


class AttemptHook(Protocol):
    def begin(self, ctx: AttemptContext) -> AttemptObserver | None: ...


_registered: list[AttemptHook] = []
_loaded: list[AttemptHook] | None = None
_lock = threading.Lock()


def register(hook: AttemptHook) -> Callable[[], None]:
    """Call ``hook`` for every attempt a runner of this process starts from now on.
    Returns a function that removes it."""
    with _lock:
        _registered.append(hook)

    def remove() -> None:
        with _lock:
            if hook in _registered:
                _registered.remove(hook)

    return remove


def hooks() -> list[AttemptHook]:
    """The hooks of the entry-point group (loaded once per process), then the registered."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _from_entry_points()
        return [*_loaded, *_registered]


def _from_entry_points() -> list[AttemptHook]:
    from importlib.metadata import entry_points

    found: list[AttemptHook] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop jobs
            log.warning("attempt hook %s (%s) not loaded: %s", ep.name, ep.value, exc)
    return found


#: The hooks whose warm-up has run, or runs, in this process.
_warmed: list[AttemptHook] = []


def warm_up() -> threading.Thread:
    """Call the ``warm()`` of every hook that has one and has not been warmed in this
    process yet, on a daemon thread; returns it (an agent warms up before it says it
    runs, and its runner's call then finds nothing left). What one raises is logged and
    ignored."""

    def run() -> None:
        todo = []
        for hook in hooks():
            with _lock:
                if any(hook is h for h in _warmed):
                    continue
                _warmed.append(hook)
            todo.append(hook)
        for hook in todo:
            step = getattr(hook, "warm", None)
            if step is None:
                continue
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a hook never fails the runner
                log.warning("attempt hook %r: warm-up failed: %s", hook, exc)

    thread = threading.Thread(target=run, name="lakecache-hooks-warm", daemon=True)
    thread.start()
    return thread


class Observers:
    """The observers of one attempt, each call made on every one, errors logged."""

    def __init__(self, ctx: AttemptContext, chosen: list[AttemptHook] | None = None) -> None:
        self.ctx = ctx
        self._all: list[AttemptObserver] = []
        for hook in hooks() if chosen is None else chosen:
            observer = self._safely(hook.begin, ctx)
            if observer is not None:
                self._all.append(observer)
        self._ended = False

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for o in self._all:
            out.update(self._safely(o.env) or {})
        return out

    def on_input(self, spec: InputSpec, seconds: float, *, hit: bool | None) -> None:
        for o in self._all:
            self._safely(lambda o=o: o.on_input(spec, seconds, hit=hit))

    def on_start(self) -> None:
        for o in self._all:
            self._safely(o.on_start)

    def on_end(self, state: str, exit_code: int | None) -> None:
        if self._ended:
            return
        self._ended = True
        for o in self._all:
            self._safely(lambda o=o: o.on_end(state, exit_code))

    def _safely(self, step: Callable[..., Any], *args: Any) -> Any:
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - a hook never fails the job
            log.warning(
                "job %d attempt %d: a hook failed: %s", self.ctx.job.id, self.ctx.attempt, exc
            )
            return None
