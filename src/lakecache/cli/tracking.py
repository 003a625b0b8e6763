"""``lakecache run`` and ``lakecache experiment``: the tracked runs, from the terminal.

Through a server (``lakecache login``) the server's tracking API answers, and
shows what the logged-in user may see; otherwise the catalog is read directly.
Both give the same JSON (``--json``) as ``/api/v1/tracking``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import click

from lakecache.cli.common import get_hub, json_option
from lakecache.cli.output import human_bytes, human_duration, print_json, print_table


def _direct_store() -> Any:
    from lakecache.tracking.store import TrackingStore

    return TrackingStore(get_hub().catalog)


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _when(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return str(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))


def _duration(started: Any, ended: Any) -> str:
    if ended is None:
        return "running"
    if isinstance(started, str):
        started, ended = datetime.fromisoformat(started), datetime.fromisoformat(ended)
    return human_duration((ended - started).total_seconds())


@click.group()
def experiment() -> None:
    """Experiments: named groups of tracked runs."""


@experiment.command("ls")
@json_option
def experiment_ls(as_json: bool) -> None:
    """List experiments with their number of runs (shared ones have no owner)."""
    hub = get_hub()
    if hub.server is not None:
        rows = hub.server.call("GET", "/tracking/experiments")
    else:
        rows = [
            {
                "id": e.id,
                "name": e.name,
                "owner": e.owner,
                "created_at": e.created_at.isoformat(),
                "run_count": e.run_count,
            }
            for e in _direct_store().list_experiments()
        ]
    if as_json:
        print_json(rows)
        return
    print_table(
        ["experiment", "owner", "runs", "created"],
        [
            (e["name"], e["owner"] or "(shared)", e["run_count"], _when(e["created_at"]))
            for e in rows
        ],
        right=["runs"],
    )


@click.group()
def run() -> None:
    """Tracked runs: every job attempt, and every lakecache.tracking.start() or MLflow run."""


@run.command("ls")
@click.option("--experiment", "-e", default=None, help="Only this experiment's runs.")
@click.option(
    "--sort",
    default="start_time",
    show_default=True,
    help="start_time, end_time, name, status, user, id, param:KEY or metric:KEY.",
)
@click.option("--asc", is_flag=True, help="Smallest first (default: largest or newest first).")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="FIELD OP VALUE, e.g. metric:loss<0.5, param:lr=0.1, status=finished (repeatable).",
)
@click.option("--limit", default=50, show_default=True, help="How many runs to show.")
@json_option
def run_ls(
    experiment: str | None,
    sort: str,
    asc: bool,
    filters: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first: status, duration, params and latest metrics.

    \b
    Examples:
      lakecache run ls --experiment resnet --sort metric:val_loss --asc
      lakecache run ls --filter param:lr=0.1 --filter status=finished
    """
    hub = get_hub()
    if hub.server is not None:
        params: dict[str, Any] = {
            "order_by": sort,
            "descending": str(not asc).lower(),
            "limit": min(limit, 1000),
            "filter": list(filters),
        }
        if experiment:
            params["experiment"] = experiment
        page = hub.server.call("GET", "/tracking/runs", params=params)
        rows, total = page["items"], page["total"]
    else:
        from lakecache.tracking.model import RunFilter

        result = _direct_store().list_runs(
            experiment,
            order_by=sort,
            descending=not asc,
            filters=[RunFilter.parse(f) for f in filters],
            limit=limit,
        )
        total = result.total
        rows = [
            {
                "id": s.run.id,
                "experiment": s.run.experiment,
                "name": s.run.name,
                "user": s.run.user,
                "status": s.run.status,
                "started_at": s.run.started_at.isoformat(),
                "ended_at": s.run.ended_at.isoformat() if s.run.ended_at else None,
                "job_id": s.run.job_id,
                "params": s.params,
                "metrics": {k: _value(v) for k, v in s.metrics.items()},
            }
            for s in result.items
        ]
    if as_json:
        print_json({"items": rows, "total": total})
        return
    param_keys = sorted({k for r in rows for k in r["params"]})[:4]
    metric_keys = sorted({k for r in rows for k in r["metrics"]})[:4]
    print_table(
        [
            "run",
            "name",
            "experiment",
            "user",
            "status",
            "started",
            "took",
            *param_keys,
            *metric_keys,
        ],
        [
            (
                r["id"],
                r["name"],
                r["experiment"],
                r["user"],
                r["status"],
                _when(r["started_at"]),
                _duration(r["started_at"], r["ended_at"]),
                *(r["params"].get(k, "") for k in param_keys),
                *(_value(r["metrics"][k]) if k in r["metrics"] else "" for k in metric_keys),
            )
            for r in rows
        ],
        right=["run", *metric_keys],
    )
    if total > len(rows):
        click.echo(f"{len(rows)} of {total} runs; see more with --limit or narrow with --filter.")


