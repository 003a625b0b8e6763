"""The flow engine: start a run, advance it job by job, cancel and resume it.

State lives in the catalog only (:mod:`lakecache.flows.store`); an advance is
a pass over one run that:

1. reads the jobs of its running tasks (one query) and moves each task on:
   a succeeded job's outputs are committed to the lake (the flow's artifacts
   dataset, and each ``dataset:`` output as a version of its own dataset); a
   failed one is submitted again while retries are left, else the task fails;
   a task past its timeout has its job cancelled and counts as failed;
2. skips the pending tasks whose upstream failed, and for the others whose
   upstream all succeeded, reuses an earlier identical task (memoisation, where
   the task opts in) or submits a job;
3. ends the run when every task has ended: succeeded, or failed naming the
   tasks that failed (independent branches still ran to the end).

Any process may advance (the server's flow thread, ``flow run --wait``, an
agent); one at a time per run holds a short lease for its pass, so a server that restarts
or a ``--wait`` that is interrupted leaves the run to the next advancer (at
once between passes; after the lease if it died during one). An
agent that dies under a job is the jobs layer's to handle: the job is
requeued, and the flow just sees it run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.catalog.leader import exclusive
from lakecache.compute.model import BatchRefusedError, InputSpec, JobSpec, Resources
from lakecache.compute.store import ComputeStore
from lakecache.errors import ConflictError, LakecacheError, NotFoundError, UserError
from lakecache.flows.spec import ARTIFACTS_PREFIX, FlowSpec, Plan, PlannedTask, plan
from lakecache.flows.store import (
    FINAL_TASK_STATES,
    JOB_KEY_ENV,
    FlowRunRecord,
    FlowStore,
    FlowTaskRecord,
    TaskMove,
    job_key,
)

if TYPE_CHECKING:
    from lakecache.data.hub import Hub

log = logging.getLogger("lakecache.flows")

#: The job layer stops a task's job at its timeout; the engine cancels it itself only this
#: many seconds later (a job whose agent cannot enforce the limit).
TIMEOUT_GRACE = 15.0
#: How long an advancer's hold on a run lasts if it dies during a pass (it is held for
#: one pass, then released).
LEASE = timedelta(seconds=15)


def _now() -> datetime:
    return datetime.now(UTC)


class CatalogCatalogue:
    """What flow checking asks, answered from the catalog (queues read once)."""

    def __init__(self, hub: Hub) -> None:
        from lakecache.compute.sdk import jobs_store

        self._hub = hub
        # The catalog's, or logged in, the server's (``flow check`` as the server sees it).
        self._queues = jobs_store(hub).list_queues()

    def queues(self) -> set[str]:
        return {q.name for q in self._queues}

    def template_queues(self) -> dict[str, str]:
        return {q.templates[0]: q.name for q in self._queues if len(q.templates) == 1}

    def resolve(self, dataset: str, ref: str) -> str:
        return self._hub.catalog.resolve(dataset, ref)


def code_version(folder: Path) -> str:
    """``git:<commit>`` (``+diff:<hash>`` with uncommitted changes) of the checkout holding
    ``folder``; ``none`` outside a git checkout. A changed file changes the version."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if head.returncode != 0:
            return "none"
        diff = subprocess.run(
            ["git", "-C", str(folder), "diff", "HEAD", "--binary"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return "none"
    version = f"git:{head.stdout.strip()}"
    if diff.stdout:
        version += f"+diff:{hashlib.sha256(diff.stdout).hexdigest()[:16]}"
    return version


def artifacts_dataset(flow: str) -> str:
    """The dataset a flow's task outputs are committed to: one commit per task run."""
    return f"{ARTIFACTS_PREFIX}{flow}"


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


class FlowEngine:
    """Starts, advances, cancels and resumes flow runs in ``hub``'s catalog.

    Safe to use from several threads and processes at once (see the module notes).
    """

    def __init__(self, hub: Hub, *, owner: str | None = None, lease: timedelta = LEASE) -> None:
        self.hub = hub
        #: How long a run stays held by this engine if it dies during a pass.
        self.lease = lease
        self.store = FlowStore(hub.catalog)
        self.jobs = ComputeStore(hub.catalog)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._digests: dict[str, str] = {}
        #: Seconds each dispatch took (submit a job, or reuse): read by the bench.
        self.dispatch_seconds: list[float] = []
        self._changed = False

    # -- start -----------------------------------------------------------------------------

    def plan(self, flow: FlowSpec, overrides: Mapping[str, Any] | None = None) -> Plan:
        """Check and expand ``flow`` against this catalog (FlowSpecError lists mistakes)."""
        return plan(flow, CatalogCatalogue(self.hub), overrides)

    def start(
        self,
        flow: FlowSpec,
        overrides: Mapping[str, Any] | None = None,
        *,
        code: str = "none",
        submitted_by: str | None = None,
        advance: bool = True,
    ) -> int:
        """Check ``flow``, record a run of it, and (``advance``) submit its first tasks.

        Returns:
            The run's id.

        Raises:
            FlowSpecError: every mistake in the flow; nothing is recorded then.
        """
        checked = self.plan(flow, overrides)
        source = flow.text or json.dumps({"name": flow.name, "tasks": [t.name for t in flow.tasks]})
        run_id = self.store.create_run(
            checked,
            source=source,
            code_version=code,
            submitted_by=submitted_by or self.hub.author,
            now=_now(),
        )
        if advance:
            self.advance(run_id)
        return run_id

    # -- advance ---------------------------------------------------------------------------

    def advance_all(self) -> int:
        """Advance every running run this engine can take; returns runs still running."""
        running = 0
        for run_id in self.store.running_runs():
            try:
                if self.advance(run_id):
                    running += 1
            except LakecacheError as exc:
                log.warning("flow run %d: %s", run_id, exc.message)
        return running

    def advance(self, run_id: int) -> bool:
        """One pass over run ``run_id`` (see the module notes); True while it still runs.

        A run another advancer holds is left alone (True is returned)."""
        now = _now()
        if not self.store.take_run(run_id, self.owner, now=now, lease=self.lease):
            return not self.store.get_run(run_id).done
        self._changed = False
        try:
            return self._advance(run_id)
        finally:
            self.store.release_run(run_id, self.owner, changed=self._changed)

    def _advance(self, run_id: int) -> bool:
        run = self.store.get_run(run_id)
        tasks = self.store.tasks(run_id)
        by_name = {t.name: t for t in tasks}
        live = [t.job_id for t in tasks if t.state == "running" and t.job_id is not None]
        jobs = self.store.job_states(live) if live else {}
        changed: dict[str, FlowTaskRecord] = {}
        # Announced by an advancer that stopped before it recorded their jobs.
        announced = [t for t in tasks if t.state == "running" and t.job_id is None]
        for task in tasks:
            if task.state == "running" and task.job_id is not None:
                job = jobs.get(task.job_id)
                if job is not None:
                    moved = self._follow(task, job)
                    if moved is not None:
                        self._changed = True
                        changed[task.name] = moved
        by_name.update(changed)
        ready: list[FlowTaskRecord] = []
        for task in tasks:
            task = by_name[task.name]
            if task.state != "pending":
                continue
            deps = [by_name[d] for d in task.spec.deps]
            bad = [d for d in deps if d.state in ("failed", "cancelled", "skipped")]
            if bad:
                why = f"upstream {bad[0].name} {bad[0].state}"
                moved = self.store.move(
                    task, ["pending"], state="skipped", reason=why, ended_at=_now()
                )
                if moved is not None:
                    self._changed = True
                    by_name[task.name] = moved
                continue
            if all(d.state == "succeeded" for d in deps):
                ready.append(task)
        if ready or announced:
            for moved in self._dispatch(run, ready, announced, by_name):
                self._changed = True
                by_name[moved.name] = moved
        states = [t.state for t in by_name.values()]
        if all(s in FINAL_TASK_STATES for s in states):
            failed = [t for t in by_name.values() if t.state == "failed"]
            if failed:
                names = ", ".join(f"{t.name} ({t.reason})" for t in failed[:5])
                more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
                self.store.end_run(run_id, "failed", f"task {names}{more} failed", now=_now())
            elif any(s == "cancelled" for s in states):
                self.store.end_run(run_id, "cancelled", "cancelled", now=_now())
            else:
                self.store.end_run(run_id, "succeeded", None, now=_now())
            return False
        return True

    def _follow(self, task: FlowTaskRecord, job: Mapping[str, Any]) -> FlowTaskRecord | None:
        """Move a running task on from its job's state; the task as it is now, if changed."""
        state = job["state"]
        spec = task.spec
        if state in ("queued", "placed", "running"):
            if (
                spec.timeout is not None
                and state == "running"
                and not task.timed_out
                and (_now() - job["updated_at"]).total_seconds() > spec.timeout + TIMEOUT_GRACE
            ) and self.store.move(task, ["running"], timed_out=True) is not None:
                try:
                    self.jobs.cancel(int(job["id"]), now=_now())
                except ConflictError:
                    pass  # it ended meanwhile; the next pass reads how
            return None
        if state == "succeeded":
            try:
                outputs = self._collect(task, job)
            except LakecacheError as exc:
                return self._fail_or_retry(task, f"outputs not collected: {exc.message}")
            return self.store.move(task, ["running"], state="succeeded", ended_at=_now(), **outputs)
        if state == "cancelled" and not task.timed_out:
            return self.store.move(
                task,
                ["running"],
                state="cancelled",
                reason="its job was cancelled",
                ended_at=_now(),
            )
        if task.timed_out:
            reason = f"timed out after {spec.timeout:g} s"
        else:
            code = job.get("exit_code")
            reason = job.get("reason") or (f"exit code {code}" if code is not None else "failed")
            reason = f"job {job['id']}: {reason}"
        return self._fail_or_retry(task, reason)

    def _fail_or_retry(self, task: FlowTaskRecord, reason: str) -> FlowTaskRecord | None:
        if task.tries <= task.spec.retries:
            log.info("flow task %s failed (%s); retrying", task.name, reason)
            return self.store.move(
                task, ["running"], state="pending", reason=f"retrying: {reason}", timed_out=False
            )
        return self.store.move(task, ["running"], state="failed", reason=reason, ended_at=_now())

    # -- dispatch: reuse, or submit a job --------------------------------------------------

    def _upstream_inputs(
        self, task: FlowTaskRecord, deps: Sequence[FlowTaskRecord]
    ) -> tuple[list[InputSpec], dict[str, str]]:
        """The upstream outputs a task reads, as job inputs, and the variables naming them."""
        inputs: list[InputSpec] = []
        env: dict[str, str] = {}
        for name, upstream, mode in task.spec.upstream:
            instances = [d for d in deps if d.task == upstream and d.output_commit]
            fanned = len(instances) > 1 or any(d.name != d.task for d in instances)
            names, params = [], []
            for k, d in enumerate(instances):
                iname = f"{name}_{k}" if fanned else name
                assert d.output_dataset is not None and d.output_commit is not None
                spec = InputSpec(
                    iname, d.output_dataset, d.output_commit[:12], d.output_commit, mode
                )
                inputs.append(spec)
                names.append(spec.env_var)
                params.append(dict(d.spec.params))
            env[f"LAKECACHE_UPSTREAM_{_env_name(name)}"] = " ".join(names)
            env[f"LAKECACHE_UPSTREAM_{_env_name(name)}_PARAMS"] = json.dumps(params)
        return inputs, env

    def _inputs(
        self, task: FlowTaskRecord, by_name: Mapping[str, FlowTaskRecord]
    ) -> tuple[list[InputSpec], dict[str, str], dict[str, Any]]:
        """A ready task's job inputs (datasets, then upstream outputs), the variables
        naming the upstream ones, and what the task records as read."""
        spec = task.spec
        datasets = [InputSpec(n, d, r, c, m) for n, d, r, c, m in spec.datasets]
        upstream, env = self._upstream_inputs(task, [by_name[d] for d in spec.deps])
        inputs = datasets + upstream
        return inputs, env, {i.name: [i.dataset, i.commit_id, i.mode] for i in inputs}

    def _job_spec(
        self,
        run: FlowRunRecord,
        task: FlowTaskRecord,
        inputs: list[InputSpec],
        up_env: dict[str, str],
    ) -> JobSpec:
        spec = task.spec
        env = dict(spec.env)
        env.update(up_env)
        env.update(
            LAKECACHE_FLOW_RUN=str(task.run_id),
            LAKECACHE_FLOW_TASK=task.name,
            LAKECACHE_PARAMS=json.dumps(dict(spec.params)),
        )
        # The attempt's name: an advancer that finds the task announced but without
        # its job looks the job up by it (``len(jobs)`` is fixed until the job is recorded).
        env[JOB_KEY_ENV] = job_key(run.id, task.id, len(task.jobs))
        return JobSpec(
            spec.queue,
            spec.command,
            Resources(round(spec.cpu * 1000), spec.memory, spec.gpu),
            tuple(inputs),
            env,
            spec.image,
            timeout_seconds=None if spec.timeout is None else max(1, math.ceil(spec.timeout)),
        )

    def _dispatch(
        self,
        run: FlowRunRecord,
        ready: Sequence[FlowTaskRecord],
        announced: Sequence[FlowTaskRecord],
        by_name: Mapping[str, FlowTaskRecord],
    ) -> list[FlowTaskRecord]:
        """Start the ``ready`` tasks of a pass together: reuse (memo), or submit a job.

        Three transactions, whatever the number of tasks: the tasks are *announced*
        (pending -> running, no job yet), their jobs are submitted in one batch, each
        named by :func:`job_key`, then the jobs are recorded on the tasks. An advancer
        that dies between the batch and the record leaves tasks announced without a
        job: the next pass looks their jobs up by key (``announced``) and records
        them, or submits the ones that never were: no task runs twice. Returns the
        tasks that moved, as they are now."""
        t0 = time.perf_counter()
        moved: list[FlowTaskRecord] = []
        pending: list[tuple[FlowTaskRecord, JobSpec]] = []
        announce: list[TaskMove] = []
        for task in ready:
            inputs, up_env, input_commits = self._inputs(task, by_name)
            memo_key = None
            if task.spec.memo:
                memo_key = self.memo_key(task.spec, run.code_version, inputs)
                reused = self._reuse(task, memo_key, input_commits)
                if reused is not None:
                    moved.append(reused)
                    continue
            now = _now()
            values = {
                "state": "running",
                "job_id": None,
                "tries": task.tries + 1,
                "started_at": task.started_at or now,
                "ended_at": None,
                "memo_key": memo_key,
                "input_commits": dict(input_commits),
            }
            announce.append(TaskMove(task, ("pending",), values, check_job=False))
            pending.append((task, self._job_spec(run, task, inputs, up_env)))
        submit: list[tuple[FlowTaskRecord, JobSpec]] = []
        for (_, job), now_task in zip(pending, self.store.move_many(announce), strict=True):
            if now_task is not None:  # else cancelled or taken meanwhile
                moved.append(now_task)
                submit.append((now_task, job))
        record: list[tuple[FlowTaskRecord, int]] = []
        if announced:
            keys = {}
            for task in announced:
                inputs, up_env, _ = self._inputs(task, by_name)
                job = self._job_spec(run, task, inputs, up_env)
                keys[task.id] = (job.env[JOB_KEY_ENV], job)
            found = self.store.jobs_by_key(run, [k for k, _ in keys.values()])
            for task in announced:
                key, job = keys[task.id]
                if key in found:
                    record.append((task, found[key]))
                else:
                    submit.append((task, job))
            log.info(
                "flow run %d: %d task(s) announced without their job: %d found, %d submitted",
                run.id,
                len(announced),
                len(record),
                len(announced) - len(record),
            )
        if submit and self.store.take_run(run.id, self.owner, now=_now(), lease=self.lease):
            # The hold was renewed first: a pass longer than the lease must not let a
            # second advancer submit the same tasks' jobs meanwhile.
            failed, submitted = self._submit(run, submit)
            moved += failed
            record += submitted
        if record:
            now_tasks = self.store.move_many(
                [
                    TaskMove(
                        task,
                        ("running",),
                        {"job_id": job_id, "jobs": [*task.jobs, job_id]},
                    )
                    for task, job_id in record
                ]
            )
            for (_, job_id), now_task in zip(record, now_tasks, strict=True):
                if now_task is not None:
                    moved.append(now_task)
                    continue
                # Cancelled meanwhile: the job is not wanted.
                try:
                    self.jobs.cancel(job_id, now=_now())
                except ConflictError:
                    pass
        started = len(pending) + len(announced)
        if started:
            each = (time.perf_counter() - t0) / started
            self.dispatch_seconds.extend([each] * started)
        latest = {t.name: t for t in moved}
        return list(latest.values())

    def _submit(
        self, run: FlowRunRecord, batch: list[tuple[FlowTaskRecord, JobSpec]]
    ) -> tuple[list[FlowTaskRecord], list[tuple[FlowTaskRecord, int]]]:
        """Submit the jobs of ``batch`` together; the tasks failed because their job was
        refused (a queue gone, a size no template fits), and each other task's job."""
        failed: list[FlowTaskRecord] = []
        while batch:
            try:
                jobs = self.jobs.submit_many(
                    [job for _, job in batch], submitted_by=run.submitted_by, now=_now()
                )
            except UserError as exc:
                index = exc.index if isinstance(exc, BatchRefusedError) else 0
                refused = exc.refused if isinstance(exc, BatchRefusedError) else exc
                task = batch.pop(index)[0]
                now_task = self.store.move(
                    task, ["running"], state="failed", reason=refused.message, ended_at=_now()
                )
                if now_task is not None:
                    failed.append(now_task)
                continue
            return failed, [(task, job.id) for (task, _), job in zip(batch, jobs, strict=True)]
        return failed, []

    def _reuse(
        self, task: FlowTaskRecord, memo_key: str, input_commits: Mapping[str, Any]
    ) -> FlowTaskRecord | None:
        """The task moved to succeeded with an earlier identical task's outputs, if there
        is one whose outputs are still there."""
        hit = self.store.memo_hit(memo_key)
        if hit is None or not self._outputs_present(hit):
            return None
        origin = hit.reused_from or hit.id
        now = _now()
        return self.store.move(
            task,
            ["pending"],
            check_job=False,
            state="succeeded",
            started_at=now,
            ended_at=now,
            memo_key=memo_key,
            reused_from=origin,
            reason=f"reused the outputs of task {origin} (run {hit.run_id})",
            input_commits=dict(input_commits),
            output_dataset=hit.output_dataset,
            output_commit=hit.output_commit,
            output_commits=dict(hit.output_commits),
        )

    # -- memoisation -----------------------------------------------------------------------

    def image_digest(self, image: str | None) -> str | None:
        """The image's content digest where it can be learnt here (podman), else its name.

        A name with ``@sha256:`` is a digest already; a tag is asked of the local image
        store once per engine, since a tag can move to new content."""
        if image is None or "@sha256:" in image:
            return image
        if image not in self._digests:
            digest = image
            exe = shutil.which("podman")
            if exe is not None:
                try:
                    out = subprocess.run(
                        [exe, "image", "inspect", "--format", "{{.Id}}", image],
                        capture_output=True,
                        text=True,
                        timeout=30,
                    )
                    if out.returncode == 0 and out.stdout.strip():
                        digest = f"{image}@{out.stdout.strip()}"
                except (OSError, subprocess.SubprocessError):
                    pass
            self._digests[image] = digest
        return self._digests[image]

    def memo_key(self, spec: PlannedTask, code: str, inputs: Sequence[InputSpec]) -> str:
        """The hash of everything that decides a task's result: image digest, command,
        environment, code version, params, input commits and upstream outputs."""
        doc = {
            "image": self.image_digest(spec.image),
            "command": list(spec.command),
            "env": dict(sorted(spec.env.items())),
            "code": code,
            "params": spec.params,
            "inputs": sorted([i.name, i.dataset, i.commit_id] for i in inputs),
            "outputs": [[o.name, o.dataset] for o in spec.outputs],
        }
        raw = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()

    def _outputs_present(self, task: FlowTaskRecord) -> bool:
        """True if every commit the task produced is still in the catalog and the lake."""
        from lakecache.lake.objects import manifest_key

        pairs: list[tuple[str, str]] = []
        if task.output_dataset and task.output_commit:
            pairs.append((task.output_dataset, task.output_commit))
        pairs += [(str(d), str(c)) for d, c in task.output_commits.values()]
        keys = []
        for dataset, commit_id in pairs:
            try:
                commit = self.hub.catalog.get_commit(dataset, commit_id)
            except LakecacheError:
                return False
            keys.append(manifest_key(commit.manifest))
        if not keys:
            return True
        return self.hub.lake.exists(keys) == set(keys)

    # -- outputs ---------------------------------------------------------------------------

    def _collect(self, task: FlowTaskRecord, job: Mapping[str, Any]) -> dict[str, Any]:
        """Commit a succeeded job's outputs folder; the task's output columns."""

        spec = task.spec
        workdir = job.get("workdir")
        folder = Path(workdir) / "outputs" if workdir else None
        if folder is None or not folder.is_dir():
            # The agent ran it elsewhere: its outputs were collected to the lake.
            folder = self._downloaded(int(job["id"]))
            if folder is None:
                if not spec.outputs:
                    return {}
                raise UserError(
                    f"job {job['id']} left no outputs in the lake nor on this machine",
                    hint="Check the job's timeline (`lakecache job show ID`).",
                )
        try:
            return self._commit_outputs(task, job, folder)
        finally:
            if folder.parent.name == "flow-outputs-tmp":
                shutil.rmtree(folder, ignore_errors=True)

    def _downloaded(self, job_id: int) -> Path | None:
        """The job's outputs collected to the lake, downloaded to a folder of their own."""
        from lakecache.compute.sdk import download_outputs

        if not self.jobs.outputs(job_id):
            return None
        dest = self.hub.settings.home / "flow-outputs-tmp" / f"job-{job_id}-{os.getpid()}"
        shutil.rmtree(dest, ignore_errors=True)
        download_outputs(self.jobs, self.hub, job_id, dest)
        return dest

    def _commit_outputs(
        self, task: FlowTaskRecord, job: Mapping[str, Any], folder: Path
    ) -> dict[str, Any]:
        spec = task.spec
        missing = [o.name for o in spec.outputs if not (folder / o.name).is_dir()]
        if missing:
            raise UserError(
                f"the task wrote no folder {', '.join(missing)} under $LAKECACHE_OUTPUTS",
                hint="Write each declared output as a folder in $LAKECACHE_OUTPUTS.",
            )
        if not spec.outputs and not any(folder.iterdir()):
            return {}
        run = self.store.get_run(task.run_id)
        read = (
            ", ".join(f"{v[0]}@{v[1][:12]}" for v in task.input_commits.values()) or "no datasets"
        )
        message = f"flow {run.flow} run {run.id} task {task.name} (job {job['id']}); read {read}"
        name = artifacts_dataset(run.flow)
        commit_id = self._commit(name, folder, message, run.submitted_by)
        self._let_read(name, run.submitted_by)
        out: dict[str, Any] = {"output_dataset": name, "output_commit": commit_id}
        datasets = {}
        for o in spec.outputs:
            if o.dataset is not None:
                datasets[o.name] = [
                    o.dataset,
                    self._commit(o.dataset, folder / o.name, message, run.submitted_by),
                ]
        out["output_commits"] = datasets
        return out

    def _let_read(self, dataset: str, user: str) -> None:
        """Make the run's submitter a reader of the artifacts dataset (if not a member yet),
        so that the jobs of their downstream tasks, which read as them, may read it."""
        from lakecache.catalog.accounts import Accounts

        accounts = Accounts(self.hub.catalog)
        try:
            accounts.get_member(dataset, user)
        except NotFoundError:
            try:
                accounts.set_member(dataset, user, "reader", now=_now())
            except NotFoundError:
                pass  # no such account: the catalog is used directly, without people
        except LakecacheError as exc:
            log.warning("flow artifacts %s: %s", dataset, exc.message)

    def _commit(self, dataset: str, folder: Path, message: str, user: str) -> str:
        """Commit as the run's owner ``user``, with their rights checked now, never as this
        process's identity (see :mod:`lakecache.flows.service`)."""
        from lakecache.flows.service import commit_as

        return commit_as(self.hub, dataset, folder, message, user=user)

    # -- cancel and resume -----------------------------------------------------------------

    def cancel(self, run_id: int) -> FlowRunRecord:
        """Cancel a running run: its pending tasks at once, its jobs through their agents.

        Raises:
            ConflictError: the run has already ended.
        """
        run = self.store.get_run(run_id)
        if run.done:
            raise ConflictError(
                f"flow run {run_id} already {run.state}",
                hint=f"Resume it with `lakecache flow resume {run_id}`."
                if run.state != "succeeded"
                else "",
            )
        stop: list[int] = []
        unrecorded: list[FlowTaskRecord] = []
        for task in self.store.tasks(run_id):
            if task.state == "pending":
                self.store.move(
                    task, ["pending"], state="cancelled", reason="run cancelled", ended_at=_now()
                )
            elif task.state == "running" and self.store.move(
                task,
                ["running"],
                state="cancelled",
                reason="run cancelled",
                ended_at=_now(),
            ):
                if task.job_id is not None:
                    stop.append(task.job_id)
                else:
                    unrecorded.append(task)
        if unrecorded:
            # Announced, their job perhaps submitted by an advancer that died before
            # recording it: found by its key.
            keys = [job_key(run_id, t.id, len(t.jobs)) for t in unrecorded]
            stop += self.store.jobs_by_key(run, keys).values()
        for job_id in stop:
            try:
                self.jobs.cancel(job_id, now=_now())
            except ConflictError:
                pass
        self.store.end_run(run_id, "cancelled", "cancelled by request", now=_now())
        return self.store.get_run(run_id)

    def resume(self, run_id: int) -> FlowRunRecord:
        """Run an ended run again: only its failed, cancelled and skipped tasks (and so what
        depends on them); its succeeded tasks and their outputs are kept.

        Raises:
            ConflictError: it is still running, or it succeeded (nothing to re-run).
        """
        run = self.store.get_run(run_id)
        if not run.done:
            raise ConflictError(
                f"flow run {run_id} is still running", hint="Wait for it, or cancel it first."
            )
        if run.state == "succeeded":
            raise ConflictError(
                f"flow run {run_id} succeeded: nothing to re-run",
                hint="Start a new run with `lakecache flow run FILE`.",
            )
        for task in self.store.tasks(run_id):
            if task.state in ("failed", "cancelled", "skipped"):
                self.store.move(
                    task,
                    [task.state],
                    check_job=False,
                    state="pending",
                    reason=None,
                    tries=0,
                    timed_out=False,
                    ended_at=None,
                )
        self.store.reopen_run(run_id, now=_now())
        self.advance(run_id)
        return self.store.get_run(run_id)

    # -- waiting ---------------------------------------------------------------------------

    def wait(
        self, run_id: int, timeout: float | None = None, *, poll: float = 0.2
    ) -> FlowRunRecord:
        """Advance run ``run_id`` until it ends; returns its final record.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.advance(run_id):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run_id} still running after {timeout} s")
            time.sleep(poll)
        return self.store.get_run(run_id)


class FlowAdvancer:
    """A thread that advances every running flow run, for a server or an agent process."""

    def __init__(self, hub: Hub, *, interval: float = 0.5) -> None:
        self.engine = FlowEngine(hub)
        self.interval = interval
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        while not self.stop_event.is_set():
            try:
                # Every server replica runs this loop: one at a time advances the runs.
                with exclusive(self.engine.hub.catalog, "flow-advancer") as held:
                    if held:
                        self.engine.advance_all()
            except LakecacheError as exc:
                log.warning("advancing flows failed: %s", exc.message)
            except Exception:  # noqa: BLE001 - a catalog outage must not end the loop
                log.exception("advancing flows failed; trying again in %.1f s", self.interval)
            self.stop_event.wait(self.interval)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run_forever, name="flows", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
