"""``lakecache template | queue | job``: sizes on compute, queues that burst, and jobs."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lakecache.cli.common import get_hub, json_option
from lakecache.cli.output import human_bytes, human_duration, print_json, print_table
from lakecache.cli.units import Duration, Size

if TYPE_CHECKING:
    from lakecache.compute.model import JobRecord, Resources
    from lakecache.compute.sdk import JobStore


def _now() -> datetime:
    return datetime.now(UTC)


def _store() -> JobStore:
    from lakecache.compute.sdk import _store as store_of

    return store_of(get_hub())


def size_options(default_cpu: str) -> Any:
    """--cpu, --memory, --gpu and --resource, shared by templates, jobs and compute."""

    def wrap(f: Any) -> Any:
        f = click.option(
            "--resource",
            "named",
            multiple=True,
            help="A named resource as NAME=COUNT (repeatable), e.g. ssd=1.",
        )(f)
        f = click.option("--gpu", default=0, show_default=True, help="GPUs.")(f)
        f = click.option(
            "--memory", type=Size(), default="0", show_default=True, help="Memory, e.g. 16GB."
        )(f)
        return click.option(
            "--cpu", default=default_cpu, show_default=True, help="Cores, e.g. 2, 0.5 or 500m."
        )(f)

    return wrap


def make_size(cpu: str, memory: int, gpu: int, named: tuple[str, ...]) -> Resources:
    from lakecache.compute.model import Resources, parse_cpu, parse_named

    return Resources(parse_cpu(cpu), memory, gpu, parse_named(named))


# -- templates ---------------------------------------------------------------------------


@click.group()
def template() -> None:
    """Templates: named sizes on a compute resource (cpu, memory, gpu, image)."""


@template.command("add")
@click.argument("name")
@click.option("--compute", "-c", "compute", required=True, help="The compute resource.")
@size_options("1")
@click.option("--image", default=None, help="Default container image of its jobs.")
def template_add(
    name: str,
    compute: str,
    cpu: str,
    memory: int,
    gpu: int,
    named: tuple[str, ...],
    image: str | None,
) -> None:
    """Add the template NAME: one job slot of this size on a compute resource."""
    tpl = _store().add_template(name, compute, make_size(cpu, memory, gpu, named), image, _now())
    click.echo(f"added template {tpl.name} on {tpl.compute} at {tpl.site}: {tpl.size.describe()}")


@template.command("ls")
@json_option
def template_ls(as_json: bool) -> None:
    """List templates with their size, compute resource and site."""
    rows = [
        {
            "name": t.name,
            "compute": t.compute,
            "site": t.site,
            "backend": t.backend,
            **t.size.as_dict(),
            "image": t.image,
        }
        for t in _store().list_templates()
    ]
    if as_json:
        print_json(rows)
        return
    print_table(
        ["template", "compute", "site", "cpu", "memory", "gpu", "resources", "image"],
        [
            (
                r["name"],
                r["compute"],
                r["site"],
                f"{r['cpu']:g}",
                human_bytes(r["memory"]),
                r["gpu"],
                ", ".join(f"{k}={n}" for k, n in r["resources"].items()),
                r["image"] or "",
            )
            for r in rows
        ],
        right=["cpu", "memory", "gpu"],
    )


@template.command("rm")
@click.argument("name")
def template_rm(name: str) -> None:
    """Remove the template NAME (no queue may name it, no job hold a slot of it)."""
    _store().remove_template(name)
    click.echo(f"removed template {name}")


# -- queues ------------------------------------------------------------------------------


@click.group()
def queue() -> None:
    """Queues: ordered templates; a job takes the first with room (burst to the next site)."""


@queue.command("add")
@click.argument("name")
@click.option(
    "--template",
    "-t",
    "templates",
    multiple=True,
    required=True,
    help="A template, in the order jobs try them (repeatable).",
)
@click.option(
    "--policy",
    type=click.Choice(["order", "data"]),
    default="order",
    show_default=True,
    help="order: the first with room; data: first a site with a ready cache of the inputs.",
)
@click.option(
    "--pending-deadline",
    type=Duration(),
    default=None,
    help="Fail a job that found no room for this long ('fits nowhere'); default: wait.",
)
@click.option(
    "--job-timeout",
    type=Duration(),
    default=None,
    help="Time limit of its jobs that set none (e.g. 2h); past it a job is stopped and "
    "fails. Default: no limit.",
)
@click.option(
    "--agent-down",
    type=click.Choice(["wait", "move"]),
    default="wait",
    show_default=True,
    help="When a site's agent is down: wait for it, or move on to the next site.",
)
def queue_add(
    name: str,
    templates: tuple[str, ...],
    policy: str,
    pending_deadline: int | None,
    job_timeout: int | None,
    agent_down: str,
) -> None:
    """Add the queue NAME over its templates, in order."""
    from datetime import timedelta

    deadline = None if pending_deadline is None else timedelta(seconds=pending_deadline)
    q = _store().add_queue(
        name,
        list(templates),
        policy=policy,
        pending_deadline=deadline,
        job_timeout=None if job_timeout is None else timedelta(seconds=job_timeout),
        agent_down=agent_down,
        now=_now(),
    )
    click.echo(f"added queue {q.name}: {' -> '.join(q.templates)} (policy {q.policy})")


@queue.command("ls")
@json_option
def queue_ls(as_json: bool) -> None:
    """List queues with their templates in order, policy and deadline, and their jobs."""
    store = _store()
    active = store.list_jobs(states=("queued", "placed", "running"))
    rows: list[dict[str, Any]] = [
        {
            "name": q.name,
            "templates": list(q.templates),
            "policy": q.policy,
            "pending_deadline_seconds": q.pending_deadline_seconds,
            "job_timeout_seconds": q.job_timeout_seconds,
            "agent_down": q.agent_down,
            "queued": sum(1 for j in active if j.queue == q.name and j.state == "queued"),
            "running": sum(1 for j in active if j.queue == q.name and j.state != "queued"),
        }
        for q in store.list_queues()
    ]
    if as_json:
        print_json(rows)
        return
    print_table(
        [
            "queue",
            "templates",
            "policy",
            "deadline",
            "job limit",
            "agent down",
            "queued",
            "running",
        ],
        [
            (
                r["name"],
                " -> ".join(r["templates"]),
                r["policy"],
                "-"
                if r["pending_deadline_seconds"] is None
                else human_duration(r["pending_deadline_seconds"]),
                "-"
                if r["job_timeout_seconds"] is None
                else human_duration(r["job_timeout_seconds"]),
                r["agent_down"],
                r["queued"],
                r["running"],
            )
            for r in rows
        ],
        right=["queued", "running"],
    )


# -- jobs --------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Jobs: a command on a queue, with dataset inputs, a timeline and a log."""


