"""Value objects of compute: sizes, templates, queues, jobs, inputs and timelines.

Parsed at the edge (CLI, SDK), trusted inside. CPU is counted in millicores so
that sums are exact; memory in bytes; GPUs and named resources in units.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lakecache.errors import UserError

#: How a job reads an input: from a cache at its site, or pulled from the lake for itself.
INPUT_MODES = ("cached", "stream")
#: Attempts a job gets when its agent dies under it, before it fails (first run included).
DEFAULT_MAX_ATTEMPTS = 2
#: States a job can leave no more.
FINAL_STATES = ("succeeded", "failed", "cancelled")
#: States in which a job holds a slot of its compute resource's capacity.
HOLDING_STATES = ("placed", "running")
#: What a queue's jobs do about a site whose agent is down.
AGENT_DOWN_POLICIES = ("wait", "move")
#: The longest time limit a job or queue may set: 30 days, in seconds.
MAX_TIMEOUT_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Resources:
    """A size: what a compute resource has, a template offers, or a job asks for."""

    cpu_milli: int = 0
    memory: int = 0
    gpu: int = 0
    named: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory < 0 or self.gpu < 0:
            raise UserError(
                f"sizes cannot be negative: {self.describe()}",
                hint="Give cpu, memory and gpu as zero or more.",
            )
        for name, count in self.named.items():
            if count < 0:
                raise UserError(f"resource {name!r} cannot be negative ({count})")

    def __hash__(self) -> int:
        return hash((self.cpu_milli, self.memory, self.gpu, tuple(sorted(self.named.items()))))

    def fits_in(self, other: Resources) -> bool:
        """True if every amount here is at most the same amount in ``other``."""
        return (
            self.cpu_milli <= other.cpu_milli
            and self.memory <= other.memory
            and self.gpu <= other.gpu
            and all(n <= other.named.get(k, 0) for k, n in self.named.items())
        )

    def plus(self, other: Resources) -> Resources:
        named = dict(self.named)
        for k, n in other.named.items():
            named[k] = named.get(k, 0) + n
        return Resources(
            self.cpu_milli + other.cpu_milli,
            self.memory + other.memory,
            self.gpu + other.gpu,
            named,
        )

    def minus(self, other: Resources) -> Resources:
        """What is left of this after ``other`` (floored at zero: never a negative size)."""
        named = {k: max(n - other.named.get(k, 0), 0) for k, n in self.named.items()}
        return Resources(
            max(self.cpu_milli - other.cpu_milli, 0),
            max(self.memory - other.memory, 0),
            max(self.gpu - other.gpu, 0),
            named,
        )

    @property
    def cpu(self) -> float:
        return self.cpu_milli / 1000

    def describe(self) -> str:
        """``cpu 2, memory 4.0 GB, gpu 1, ssd 2``: for messages and tables."""
        parts = [f"cpu {self.cpu_milli / 1000:g}", f"memory {_bytes(self.memory)}"]
        if self.gpu:
            parts.append(f"gpu {self.gpu}")
        parts += [f"{k} {n}" for k, n in sorted(self.named.items())]
        return ", ".join(parts)

    def named_json(self) -> str:
        return json.dumps(dict(sorted(self.named.items())))

    def as_json(self) -> dict[str, Any]:
        """The exact form the API carries (millicores): :meth:`from_json` reads it back."""
        return {
            "cpu_milli": self.cpu_milli,
            "memory": self.memory,
            "gpu": self.gpu,
            "resources": dict(self.named),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Resources:
        return cls(
            int(d.get("cpu_milli") or 0),
            int(d.get("memory") or 0),
            int(d.get("gpu") or 0),
            {str(k): int(n) for k, n in dict(d.get("resources") or {}).items()},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu_milli / 1000,
            "memory": self.memory,
            "gpu": self.gpu,
            "resources": dict(self.named),
        }


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"  # pragma: no cover - the loop returns at TB


def parse_cpu(text: str | float | int) -> int:
    """Millicores from ``2``, ``0.5`` or ``500m``."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 1000 if s.endswith("m") else float(s)
    except ValueError:
        raise UserError(
            f"{text!r} is not a CPU amount", hint="Write cores such as 2 or 0.5, or 500m."
        ) from None
    if value < 0:
        raise UserError(f"CPU cannot be negative: {text!r}")
    return round(value * 1000)


