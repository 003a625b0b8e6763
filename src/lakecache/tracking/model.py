"""What tracking records, as values: runs, metric points, series, inputs, artifacts.

Names are checked here, at the edge, once: a metric, param or tag key is 1 to
250 characters of valid UTF-8 without control characters, and a value fits its
column. Everything past this module trusts them.

Metric values in MLflow's API and the JSON of our read routes are numbers, or the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (standard JSON has no such
numbers); :func:`encode_value` and :func:`decode_value` convert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lakecache.errors import UserError
from lakecache.tracking.tables import KEY_MAX, PARAM_VALUE_MAX, RUN_STATES, TAG_VALUE_MAX

RunStatus = Literal["running", "finished", "failed", "killed"]
#: One metric point as logged: (key, value, step, timestamp in epoch milliseconds).
Point = tuple[str, float, int, int]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def check_key(kind: str, key: object) -> str:
    """``key`` as a metric/param/tag name, or a UserError that says what is wrong with it.

    Bytes are taken if they are UTF-8. Refused: empty names, names over 250
    characters, text that is not UTF-8 (lone surrogates from undecodable file
    names), control characters.
    """
    if isinstance(key, bytes | bytearray):
        raw = bytes(key)
        try:
            key = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"the {kind} name {raw[:40]!r} is not UTF-8",
                hint=f"Name the {kind} with UTF-8 text (decode it first).",
            ) from None
    if not isinstance(key, str):
        raise UserError(
            f"a {kind} name must be text, not {type(key).__name__}",
            hint=f"Pass the {kind} name as a str.",
        )
    if not key:
        raise UserError(f"a {kind} name is empty", hint=f"Give the {kind} a name.")
    if len(key) > KEY_MAX:
        raise UserError(
            f"the {kind} name {key[:40]!r}... is {len(key)} characters long (at most {KEY_MAX})",
            hint=f"Use at most {KEY_MAX} characters.",
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"the {kind} name {key[:40]!r} is not valid UTF-8 (it holds undecodable bytes)",
            hint=f"Name the {kind} with UTF-8 text.",
        ) from None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise UserError(
            f"the {kind} name {key[:40]!r} holds control characters",
            hint="Use printable characters only (no newlines, tabs or NUL).",
        )
    return key


def check_text_value(kind: str, key: str, value: object) -> str:
    """A param or tag value as stored: its text, checked for length and UTF-8."""
    limit = PARAM_VALUE_MAX if kind == "param" else TAG_VALUE_MAX
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise UserError(
            f"the value of {kind} {key!r} is {len(text)} characters long (at most {limit})",
            hint=f"Keep {kind} values under {limit} characters; log long text as an artifact.",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"the value of {kind} {key!r} is not valid UTF-8",
            hint="Pass UTF-8 text (decode bytes first).",
        ) from None
    return text


def check_metric_value(key: str, value: object) -> float:
    """``value`` as a float (NaN and infinities included), or a UserError."""
    if isinstance(value, float):
        return value
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(
            f"metric {key!r} got {type(value).__name__} {value!r:.40}, not a number",
            hint="Log numbers (int, float, or a scalar tensor: call .item() first).",
        ) from None


def encode_value(value: float) -> float | str:
    """A float for JSON: finite as itself, NaN and infinities as strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def decode_value(value: Any) -> float:
    """The inverse of :func:`encode_value` (also takes numbers given as text)."""
    if isinstance(value, str):
        special = _SPECIAL.get(value)
        return special if special is not None else float(value)
    return float(value)


