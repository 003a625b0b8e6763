"""The components' line to run tracking, and a local record that is always written.

Every figure a component logs goes to ``metrics.jsonl`` in its output
folder (one JSON object a line), and to the current :mod:`lakecache.tracking`
run: inside a job or flow task the task's own run (nothing to set up),
elsewhere a run the caller started, or a new one when asked for
(``--experiment``). Tracking is a convenience here, never a reason for
training to stop: a call that fails is logged once and tracking is off for
the rest of the run, while the local record goes on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.errors import LakecacheError

if TYPE_CHECKING:
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.library.track")

# What a tracking call may raise that must not end a training run: the
# server or catalog down, a disk full under the spill file, or an SDK whose
# signature moved under us.
_TRACKING_FAILURES = (LakecacheError, OSError, TypeError, AttributeError, ValueError)


class Tracker:
    """Logs params, metrics and artifacts to ``metrics.jsonl`` and, when it exists, a run."""

    def __init__(
        self,
        out: Path,
        *,
        name: str,
        experiment: str | None = None,
        start_new: bool = False,
        settings: Settings | None = None,
    ) -> None:
        """Log to ``out/metrics.jsonl`` and to the current tracking run.

        The current run is the job's or flow task's own (its runner says which),
        or one the caller started around this call. With ``start_new`` (or an
        ``experiment``) and no current run, a run named ``name`` is started in
        ``experiment`` and ended by :meth:`close`.
        """
        self.out = out
        self._file = (out / "metrics.jsonl").open("a", buffering=1 << 16)
        self.run: Any = None
        self._own_run = False
        try:
            from lakecache import tracking
        except ImportError:
            return
        try:
            self.run = tracking.current()
            if self.run is None and (start_new or experiment):
                self.run = tracking.start(experiment, name, settings=settings)
                self._own_run = True
        except _TRACKING_FAILURES as exc:
            log.warning("tracking is off for this run: %s", exc)
            self.run = None

    @property
    def tracking(self) -> bool:
        """Whether a tracking run receives the figures."""
        return self.run is not None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            getattr(self.run, method)(*args, **kwargs)
        except _TRACKING_FAILURES as exc:
            log.warning("tracking is off for the rest of this run (%s failed: %s)", method, exc)
            self.run = None

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"params": {k: _plain(v) for k, v in params.items()}})
        self._call("log_params", {k: _plain(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._write({"step": step, "metrics": metrics})
        self._call("log_metrics", metrics, step=step)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def log_artifact(self, path: Path) -> None:
        self._write({"artifact": str(path)})
        self._call("log_artifact", str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._write({"tags": tags})
        self._call("set_tags", tags)

    def _write(self, record: dict[str, Any]) -> None:
        record["time"] = round(time.time(), 3)
        self._file.write(json.dumps(record, default=_json_default) + "\n")

    def flush(self) -> None:
        """Write the local record out (the tracking SDK flushes itself)."""
        self._file.flush()

    def close(self) -> None:
        """Flush the local record and end the run this tracker started (not a job's own)."""
        self._file.close()
        if self.run is not None:
            self._call("flush")
            if self._own_run:
                self._call("end")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return str(v)