def parse_named(items: list[str] | tuple[str, ...]) -> dict[str, int]:
    """``{"ssd": 2}`` from ``["ssd=2"]``."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9._/-]{0,63}", name.strip()):
            raise UserError(
                f"{item!r} is not a named resource", hint="Write NAME=COUNT, e.g. ssd=2."
            )
        try:
            out[name.strip()] = int(count)
        except ValueError:
            raise UserError(
                f"{item!r}: the count must be a whole number", hint="Write NAME=COUNT, e.g. ssd=2."
            ) from None
    return out


@dataclass(frozen=True)
class InputSpec:
    """One dataset input of a job: a commit, resolved at submit, and how the job reads it."""

    name: str  # the env suffix: LAKECACHE_INPUT_<NAME>
    dataset: str
    ref: str
    commit_id: str
    mode: str = "cached"

    @property
    def env_var(self) -> str:
        return "LAKECACHE_INPUT_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "ref": self.ref,
            "commit_id": self.commit_id,
            "mode": self.mode,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> InputSpec:
        return cls(d["name"], d["dataset"], d["ref"], d["commit_id"], d.get("mode", "cached"))


def parse_input(text: str) -> tuple[str, str, str, str]:
    """``(name, dataset, ref, mode)`` from ``[name=]xray@v1[:cached|:stream]``."""
    spec = text.strip()
    name = ""
    if "=" in spec.split("@", 1)[0]:
        name, spec = spec.split("=", 1)
    mode = "cached"
    if ":" in spec:
        spec, mode = spec.rsplit(":", 1)
    if mode not in INPUT_MODES:
        raise UserError(
            f"input {text!r}: unknown mode {mode!r}",
            hint="Write DATASET@REF, DATASET@REF:cached or DATASET@REF:stream.",
        )
    dataset, _, ref = spec.partition("@")
    if not dataset:
        raise UserError(f"input {text!r} names no dataset", hint="Write DATASET@REF, e.g. xray@v1.")
    return name or dataset, dataset, ref or "main", mode


@dataclass(frozen=True)
class TemplateRecord:
    """A named size on a compute resource: what one job slot there is."""

    id: int
    name: str
    compute: str
    compute_id: int
    site: str
    backend: str
    size: Resources
    image: str | None


@dataclass(frozen=True)
class QueueRecord:
    """An ordered list of templates that jobs fall back along."""

    id: int
    name: str
    policy: str
    pending_deadline_seconds: int | None
    templates: tuple[str, ...]
    #: The time limit of its jobs that set none (None: no limit).
    job_timeout_seconds: int | None = None
    #: What its jobs do when a site's agent is down: ``wait`` for it, or ``move`` on to
    #: the next template whose site has a live agent.
    agent_down: str = "wait"


@dataclass(frozen=True)
class CapacityRecord:
    """A compute resource's capacity, what its placed and running jobs hold, and its version."""

    compute_id: int
    compute: str
    site: str
    backend: str
    total: Resources
    used: Resources
    admissions: int
    jobs: int

    @property
    def free(self) -> Resources:
        return self.total.minus(self.used)


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's timeline."""

    at: datetime
    kind: str
    detail: str
    attempt: int