def _job_dict(j: JobRecord) -> dict[str, Any]:
    return {
        "id": j.id,
        "queue": j.queue,
        "state": j.state,
        "command": list(j.command),
        "inputs": [i.as_dict() for i in j.inputs],
        "request": j.request.as_dict(),
        "template": j.template,
        "compute": j.compute,
        "site": j.site,
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "exit_code": j.exit_code,
        "reason": j.reason,
        "submitted_by": j.submitted_by,
        "created_at": j.created_at.isoformat(),
        "updated_at": j.updated_at.isoformat(),
        "placement": [v.as_dict() for v in j.placement],
        "workdir": j.workdir,
        "timeout_seconds": j.timeout_seconds,
        "outputs": {
            "manifest": j.outputs_manifest,
            "files": j.outputs_files,
            "bytes": j.outputs_bytes,
        },
    }


@job.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--queue", "-q", "queue_name", required=True, help="The queue to run on.")
@click.option(
    "--input",
    "-i",
    "inputs",
    multiple=True,
    help="A dataset commit: [NAME=]DATASET@REF[:cached|:stream] (repeatable).",
)
@size_options("1")
@click.option("--env", "-e", "env", multiple=True, help="KEY=VALUE for the job (repeatable).")
@click.option("--image", default=None, help="Container image (container backends).")
@click.option(
    "--max-attempts",
    default=2,
    show_default=True,
    help="Runs allowed when agents die under it (first included).",
)
@click.option(
    "--timeout",
    type=Duration(),
    default=None,
    help="Stop it and fail it after this long running (e.g. 90s, 2h); default: the "
    "queue's job limit, if any.",
)
@click.option("--wait", "wait", is_flag=True, help="Wait for it to end; exit with its code.")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def job_run(
    queue_name: str,
    inputs: tuple[str, ...],
    cpu: str,
    memory: int,
    gpu: int,
    named: tuple[str, ...],
    env: tuple[str, ...],
    image: str | None,
    max_attempts: int,
    timeout: int | None,
    wait: bool,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Submit COMMAND (after --) to a queue: lakecache job run -q gpu -i xray@v1 -- python t.py"""
    from lakecache.compute.sdk import submit
    from lakecache.errors import UserError

    pairs = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--env {item!r} is not KEY=VALUE", hint="Write e.g. --env SEED=1.")
        pairs[key] = value
    size = make_size(cpu, memory, gpu, named)
    handle = submit(
        command,
        queue=queue_name,
        inputs=inputs,
        cpu=f"{size.cpu_milli}m",
        memory=size.memory,
        gpu=size.gpu,
        resources=size.named,
        env=pairs,
        image=image,
        max_attempts=max_attempts,
        timeout=timeout,
        hub=get_hub(),
    )
    rec = handle.record
    if not wait:
        if as_json:
            print_json(_job_dict(rec))
        else:
            where = f"placed on {rec.template} at {rec.site}" if rec.site else "queued"
            click.echo(f"job {rec.id} {where}; follow it with `lakecache job logs -f {rec.id}`")
        return
    rec = handle.wait()
    if as_json:
        print_json(_job_dict(rec))
    else:
        click.echo(f"job {rec.id} {rec.state}" + (f": {rec.reason}" if rec.reason else ""))
    sys.exit(rec.exit_code if rec.exit_code is not None else (0 if rec.state == "succeeded" else 1))


@job.command("ls")
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--queue", "-q", "queue_name", default=None, help="Only this queue's jobs.")
@json_option
def job_ls(states: tuple[str, ...], queue_name: str | None, as_json: bool) -> None:
    """List jobs, oldest first: state, queue, where they run, exit code or reason."""
    jobs = _store().list_jobs(states=states or None, queue=queue_name)
    if as_json:
        print_json([_job_dict(j) for j in jobs])
        return
    print_table(
        ["job", "state", "queue", "template", "site", "attempt", "exit", "command", "reason"],
        [
            (
                j.id,
                j.state,
                j.queue,
                j.template or "",
                j.site or "",
                j.attempt,
                "" if j.exit_code is None else j.exit_code,
                " ".join(j.command),
                j.reason or "",
            )
            for j in jobs
        ],
        right=["job", "attempt", "exit"],
    )


@job.command("show")
@click.argument("job_id", type=int)
@json_option
def job_show(job_id: int, as_json: bool) -> None:
    """Where the job ran and why (each template's verdict), and its timeline."""
    store = _store()
    j = store.get_job(job_id)
    events = store.timeline(job_id)
    if as_json:
        data = _job_dict(j)
        data["timeline"] = [
            {"at": e.at.isoformat(), "kind": e.kind, "detail": e.detail, "attempt": e.attempt}
            for e in events
        ]
        print_json(data)
        return
    print_table(
        ["job", "state", "queue", "where", "asks", "command"],
        [
            (
                j.id,
                j.state + (f" (exit {j.exit_code})" if j.exit_code is not None else ""),
                j.queue,
                f"{j.template} at {j.site}" if j.site else "-",
                j.request.describe(),
                " ".join(j.command),
            )
        ],
        title=f"job {j.id}",
    )
    if j.reason:
        click.echo(f"reason: {j.reason}")
    if j.timeout_seconds is not None:
        click.echo(f"time limit: {human_duration(j.timeout_seconds)} per attempt")
    if j.outputs_manifest is not None:
        click.echo(
            f"outputs: {j.outputs_files} file(s), {human_bytes(j.outputs_bytes)}; "
            f"list or download them with `lakecache job outputs {j.id} [--to DIR]`"
        )
    print_table(
        ["template", "site", "verdict", "why"],
        [(v.template, v.site, v.verdict, v.detail) for v in j.placement],
        title="placement",
    )
    start = events[0].at if events else j.created_at
    print_table(
        ["+time", "event", "attempt", "detail"],
        [
            (f"{(e.at - start).total_seconds():.2f} s", e.kind, e.attempt or "", e.detail)
            for e in events
        ],
        title="timeline",
        right=["+time"],
    )


@job.command("logs")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def job_logs(job_id: int, follow: bool) -> None:
    """Print the job's stdout and stderr (of its latest attempt)."""
    from lakecache.compute.sdk import log_chunks

    for chunk in log_chunks(_store(), job_id, follow=follow):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


@job.command("outputs")
@click.argument("job_id", type=int)
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Download them into this folder (made if missing); default: only list them.",
)
@json_option
def job_outputs(job_id: int, dest: Path | None, as_json: bool) -> None:
    """List the files the job left in its outputs folder (collected into the lake when it
    ended), or download them with --to DIR, each checked against its digest."""
    from lakecache.compute.sdk import download_outputs

    store = _store()
    if dest is None:
        files = store.outputs(job_id)
    else:
        files = download_outputs(store, get_hub(), job_id, dest)
    if as_json:
        print_json([f.as_dict() for f in files])
        return
    if not files:
        j = store.get_job(job_id)
        why = "it has not ended yet" if not j.done else "it wrote no file to its outputs folder"
        click.echo(f"job {job_id} has no outputs: {why}")
        return
    if dest is not None:
        total = sum(f.size for f in files)
        click.echo(f"downloaded {len(files)} file(s), {human_bytes(total)}, to {dest}")
        return
    print_table(
        ["path", "size", "digest"],
        [(f.path, human_bytes(f.size), f.digest[:16]) for f in files],
        right=["size"],
        title=f"outputs of job {job_id}",
    )


@job.command("cancel")
@click.argument("job_id", type=int)
def job_cancel(job_id: int) -> None:
    """Cancel a job: at once if it has not started, else its agent stops it."""
    j = _store().cancel(job_id, now=_now())
    if j.state == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id}: its agent stops it within a few seconds")
