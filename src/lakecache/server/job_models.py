"""What the compute API (capacity, templates, queues, jobs) takes and gives.

The JSON mirrors :mod:`lakecache.compute.model`'s records, so the client
(:mod:`lakecache.client.jobs`) rebuilds the very records the CLI, the SDK and
the job runner use in direct mode. Sizes: ``cpu_milli`` (millicores, exact),
``memory`` in bytes, ``gpu`` and named ``resources`` in units.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from lakecache.compute.model import (
    MAX_TIMEOUT_SECONDS,
    CapacityRecord,
    JobEvent,
    JobRecord,
    OutputFile,
    QueueRecord,
    Resources,
    TemplateRecord,
)

_NAME = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
JobState = Literal["queued", "placed", "running", "succeeded", "failed", "cancelled"]


class SizeIO(BaseModel):
    cpu_milli: int = Field(default=0, ge=0, le=2**53)
    memory: int = Field(default=0, ge=0, le=2**62)
    gpu: int = Field(default=0, ge=0, le=2**31)
    resources: dict[str, int] = Field(default_factory=dict, max_length=64)

    def size(self) -> Resources:
        return Resources(self.cpu_milli, self.memory, self.gpu, dict(self.resources))

    @classmethod
    def of(cls, size: Resources) -> SizeIO:
        return cls(
            cpu_milli=size.cpu_milli,
            memory=size.memory,
            gpu=size.gpu,
            resources=dict(size.named),
        )


class CapacityOut(BaseModel):
    compute: str
    site: str
    backend: str
    total: SizeIO
    used: SizeIO
    free: SizeIO
    #: Jobs placed or running there now.
    jobs: int
    admissions: int

    @classmethod
    def of(cls, cap: CapacityRecord) -> CapacityOut:
        return cls(
            compute=cap.compute,
            site=cap.site,
            backend=cap.backend,
            total=SizeIO.of(cap.total),
            used=SizeIO.of(cap.used),
            free=SizeIO.of(cap.free),
            jobs=cap.jobs,
            admissions=cap.admissions,
        )


class TemplateIn(BaseModel):
    name: str = _NAME
    compute: str = Field(min_length=1, max_length=64)
    size: SizeIO
    image: str | None = Field(default=None, max_length=1024)


class TemplateOut(BaseModel):
    name: str
    compute: str
    site: str
    backend: str
    size: SizeIO
    image: str | None

    @classmethod
    def of(cls, tpl: TemplateRecord) -> TemplateOut:
        return cls(
            name=tpl.name,
            compute=tpl.compute,
            site=tpl.site,
            backend=tpl.backend,
            size=SizeIO.of(tpl.size),
            image=tpl.image,
        )


class QueueIn(BaseModel):
    name: str = _NAME
    templates: list[str] = Field(min_length=1, max_length=64)
    policy: Literal["order", "data"] = "order"
    pending_deadline_seconds: int | None = Field(default=None, ge=1, le=10**9)
    job_timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_SECONDS)
    agent_down: Literal["wait", "move"] = "wait"


class QueueOut(BaseModel):
    name: str
    templates: list[str]
    policy: str
    pending_deadline_seconds: int | None
    job_timeout_seconds: int | None = None
    agent_down: str = "wait"
    queued: int = 0
    running: int = 0


def queue_out(q: QueueRecord, queued: int = 0, running: int = 0) -> QueueOut:
    return QueueOut(
        name=q.name,
        templates=list(q.templates),
        policy=q.policy,
        pending_deadline_seconds=q.pending_deadline_seconds,
        job_timeout_seconds=q.job_timeout_seconds,
        agent_down=q.agent_down,
        queued=queued,
        running=running,
    )


class InputIO(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    dataset: str = Field(min_length=1, max_length=64)
    ref: str = Field(min_length=1, max_length=255)
    #: Set by the server at submit (the commit ``ref`` named then).
    commit_id: str = Field(default="", max_length=128)
    mode: Literal["cached", "stream"] = "cached"


class JobIn(BaseModel):
    queue: str = Field(min_length=1, max_length=64)
    command: list[str] = Field(min_length=1, max_length=4096)
    inputs: list[InputIO] = Field(default_factory=list, max_length=64)
    request: SizeIO = Field(default_factory=SizeIO)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    image: str | None = Field(default=None, max_length=1024)
    max_attempts: int = Field(default=2, ge=1, le=100)
    #: Seconds each attempt may run (default: the queue's job time limit, if any).
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_SECONDS)


class JobsIn(BaseModel):
    """A batch of jobs (``POST /jobs/batch``): all are queued, or none."""

    jobs: list[JobIn] = Field(min_length=1, max_length=1000)


class VerdictIO(BaseModel):
    template: str
    site: str
    verdict: str
    detail: str


class EventOut(BaseModel):
    at: datetime
    kind: str
    detail: str
    attempt: int

    @classmethod
    def of(cls, e: JobEvent) -> EventOut:
        return cls(at=e.at, kind=e.kind, detail=e.detail, attempt=e.attempt)


class JobOut(BaseModel):
    id: int
    queue: str
    state: JobState
    command: list[str]
    env: dict[str, str]
    inputs: list[InputIO]
    image: str | None
    request: SizeIO
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None
    template: str | None
    compute: str | None
    site: str | None
    slot: SizeIO
    placement: list[VerdictIO]
    attempt: int
    max_attempts: int
    worker: str | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    exit_code: int | None
    reason: str | None
    workdir: str | None
    timeout_seconds: int | None = None
    #: The manifest of its collected outputs in the lake, their count and bytes.
    outputs_manifest: str | None = None
    outputs_files: int = 0
    outputs_bytes: int = 0
    #: Only on ``GET /jobs/{id}``: what happened to it, in order.
    timeline: list[EventOut] | None = None

    @classmethod
    def of(cls, j: JobRecord, timeline: list[JobEvent] | None = None) -> JobOut:
        return cls(
            id=j.id,
            queue=j.queue,
            state=j.state,  # type: ignore[arg-type]  # one of the table's states
            command=list(j.command),
            env=dict(j.env),
            inputs=[InputIO(**i.as_dict()) for i in j.inputs],  # type: ignore[arg-type]
            image=j.image,
            request=SizeIO.of(j.request),
            submitted_by=j.submitted_by,
            created_at=j.created_at,
            updated_at=j.updated_at,
            deadline_at=j.deadline_at,
            template=j.template,
            compute=j.compute,
            site=j.site,
            slot=SizeIO.of(j.slot),
            placement=[VerdictIO(**v.as_dict()) for v in j.placement],
            attempt=j.attempt,
            max_attempts=j.max_attempts,
            worker=j.worker,
            heartbeat_at=j.heartbeat_at,
            cancel_requested=j.cancel_requested,
            exit_code=j.exit_code,
            reason=j.reason,
            workdir=j.workdir,
            timeout_seconds=j.timeout_seconds,
            outputs_manifest=j.outputs_manifest,
            outputs_files=j.outputs_files,
            outputs_bytes=j.outputs_bytes,
            timeline=None if timeline is None else [EventOut.of(e) for e in timeline],
        )


class PassIn(BaseModel):
    #: Requeue running jobs silent this long (null: requeue nothing this pass).
    stale_after_seconds: float | None = Field(default=None, gt=0, le=86400)


class MovedJob(BaseModel):
    """A job whose worker went silent: now ``queued`` again, or ``failed`` (its last try)."""

    id: int
    state: str


class PassOut(BaseModel):
    moved: list[MovedJob]
    placed: int


class ClaimJobIn(BaseModel):
    worker: str = Field(min_length=1, max_length=200)
    #: The attempt number the worker saw on the placed job (the compare-and-swap).
    attempt: int = Field(ge=0, le=2**31)


class ClaimJobOut(BaseModel):
    #: The attempt's fencing token, or null when another worker took the job.
    token: int | None
    #: The job-scoped token the job runs with (LAKECACHE_TOKEN), shown once.
    job_token: str | None = None


class FencedIn(BaseModel):
    token: int = Field(ge=1, le=2**31)


class BeatOut(BaseModel):
    verdict: Literal["run", "cancel"]


class EventIn(FencedIn):
    kind: str = Field(min_length=1, max_length=32)
    detail: str = Field(max_length=4096)
    workdir: str | None = Field(default=None, max_length=4096)
    #: The runner's own name for this entry, unique per job (random hex): an entry sent
    #: again with a key already on the job is not written again. Optional (older agents).
    key: str | None = Field(default=None, min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")


class FinishIn(FencedIn):
    state: Literal["succeeded", "failed", "cancelled"]
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31)
    reason: str | None = Field(default=None, max_length=4096)


class ReleaseIn(FencedIn):
    reason: str = Field(min_length=1, max_length=4096)


class LogWritten(BaseModel):
    size: int


class OutputOut(BaseModel):
    """One file of a job's collected outputs."""

    path: str
    digest: str
    size: int
    mode: int

    @classmethod
    def of(cls, f: OutputFile) -> OutputOut:
        return cls(path=f.path, digest=f.digest, size=f.size, mode=f.mode)


class OutputsStored(BaseModel):
    """What ``PUT /jobs/{id}/outputs`` stored: the manifest, the files, what was left out."""

    manifest: str
    files: list[OutputOut]
    left_out: list[str]