@dataclass(frozen=True)
class TemplateVerdict:
    """Why one template of the queue was, or was not, chosen for a job."""

    template: str
    site: str
    verdict: str  # chosen | full | too small | no cache | lower in order | policy
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "template": self.template,
            "site": self.site,
            "verdict": self.verdict,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class JobRecord:
    """A job as the catalog knows it."""

    id: int
    queue: str
    state: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    inputs: tuple[InputSpec, ...]
    image: str | None
    request: Resources
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None
    template: str | None
    compute: str | None
    site: str | None
    slot: Resources
    placement: tuple[TemplateVerdict, ...]
    attempt: int
    max_attempts: int
    worker: str | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    exit_code: int | None
    reason: str | None
    workdir: str | None
    #: Seconds an attempt may run before it is stopped and fails ("timed out after N s").
    timeout_seconds: int | None = None
    #: Digest of the manifest of its collected outputs (in the lake), once collected.
    outputs_manifest: str | None = None
    #: How many files its collected outputs hold, and their bytes.
    outputs_files: int = 0
    outputs_bytes: int = 0

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobRecord:
        """The one converter of jobs: from the API's JSON of a job, or the store's decoded
        row (the same shape). Times may be datetimes or ISO strings; sizes are
        :meth:`Resources.as_json` objects; inputs and placement lists of objects."""
        return cls(
            id=int(d["id"]),
            queue=str(d["queue"]),
            state=str(d["state"]),
            command=tuple(d["command"]),
            env=dict(d["env"]),
            inputs=tuple(InputSpec.from_dict(i) for i in d["inputs"]),
            image=d["image"],
            request=Resources.from_json(d["request"]),
            submitted_by=str(d["submitted_by"]),
            created_at=_required_time(d["created_at"]),
            updated_at=_required_time(d["updated_at"]),
            deadline_at=_time(d.get("deadline_at")),
            template=d.get("template"),
            compute=d.get("compute"),
            site=d.get("site"),
            slot=Resources.from_json(d["slot"]),
            placement=tuple(TemplateVerdict(**v) for v in d.get("placement") or ()),
            attempt=int(d["attempt"]),
            max_attempts=int(d["max_attempts"]),
            worker=d.get("worker"),
            heartbeat_at=_time(d.get("heartbeat_at")),
            cancel_requested=bool(d.get("cancel_requested")),
            exit_code=d.get("exit_code"),
            reason=d.get("reason"),
            workdir=d.get("workdir"),
            timeout_seconds=d.get("timeout_seconds"),
            outputs_manifest=d.get("outputs_manifest"),
            outputs_files=int(d.get("outputs_files") or 0),
            outputs_bytes=int(d.get("outputs_bytes") or 0),
        )


def _time(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _required_time(value: datetime | str) -> datetime:
    out = _time(value)
    assert out is not None
    return out


@dataclass(frozen=True)
class OutputFile:
    """One file of a job's collected outputs: where it was under the outputs folder, and
    the blob in the lake that holds its bytes (content-addressed)."""

    path: str
    digest: str
    size: int
    mode: int = 0o644

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "size": self.size, "mode": self.mode}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputFile:
        return cls(str(d["path"]), str(d["digest"]), int(d["size"]), int(d.get("mode", 0o644)))


def parse_timeout(seconds: int | float | None) -> int | None:
    """A time limit in whole seconds (None: no limit); refused unless 1 s to 30 days."""
    if seconds is None:
        return None
    value = int(seconds)
    if value < 1 or value > MAX_TIMEOUT_SECONDS:
        raise UserError(
            f"a time limit must be from 1 s to 30 days, not {seconds!r} s",
            hint="Give it as a duration, e.g. --timeout 90s, 30m or 2h.",
        )
    return value


@dataclass(frozen=True)
class JobSpec:
    """One job of a batch (:meth:`~lakecache.compute.store.ComputeStore.submit_many`):
    everything :meth:`submit` takes but the submitter and the time, which the batch shares.
    Inputs are resolved to commits already."""

    queue: str
    command: tuple[str, ...]
    request: Resources
    inputs: tuple[InputSpec, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_seconds: int | None = None


class BatchRefusedError(UserError):
    """A job of a batch was refused: no job of the batch was submitted. ``index`` is the
    refused job's position in the batch (its message starts with it too)."""

    def __init__(self, index: int, total: int, refused: UserError) -> None:
        super().__init__(f"job {index + 1} of {total}: {refused.message}", hint=refused.hint)
        self.index = index
        self.refused = refused