def check_status(status: str) -> RunStatus:
    if status not in RUN_STATES:
        raise UserError(
            f"unknown run status {status!r}", hint=f"Use one of: {', '.join(RUN_STATES)}."
        )
    return status  # type: ignore[return-value]


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment: a named group of runs. ``owner`` empty: shared with every user."""

    id: int
    name: str
    owner: str
    created_at: datetime
    run_count: int = 0


@dataclass(frozen=True)
class RunRecord:
    """One run: who, what, which code and environment, and how it ended."""

    id: int
    experiment_id: int
    experiment: str
    name: str
    user: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    command: list[str]
    env: dict[str, Any]
    code: dict[str, Any]
    job_id: int | None = None
    job_attempt: int | None = None
    flow_run: str | None = None
    flow_task: str | None = None
    exit_code: int | None = None
    #: The owner of the run's experiment ("" for a shared one): who else sees the run.
    experiment_owner: str = ""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None while it runs."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RunSummary:
    """A run as a row of the runs table: the record, its params and latest metrics."""

    run: RunRecord
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class RunPage:
    """One page of :meth:`TrackingStore.list_runs`, and how many runs match in all."""

    items: list[RunSummary]
    total: int


@dataclass(frozen=True)
class RunFilter:
    """A condition on runs: ``field`` is ``param:K``, ``metric:K``, ``tag:K``, ``status``,
    ``name`` or ``user``; ``op`` one of ``= != < <= > >=`` or ``~`` (contains)."""

    field: str
    op: str
    value: str | float

    @classmethod
    def parse(cls, text: str) -> RunFilter:
        """``metric:loss<0.5``, ``param:lr=0.1``, ``status=finished``, ``name~resnet``."""
        for op in ("<=", ">=", "!=", "=", "<", ">", "~"):
            head, sep, tail = text.partition(op)
            if sep and head:
                value: str | float = tail
                if head.startswith("metric:"):
                    try:
                        value = decode_value(tail)
                    except ValueError:
                        raise UserError(
                            f"filter {text!r}: {tail!r} is not a number",
                            hint="Compare metrics with numbers: metric:loss<0.5",
                        ) from None
                return cls(head.strip(), op, value)
        raise UserError(
            f"cannot read the filter {text!r}",
            hint="Write FIELD OP VALUE, e.g. metric:loss<0.5, param:lr=0.1, status=finished.",
        )


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    ts: int


@dataclass(frozen=True)
class Series:
    """A metric's points for a plot. ``points_total`` is what is stored; when it exceeds
    the buckets asked for, each row is one bucket of steps: its first step, mean, min
    and max (the min and max keep spikes visible however far it is zoomed out)."""

    key: str
    points_total: int
    downsampled: bool
    steps: list[int]
    values: list[float]
    mins: list[float]
    maxs: list[float]
    timestamps: list[int]

    def encoded(self) -> dict[str, list[float | str]]:
        """``values``, ``mins`` and ``maxs`` for JSON (NaN and infinities as strings,
        :func:`encode_value`): the one encoding of the API's series and the plots'."""
        values = [encode_value(v) for v in self.values]
        if not self.downsampled:
            return {"values": values, "mins": values, "maxs": values}
        return {
            "values": values,
            "mins": [encode_value(v) for v in self.mins],
            "maxs": [encode_value(v) for v in self.maxs],
        }


@dataclass(frozen=True)
class InputRecord:
    """A dataset commit a run read, and whether it came from a ready cache."""

    dataset: str
    commit_id: str
    source: str
    hit: bool | None
    fill_seconds: float | None
    files: int
    bytes: int
    reader: str
    at: datetime


@dataclass(frozen=True)
class ArtifactRecord:
    path: str
    digest: str
    size: int
    created_at: datetime


#: One key's points, column by column: steps, epoch-millisecond times, values.
Columns = tuple[list[int], list[int], list[float]]


def columns_of(points: Iterable[Point]) -> dict[str, Columns]:
    """``(key, value, step, ts)`` points as columns per key, in the order given."""
    out: dict[str, Columns] = {}
    for key, value, step, ts in points:
        cols = out.get(key)
        if cols is None:
            cols = out[key] = ([], [], [])
        cols[0].append(step)
        cols[1].append(ts)
        cols[2].append(value)
    return out


@dataclass
class Batch:
    """What one flush carries to the store: params, tags, metric and system points.

    Points are kept column by column per key (:data:`Columns`), as the SDK's
    buffer collects them and the store packs them: no per-point objects on the
    way. On the wire (our API and spool files) values are JSON numbers, with
    NaN and infinities as Python's ``json`` writes them (``NaN``, ``Infinity``).
    """

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Columns] = field(default_factory=dict)
    system: dict[str, Columns] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        metrics: Iterable[Point] = (),
        system: Iterable[Point] = (),
    ) -> Batch:
        """A batch from ``(key, value, step, ts)`` points (tests, MLflow's log-batch)."""
        return cls(dict(params or {}), dict(tags or {}), columns_of(metrics), columns_of(system))

    def points(self) -> int:
        return sum(len(c[0]) for c in self.metrics.values()) + sum(
            len(c[0]) for c in self.system.values()
        )

    def __len__(self) -> int:
        return len(self.params) + len(self.tags) + self.points()

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "tags": self.tags,
            "metrics": {k: list(c) for k, c in self.metrics.items()},
            "system": {k: list(c) for k, c in self.system.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        """Parse and check a batch from the wire (every name, and every column's shape)."""

        def columns(obj: Any, kind: str) -> dict[str, Columns]:
            out: dict[str, Columns] = {}
            if not obj:
                return out
            if not isinstance(obj, dict):
                raise UserError(f"{kind} points must be an object of key -> [steps, times, values]")
            for key, cols in obj.items():
                try:
                    steps, times, vals = cols
                    steps = [int(x) for x in steps]
                    times = [int(x) for x in times]
                    vals = [decode_value(x) for x in vals]
                except (TypeError, ValueError):
                    raise UserError(
                        f"{kind} {str(key)[:40]!r}: expected [steps, times, values] of numbers"
                    ) from None
                if not len(steps) == len(times) == len(vals):
                    raise UserError(f"{kind} {str(key)[:40]!r}: columns of unequal length")
                if any(not _INT64_MIN <= x <= _INT64_MAX for x in (*steps, *times)):
                    raise UserError(
                        f"{kind} {str(key)[:40]!r}: a step or time outside 64-bit integers"
                    )
                out[check_key(kind, key)] = (steps, times, vals)
            return out

        params = data.get("params") or {}
        tags = data.get("tags") or {}
        if not isinstance(params, dict) or not isinstance(tags, dict):
            raise UserError("params and tags must be JSON objects of key -> value")
        return cls(
            params={
                check_key("param", k): check_text_value("param", k, v) for k, v in params.items()
            },
            tags={check_key("tag", k): check_text_value("tag", k, v) for k, v in tags.items()},
            metrics=columns(data.get("metrics"), "metric"),
            system=columns(data.get("system"), "system metric"),
        )