def _detail(run_id: int) -> dict[str, Any]:
    hub = get_hub()
    if hub.server is not None:
        from lakecache.client.connection import path_part

        return hub.server.call("GET", f"/tracking/runs/{path_part(str(run_id))}")  # type: ignore[no-any-return]
    store = _direct_store()
    r = store.get_run(run_id)
    return {
        "run": {
            "id": r.id,
            "experiment": r.experiment,
            "name": r.name,
            "user": r.user,
            "status": r.status,
            "started_at": r.started_at.isoformat(),
            "ended_at": r.ended_at.isoformat() if r.ended_at else None,
            "command": r.command,
            "env": r.env,
            "code": r.code,
            "job_id": r.job_id,
            "job_attempt": r.job_attempt,
            "flow_run": r.flow_run,
            "flow_task": r.flow_task,
            "exit_code": r.exit_code,
        },
        "params": store.run_params(run_id),
        "tags": store.run_tags(run_id),
        "metrics": {
            k: {"value": _value(p.value), "step": p.step, "timestamp": p.ts}
            for k, p in store.latest_metrics(run_id).items()
        },
        "system_metrics": store.system_metric_keys(run_id),
        "inputs": [
            {
                "dataset": i.dataset,
                "commit_id": i.commit_id,
                "source": i.source,
                "hit": i.hit,
                "fill_seconds": i.fill_seconds,
                "files": i.files,
                "bytes": i.bytes,
                "reader": i.reader,
            }
            for i in store.run_inputs(run_id)
        ],
        "artifacts": [{"path": a.path, "size": a.size} for a in store.list_artifacts(run_id)],
        "logs": store.list_logs(run_id),
    }


@run.command("show")
@click.argument("run_id", metavar="RUN", type=int)
@json_option
def run_show(run_id: int, as_json: bool) -> None:
    """Everything a run recorded: command, code and environment versions, params,
    latest metrics, datasets read (and whether from a cache), artifacts and logs."""
    d = _detail(run_id)
    if as_json:
        print_json(d)
        return
    r = d["run"]
    code, env = r["code"], r["env"]
    lines = [
        ("run", f"{r['id']} {r['name']} ({r['experiment']})"),
        ("user", r["user"]),
        (
            "status",
            r["status"] + ("" if r["exit_code"] is None else f", exit code {r['exit_code']}"),
        ),
        ("started", _when(r["started_at"])),
        ("took", _duration(r["started_at"], r["ended_at"])),
        ("command", " ".join(r["command"])),
    ]
    if r.get("job_id") is not None:
        lines.append(("job", f"{r['job_id']} attempt {r['job_attempt']}"))
    if r.get("flow_run"):
        lines.append(("flow", f"{r['flow_run']} task {r['flow_task']}"))
    if code.get("commit"):
        dirty = " (uncommitted changes)" if code.get("dirty") else ""
        lines.append(("code", f"git {code['commit'][:12]} {code.get('branch', '')}{dirty}"))
    if code.get("image"):
        lines.append(("image", code["image"]))
    if env.get("python"):
        extra = f", CUDA {env['cuda']}, driver {env['driver']}" if env.get("cuda") else ""
        lines.append(("python", f"{env['python']}, {len(env.get('packages', {}))} packages{extra}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}")
    if d["params"]:
        click.echo()
        print_table(["param", "value"], sorted(d["params"].items()))
    if d["metrics"]:
        click.echo()
        print_table(
            ["metric", "latest", "step"],
            [(k, _value(m["value"]), m["step"]) for k, m in sorted(d["metrics"].items())],
            right=["latest", "step"],
        )
    if d["system_metrics"]:
        click.echo(f"\nsystem metrics: {', '.join(d['system_metrics'])}")
    if d["inputs"]:
        click.echo()
        print_table(
            ["dataset", "commit", "source", "cache", "ready in"],
            [
                (
                    i["dataset"],
                    i["commit_id"][:12],
                    i["source"],
                    {True: "hit", False: "miss", None: ""}[i["hit"]],
                    "" if i["fill_seconds"] is None else human_duration(i["fill_seconds"]),
                )
                for i in d["inputs"]
            ],
        )
    if d["artifacts"]:
        click.echo()
        print_table(
            ["artifact", "size"],
            [(a["path"], human_bytes(a["size"])) for a in d["artifacts"]],
            right=["size"],
        )
    if d["logs"]:
        click.echo()
        print_table(
            ["log", "size"], [(k, human_bytes(v)) for k, v in d["logs"].items()], right=["size"]
        )
