"""The part of MLflow's REST API its client uses to log runs, served from lakecache's tracking.

Code written for MLflow logs into lakecache unchanged: set
``MLFLOW_TRACKING_URI=http://<server>`` and ``MLFLOW_TRACKING_TOKEN=<lakecache API token>``,
then ``mlflow.start_run``, ``log_param(s)``, ``log_metric(s)``, ``set_tag(s)``,
``log_artifact(s)`` and ``end_run`` work, and the runs show up in lakecache like
any other (experiment ``0``, MLflow's default, is lakecache's shared ``Default``).

Served (``/api/2.0/mlflow/...``): experiments get, get-by-name and create; runs
create, get, update, log-metric, log-parameter, set-tag, log-batch, log-inputs
(accepted and ignored: MLflow dataset inputs have no lakecache commit); and the
artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/...``: upload, download,
list) that runs created here point their ``artifact_uri`` at. Anything else of
MLflow's API (model registry, search, traces) is not served: 404 with MLflow's
``ENDPOINT_NOT_FOUND``.

Authorisation is lakecache's (:mod:`lakecache.tracking.access`): the bearer token
is a lakecache API token; a run is logged to by its user only. Errors come in
MLflow's shape (``{"error_code": ..., "message": ...}``), which its client
turns into ``MlflowException``. These routes are MLflow's contract, not
lakecache's, so they stay out of lakecache's OpenAPI document.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lakecache.errors import (
    AlreadyExistsError,
    LakecacheError,
    NotFoundError,
    UserError,
)
from lakecache.server.auth import Plane, Principal, User
from lakecache.server.bodies import read_body, spool_body
from lakecache.server.errors import AccessError, AuthenticationError, PermissionDeniedError
from lakecache.server.routes.tracking import (
    BATCH_MAX,
    artifact_limit,
    logged_run,
    store_of,
    visible_experiment,
    visible_run,
)
from lakecache.server.runtime import ControlPlane
from lakecache.tracking import objects
from lakecache.tracking.model import (
    Batch,
    ExperimentRecord,
    RunRecord,
    check_key,
    check_metric_value,
    check_text_value,
)
from lakecache.tracking.store import DEFAULT_EXPERIMENT

router = APIRouter(include_in_schema=False)
_API = "/api/2.0/mlflow"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
_STATUS_TO_MLFLOW = {
    "running": "RUNNING",
    "finished": "FINISHED",
    "failed": "FAILED",
    "killed": "KILLED",
}
_STATUS_FROM_MLFLOW = {v: k for k, v in _STATUS_TO_MLFLOW.items()} | {"SCHEDULED": "running"}


def _error(exc: Exception) -> JSONResponse:
    """A lakecache error in MLflow's shape, with the HTTP status MLflow uses for it."""
    message = getattr(exc, "message", str(exc))
    hint = getattr(exc, "hint", "")
    if hint:
        message = f"{message} ({hint})"
    if isinstance(exc, AuthenticationError):
        return JSONResponse({"error_code": "UNAUTHENTICATED", "message": message}, 401)
    if isinstance(exc, PermissionDeniedError | AccessError):
        return JSONResponse({"error_code": "PERMISSION_DENIED", "message": message}, 403)
    if isinstance(exc, NotFoundError):
        return JSONResponse({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": message}, 404)
    if isinstance(exc, AlreadyExistsError):
        return JSONResponse({"error_code": "RESOURCE_ALREADY_EXISTS", "message": message}, 400)
    if isinstance(exc, UserError):
        return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE", "message": message}, 400)
    return JSONResponse({"error_code": "INTERNAL_ERROR", "message": message}, 500)


async def _answer(work: Callable[[], Any]) -> Response:
    """Run ``work`` in a thread; its dict as JSON, or its error in MLflow's shape."""
    try:
        result = await run_in_threadpool(work)
    except (LakecacheError, ValueError, TypeError, KeyError) as exc:
        if not isinstance(exc, LakecacheError):
            exc = UserError(f"malformed request: {exc}")
        return _error(exc)
    if isinstance(result, Response):
        return result
    return JSONResponse(result)


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, BATCH_MAX, "a request body", hint="Send smaller batches.")
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise UserError("the request body must be a JSON object")
    return data


def _millis(dt: Any) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def _experiment_json(e: ExperimentRecord) -> dict[str, Any]:
    return {
        "experiment_id": _mlflow_experiment_id(e),
        "name": e.name,
        "artifact_location": f"mlflow-artifacts:/{_mlflow_experiment_id(e)}",
        "lifecycle_stage": "active",
        "creation_time": _millis(e.created_at),
        "last_update_time": _millis(e.created_at),
        "tags": [],
    }


def _mlflow_experiment_id(e: ExperimentRecord) -> str:
    return "0" if e.name == DEFAULT_EXPERIMENT else str(e.id)


def _experiment(plane: ControlPlane, principal: Principal, experiment_id: str) -> ExperimentRecord:
    if experiment_id in ("0", ""):
        store_of(plane).get_or_create_experiment(DEFAULT_EXPERIMENT, "")
        experiment_id = DEFAULT_EXPERIMENT
    elif not experiment_id.isdigit():
        raise NotFoundError(f"no experiment with id {experiment_id!r}")
    return visible_experiment(plane, principal, experiment_id)


def _value(v: float) -> float | str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _run_info(run: RunRecord) -> dict[str, Any]:
    exp_id = "0" if run.experiment == DEFAULT_EXPERIMENT else str(run.experiment_id)
    return {
        "run_id": str(run.id),
        "run_uuid": str(run.id),
        "run_name": run.name,
        "experiment_id": exp_id,
        "user_id": run.user,
        "status": _STATUS_TO_MLFLOW[run.status],
        "start_time": _millis(run.started_at),
        "end_time": _millis(run.ended_at),
        "artifact_uri": f"mlflow-artifacts:/{exp_id}/{run.id}/artifacts",
        "lifecycle_stage": "active",
    }


def _run_json(plane: ControlPlane, run: RunRecord) -> dict[str, Any]:
    store = store_of(plane)
    return {
        "info": _run_info(run),
        "data": {
            "metrics": [
                {"key": k, "value": _value(p.value), "timestamp": p.ts, "step": p.step}
                for k, p in store.latest_metrics(run.id).items()
            ],
            "params": [{"key": k, "value": v} for k, v in store.run_params(run.id).items()],
            "tags": [{"key": k, "value": v} for k, v in store.run_tags(run.id).items()],
        },
        "inputs": {},
    }


def _run_id(value: Any) -> int:
    text = str(value or "")
    if not text.isdigit() or len(text) > 18:
        raise NotFoundError(f"no run {text!r}")
    return int(text)


def _metric(m: dict[str, Any]) -> tuple[str, float, int, int]:
    key = check_key("metric", m["key"])
    from lakecache.tracking.model import decode_value

    raw = m.get("value")
    value = decode_value(raw) if isinstance(raw, str) else check_metric_value(key, raw)
    return key, value, int(m.get("step") or 0), int(m.get("timestamp") or 0)


# -- experiments ---------------------------------------------------------------------------


@router.get(f"{_API}/experiments/get-by-name")
async def get_experiment_by_name(
    request: Request, principal: User, plane: Plane, experiment_name: str = ""
) -> Response:
    def work() -> dict[str, Any]:
        return {
            "experiment": _experiment_json(visible_experiment(plane, principal, experiment_name))
        }

    return await _answer(work)


@router.get(f"{_API}/experiments/get")
async def get_experiment(principal: User, plane: Plane, experiment_id: str = "") -> Response:
    return await _answer(
        lambda: {"experiment": _experiment_json(_experiment(plane, principal, experiment_id))}
    )


@router.post(f"{_API}/experiments/create")
async def create_experiment(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        _person(principal)
        exp = store_of(plane).create_experiment(str(body.get("name") or ""), principal.user.name)
        return {"experiment_id": str(exp.id)}

    return await _answer(work)


def _person(principal: Principal) -> None:
    if principal.job is not None or principal.user.agent_site is not None:
        raise PermissionDeniedError("a job's or site agent's token does not start MLflow runs")


# -- runs ----------------------------------------------------------------------------------


@router.post(f"{_API}/runs/create")
async def create_run(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        _person(principal)
        exp = _experiment(plane, principal, str(body.get("experiment_id") or "0"))
        tags = {t["key"]: t.get("value", "") for t in body.get("tags") or []}
        name = body.get("run_name") or tags.get("mlflow.runName") or None
        store = store_of(plane)
        command = [tags["mlflow.source.name"]] if tags.get("mlflow.source.name") else []
        code: dict[str, Any] = {}
        if tags.get("mlflow.source.git.commit"):
            code = {"kind": "git", "commit": tags["mlflow.source.git.commit"]}
        run = store.create_run(
            exp.name, user=principal.user.name, name=name, command=command, code=code
        )
        if tags:
            store.log_batch(
                run.id,
                Batch(
                    tags={
                        check_key("tag", k): check_text_value("tag", k, v) for k, v in tags.items()
                    }
                ),
            )
        return {"run": _run_json(plane, run)}

    return await _answer(work)


@router.get(f"{_API}/runs/get")
async def get_run(principal: User, plane: Plane, run_id: str = "", run_uuid: str = "") -> Response:
    return await _answer(
        lambda: {
            "run": _run_json(plane, visible_run(plane, principal, _run_id(run_id or run_uuid)))
        }
    )


@router.post(f"{_API}/runs/update")
async def update_run(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        run_id = _run_id(body.get("run_id") or body.get("run_uuid"))
        logged_run(plane, principal, run_id)
        store = store_of(plane)
        if body.get("run_name"):
            store.update_run(run_id, name=str(body["run_name"]))
        status = body.get("status")
        if status:
            mapped = _STATUS_FROM_MLFLOW.get(str(status))
            if mapped is None:
                raise UserError(f"unknown run status {status!r}")
            store.end_run(run_id, mapped, ended_at=plane.clock.now())
        return {"run_info": _run_info(store.get_run(run_id))}

    return await _answer(work)


def _log(plane: ControlPlane, principal: Principal, run_id: Any, batch: Batch) -> dict[str, Any]:
    rid = _run_id(run_id)
    logged_run(plane, principal, rid)
    store_of(plane).log_batch(rid, batch)
    return {}


@router.post(f"{_API}/runs/log-metric")
async def log_metric(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)
    return await _answer(
        lambda: _log(
            plane,
            principal,
            body.get("run_id") or body.get("run_uuid"),
            Batch.of(metrics=[_metric(body)]),
        )
    )


@router.post(f"{_API}/runs/log-parameter")
async def log_parameter(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        key = check_key("param", body["key"])
        batch = Batch(params={key: check_text_value("param", key, body.get("value", ""))})
        return _log(plane, principal, body.get("run_id") or body.get("run_uuid"), batch)

    return await _answer(work)


@router.post(f"{_API}/runs/set-tag")
async def set_tag(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        key = check_key("tag", body["key"])
        batch = Batch(tags={key: check_text_value("tag", key, body.get("value", ""))})
        return _log(plane, principal, body.get("run_id") or body.get("run_uuid"), batch)

    return await _answer(work)


@router.post(f"{_API}/runs/log-batch")
async def log_batch(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        params = {}
        for p in body.get("params") or []:
            key = check_key("param", p["key"])
            params[key] = check_text_value("param", key, p.get("value", ""))
        tags = {}
        for t in body.get("tags") or []:
            key = check_key("tag", t["key"])
            tags[key] = check_text_value("tag", key, t.get("value", ""))
        metrics = [_metric(m) for m in body.get("metrics") or []]
        return _log(
            plane,
            principal,
            body.get("run_id"),
            Batch.of(params=params, tags=tags, metrics=metrics),
        )

    return await _answer(work)


@router.post(f"{_API}/runs/log-inputs")
async def log_inputs(request: Request, principal: User, plane: Plane) -> Response:
    body = await _body(request)

    def work() -> dict[str, Any]:
        logged_run(plane, principal, _run_id(body.get("run_id")))
        return {}

    return await _answer(work)


# -- the artifact proxy --------------------------------------------------------------------


def _artifact_target(plane: ControlPlane, principal: Principal, path: str) -> tuple[int, str]:
    """``<experiment>/<run>/artifacts/<name>`` -> (run id, artifact name)."""
    parts = path.split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts":
        raise NotFoundError(
            f"no artifact {path!r}", hint="Artifact paths are EXPERIMENT/RUN/artifacts/NAME."
        )
    return _run_id(parts[1]), parts[3] if len(parts) == 4 else ""


@router.put(_ARTIFACTS + "/{path:path}")
async def upload_artifact(path: str, request: Request, principal: User, plane: Plane) -> Response:
    try:
        run_id, name = _artifact_target(plane, principal, path)
        name = objects.artifact_path(name)
        await run_in_threadpool(logged_run, plane, principal, run_id)
    except LakecacheError as exc:
        return _error(exc)
    spool = plane.hub.settings.home / "tracking-uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as tmp:
        file = FsPath(tmp) / "artifact"
        try:
            await spool_body(request, file, *artifact_limit(plane, name))
        except LakecacheError as exc:
            return _error(exc)

        def store() -> dict[str, Any]:
            digest, size = objects.put_file(plane.hub.lake, file)
            store_of(plane).add_artifact(run_id, name, digest, size)
            return {}

        return await _answer(store)


@router.get(_ARTIFACTS + "/{path:path}")
async def download_artifact(path: str, principal: User, plane: Plane) -> Response:
    def work() -> Response:
        run_id, name = _artifact_target(plane, principal, path)
        visible_run(plane, principal, run_id)
        data = objects.read_artifact(store_of(plane), plane.hub.lake, run_id, name)
        return Response(data, media_type="application/octet-stream")

    return await _answer(work)


@router.get(_ARTIFACTS)
async def list_artifacts(principal: User, plane: Plane, path: str = "") -> Response:
    def work() -> dict[str, Any]:
        run_id, prefix = _artifact_target(plane, principal, path.strip("/"))
        visible_run(plane, principal, run_id)
        prefix = prefix.strip("/")
        files: dict[str, dict[str, Any]] = {}
        for a in store_of(plane).list_artifacts(run_id, prefix):
            rest = a.path[len(prefix) + 1 :] if prefix else a.path
            head, sep, _ = rest.partition("/")
            entry = f"{prefix}/{head}" if prefix else head
            if sep:
                files[entry] = {"path": entry, "is_dir": True}
            else:
                files[entry] = {"path": entry, "is_dir": False, "file_size": a.size}
        return {"files": list(files.values())}

    return await _answer(work)
