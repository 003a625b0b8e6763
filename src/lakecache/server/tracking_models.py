"""What the tracking API takes and gives.

Metric values are numbers, or the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (standard JSON has no such numbers). A batch a client logs is
read by :meth:`lakecache.tracking.model.Batch.from_json`, which also takes
Python's bare ``NaN`` and ``Infinity`` tokens.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from lakecache.tracking.model import (
    ArtifactRecord,
    ExperimentRecord,
    InputRecord,
    RunRecord,
    RunSummary,
    Series,
    encode_value,
)

Number = float | str
RunStatus = Literal["running", "finished", "failed", "killed"]

#: Keys of a run's ``code`` that only the server may set: ``diff_digest`` names a lake
#: object that the dashboard serves as the run's diff, and a digest is no capability (a
#: client setting it could read anyone's artifact whose digest it knows).
SERVER_CODE_KEYS = frozenset({"diff_digest"})


def _client_code(code: dict[str, Any]) -> dict[str, Any]:
    taken = sorted(SERVER_CODE_KEYS & code.keys())
    if taken:
        raise ValueError(
            f"code may not set {', '.join(taken)}: the server sets it; send the diff itself "
            "as code.diff"
        )
    return code


ClientCode = Annotated[dict[str, Any], AfterValidator(_client_code)]


class ExperimentIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)


class ExperimentOut(BaseModel):
    id: int
    name: str
    #: Empty: shared with every user.
    owner: str
    created_at: datetime
    run_count: int

    @classmethod
    def of(cls, e: ExperimentRecord) -> ExperimentOut:
        return cls(
            id=e.id, name=e.name, owner=e.owner, created_at=e.created_at, run_count=e.run_count
        )


class RunIn(BaseModel):
    experiment: str = Field(default="Default", min_length=1, max_length=255)
    name: str | None = Field(default=None, max_length=250)
    command: list[str] = Field(default_factory=list, max_length=10_000)
    env: dict[str, Any] = Field(default_factory=dict)
    code: ClientCode = Field(default_factory=dict)


class JobRunIn(BaseModel):
    """A run for one attempt of a job, made by the agent that runs it."""

    job_id: int = Field(ge=1, le=2**62)
    attempt: int = Field(ge=1, le=2**31)
    command: list[str] = Field(default_factory=list, max_length=10_000)
    env: dict[str, Any] = Field(default_factory=dict)
    code: ClientCode = Field(default_factory=dict)


class EndIn(BaseModel):
    status: RunStatus = "finished"
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31)


class InputIn(BaseModel):
    dataset: str = Field(min_length=1, max_length=64)
    commit_id: str = Field(min_length=1, max_length=64)
    source: Literal["cache", "stream"]
    hit: bool | None = None
    fill_seconds: float | None = Field(default=None, ge=0)
    files: int = Field(default=0, ge=0, le=2**62)
    nbytes: int = Field(default=0, ge=0, le=2**62)
    reader: str = Field(default="", max_length=64)


class RunOut(BaseModel):
    id: int
    experiment_id: int
    experiment: str
    name: str
    user: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    command: list[str]
    env: dict[str, Any]
    code: dict[str, Any]
    job_id: int | None
    job_attempt: int | None
    flow_run: str | None
    flow_task: str | None
    exit_code: int | None

    @classmethod
    def of(cls, r: RunRecord) -> RunOut:
        return cls(
            id=r.id,
            experiment_id=r.experiment_id,
            experiment=r.experiment,
            name=r.name,
            user=r.user,
            status=r.status,
            started_at=r.started_at,
            ended_at=r.ended_at,
            duration_s=r.duration_s,
            command=r.command,
            env=r.env,
            code=r.code,
            job_id=r.job_id,
            job_attempt=r.job_attempt,
            flow_run=r.flow_run,
            flow_task=r.flow_task,
            exit_code=r.exit_code,
        )


class RunRow(BaseModel):
    """A row of the runs table: the run without its environment, its params and latest metrics."""

    id: int
    experiment: str
    name: str
    user: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    job_id: int | None
    flow_run: str | None
    flow_task: str | None
    params: dict[str, str]
    metrics: dict[str, Number]

    @classmethod
    def of(cls, s: RunSummary) -> RunRow:
        r = s.run
        return cls(
            id=r.id,
            experiment=r.experiment,
            name=r.name,
            user=r.user,
            status=r.status,
            started_at=r.started_at,
            ended_at=r.ended_at,
            job_id=r.job_id,
            flow_run=r.flow_run,
            flow_task=r.flow_task,
            params=s.params,
            metrics={k: encode_value(v) for k, v in s.metrics.items()},
        )


class LatestOut(BaseModel):
    value: Number
    step: int
    timestamp: int


class InputOut(BaseModel):
    dataset: str
    commit_id: str
    source: str
    hit: bool | None
    fill_seconds: float | None
    files: int
    bytes: int
    reader: str
    at: datetime

    @classmethod
    def of(cls, i: InputRecord) -> InputOut:
        return cls(
            dataset=i.dataset,
            commit_id=i.commit_id,
            source=i.source,
            hit=i.hit,
            fill_seconds=i.fill_seconds,
            files=i.files,
            bytes=i.bytes,
            reader=i.reader,
            at=i.at,
        )


class ArtifactOut(BaseModel):
    path: str
    digest: str
    size: int
    created_at: datetime

    @classmethod
    def of(cls, a: ArtifactRecord) -> ArtifactOut:
        return cls(path=a.path, digest=a.digest, size=a.size, created_at=a.created_at)


class RunDetail(BaseModel):
    """A run with everything it recorded, but the points of its series."""

    run: RunOut
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, LatestOut]
    system_metrics: list[str]
    inputs: list[InputOut]
    artifacts: list[ArtifactOut]
    #: Log stream -> its size in bytes.
    logs: dict[str, int]


class SeriesOut(BaseModel):
    key: str
    points_total: int
    downsampled: bool
    steps: list[int]
    values: list[Number]
    mins: list[Number]
    maxs: list[Number]
    timestamps: list[int]

    @classmethod
    def of(cls, s: Series) -> SeriesOut:
        return cls(
            key=s.key,
            points_total=s.points_total,
            downsampled=s.downsampled,
            steps=s.steps,
            timestamps=s.timestamps,
            **s.encoded(),
        )


class BatchOut(BaseModel):
    #: Params, tags and points stored.
    stored: int


class LogAppended(BaseModel):
    #: The byte offset the appended bytes start at in the log.
    start: int
    size: int
