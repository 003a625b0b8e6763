"""``lakecache flow``: run a flow file, list runs, show a run's DAG, cancel and resume."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lakecache.cli.common import get_hub, json_option
from lakecache.cli.output import human_duration, print_json, print_table

if TYPE_CHECKING:
    from lakecache.flows.service import Flows

_STATE_COLOURS = {
    "succeeded": "green",
    "failed": "red",
    "running": "cyan",
    "pending": None,
    "cancelled": "yellow",
    "skipped": "yellow",
}


def _flows() -> Flows:
    from lakecache.flows.service import flows_of

    return flows_of(get_hub())


@click.group()
def flow() -> None:
    """Flows: DAGs of tasks (each a job) from a YAML file, with fan-out and memoisation.

    \b
    A flow file names tasks, each with a command, a queue, params (a list fans
    out: one task per value), `after:` dependencies, inputs (`dataset: NAME@REF`
    with `cached: true|false`, or `task: NAME` for an upstream task's outputs),
    outputs (folders under $LAKECACHE_OUTPUTS; `dataset: NAME` commits one as a
    new version of NAME), retries, timeout and `memo: true`. See the README.
    """


_param_option = click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    help="KEY=VALUE (flow param) or TASK.KEY=VALUE; a [list] fans out. Repeatable.",
)


def _overrides(params: tuple[str, ...]) -> dict[str, Any]:
    from lakecache.flows.spec import parse_overrides

    return parse_overrides(params)


@flow.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@_param_option
def flow_check(file: str, params: tuple[str, ...]) -> None:
    """Check FILE (every mistake at once) and print the tasks it would run."""
    from lakecache.flows.engine import FlowEngine
    from lakecache.flows.service import read_flow_file
    from lakecache.flows.spec import FlowSpec

    text, name = read_flow_file(file)
    checked = FlowEngine(get_hub()).plan(FlowSpec.from_text(text, name), _overrides(params))
    click.echo(f"flow {checked.flow}: {len(checked.tasks)} task(s), no mistakes")
    print_table(
        ["task", "queue", "after", "command"],
        [
            (t.name, t.queue, _short(", ".join(t.deps)), _short(" ".join(t.command)))
            for t in checked.tasks
        ],
    )


@flow.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@_param_option
@click.option("--wait", is_flag=True, help="Advance it here until it ends; exit 1 if it failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after seconds.")
@json_option
def flow_run(
    file: str, params: tuple[str, ...], wait: bool, timeout: float | None, as_json: bool
) -> None:
    """Check FILE and start a run of it: lakecache flow run flows/train.yaml -p lr=0.1

    Nothing runs if the file has mistakes: they are all listed, each with its
    line and fix. Logged in (`lakecache login`), the server runs it; directly,
    an agent (`lakecache agent --site S`) or --wait advances it.
    """
    from lakecache.flows.engine import code_version
    from lakecache.flows.service import read_flow_file

    text, name = read_flow_file(file)
    flows = _flows()
    code = code_version(Path(file).resolve().parent)
    run = flows.start(text, name, _overrides(params), code)
    if not wait:
        if as_json:
            print_json(run)
        else:
            n = len(run["tasks"])
            click.echo(
                f"flow run {run['id']} ({run['flow']}, {n} task(s)) started; "
                f"see it with `lakecache flow show {run['id']}`"
            )
        return
    run = flows.wait(run["id"], timeout)
    _finish(run, as_json)


def _finish(run: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(run)
    else:
        _print_run(run)
    sys.exit(0 if run["state"] == "succeeded" else 1)


@flow.command("ls")
@click.option("--state", "states", multiple=True, help="Only runs in this state (repeatable).")
@click.option("--flow", "flow_name", default=None, help="Only runs of this flow.")
@json_option
def flow_ls(states: tuple[str, ...], flow_name: str | None, as_json: bool) -> None:
    """List flow runs, newest first: state, tasks by state, who started them."""
    runs = _flows().list_runs(states=states, flow=flow_name)
    if as_json:
        print_json(runs)
        return
    print_table(
        ["run", "flow", "state", "tasks", "started", "took", "by", "reason"],
        [
            (
                r["id"],
                r["flow"],
                r["state"],
                _counts(r["counts"]),
                r["created_at"][:19].replace("T", " "),
                _took(r["created_at"], r["ended_at"]),
                r["submitted_by"],
                _short(r["reason"] or ""),
            )
            for r in runs
        ],
        right=["run"],
    )


@flow.command("show")
@click.argument("run_id", type=int)
@json_option
def flow_show(run_id: int, as_json: bool) -> None:
    """The run's DAG: each task by level, its state, job, tries and timings."""
    run = _flows().show(run_id)
    if as_json:
        print_json(run)
        return
    _print_run(run)


@flow.command("wait")
@click.argument("run_id", type=int)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@json_option
def flow_wait(run_id: int, timeout: float | None, as_json: bool) -> None:
    """Advance the run here (directly) or follow it (server) until it ends."""
    _finish(_flows().wait(run_id, timeout), as_json)


@flow.command("cancel")
@click.argument("run_id", type=int)
def flow_cancel(run_id: int) -> None:
    """Cancel a run: pending tasks at once, running jobs through their agents."""
    run = _flows().cancel(run_id)
    click.echo(f"flow run {run_id} {run['state']}")


@flow.command("resume")
@click.argument("run_id", type=int)
@click.option("--wait", is_flag=True, help="Advance it here until it ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after seconds.")
@json_option
def flow_resume(run_id: int, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Re-run only the failed and cancelled tasks of an ended run (and what depends on
    them); tasks that succeeded keep their outputs."""
    flows = _flows()
    run = flows.resume(run_id)
    if wait:
        run = flows.wait(run_id, timeout)
        _finish(run, as_json)
        return
    if as_json:
        print_json(run)
    else:
        again = sum(1 for t in run["tasks"] if t["state"] in ("pending", "running"))
        click.echo(f"flow run {run_id} resumed: {again} task(s) to run again")


# -- printing ------------------------------------------------------------------------------


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _counts(counts: dict[str, int]) -> str:
    order = ("succeeded", "running", "pending", "failed", "cancelled", "skipped")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def _took(start: str | None, end: str | None) -> str:
    from datetime import UTC, datetime

    if start is None:
        return ""
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return human_duration((t1 - t0).total_seconds())


def _print_run(run: dict[str, Any]) -> None:
    tasks = run["tasks"]
    state = click.style(run["state"], fg=_STATE_COLOURS.get(run["state"]), bold=True)
    click.echo(
        f"flow run {run['id']}: {run['flow']} {state}  "
        f"({_counts(run['counts'])}; {_took(run['created_at'], run['ended_at'])}; "
        f"code {run['code_version']})"
    )
    if run.get("reason"):
        click.echo(f"reason: {run['reason']}")
    rows = []
    for t in tasks:
        indent = "  " * t["depth"] + ("└ " if t["depth"] else "")
        note = t["reason"] or ""
        if t["reused_from"]:
            note = f"reused (task {t['reused_from']})"
        rows.append(
            (
                t["depth"],
                indent + t["name"],
                t["state"],
                t["job_id"] or "",
                t["tries"] or "",
                human_duration(t["seconds"]) if t["seconds"] is not None else "",
                _short(", ".join(t["deps"]), 40),
                _short(note, 50),
            )
        )
    print_table(
        ["level", "task", "state", "job", "tries", "took", "after", "note"],
        rows,
        right=["level", "job", "tries", "took"],
    )
