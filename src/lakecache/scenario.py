"""The chest X-ray scenario end to end (``lakecache example xray``, and part of ``make demo``).

Synthetic NIH ChestX-ray14-layout images are committed as dataset ``xray14``,
cached on the ``onprem`` site, and the AI library's own flow file
(``lakecache/library/flows/xray.yaml``: ``split -> prepare -> train (two
learning rates in parallel) -> pick the best on validation -> evaluate it
once on the test split``) runs on queue ``onprem``, whose compute is on that
site, each task a tracked job. What it leaves behind:

* ``xray14-split``, ``xray14-prepared`` and ``xray14-best`` dataset commits,
  each made by a flow task whose inputs name the commits it read (lineage
  dataset commit -> run -> dataset commit);
* a tracking run per task (params, per-epoch AUROC, system metrics, logs);
* the flow file itself in the work folder, to run again with
  ``lakecache flow run`` (``--param profile=full`` is the GPU setting).

The setup is idempotent: a site, volume, pool, template or queue that exists
is used as it is, the data is generated once per work folder, and committing
unchanged data makes no new version.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakecache.errors import UserError

DATASET = "xray14"
SITE = "onprem"
QUEUE = "onprem"
TEMPLATE = "xray-cpu"
COMPUTE = "xray-pool"
VOLUME = "xray-cache"
#: The AI library's flow file: the one this scenario runs.
FLOW_FILE = Path(__file__).parent / "library" / "flows" / "xray.yaml"
#: How the flow file starts each component.
_PYTHON = "python -m lakecache.library"


def flow_text(python: str | None = None) -> str:
    """The library's flow file, with ``python`` (default: this interpreter) in its commands.

    The agent's jobs inherit its ``PATH``, where ``python`` may be another
    interpreter, without lakecache: the scenario names its own.
    """
    text = FLOW_FILE.read_text()
    if _PYTHON not in text:
        raise AssertionError(f"{FLOW_FILE} no longer runs {_PYTHON!r}")
    return text.replace(_PYTHON, f"{shlex.quote(python or sys.executable)} -m lakecache.library")


@dataclass
class Outcome:
    """What the scenario did: ids to look up and the figures it printed."""

    run_id: int
    state: str
    dataset_commit: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    #: ``best.json`` of pick-best: the chosen training and every candidate's validation figure.
    best: dict[str, Any] = field(default_factory=dict)
    best_commit: str | None = None
    #: The chosen model's figures on the test split (``metrics.json`` of evaluate).
    evaluation: dict[str, Any] = field(default_factory=dict)
    lineage: list[str] = field(default_factory=list)
    flow_file: Path | None = None


def run_xray(
    workdir: Path,
    *,
    settings: Any = None,
    images: int = 240,
    size: int = 48,
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 1800,
    cpus: int = 2,
    say: Callable[[str], None] = print,
) -> Outcome:
    """Run the scenario with the catalog and lake of ``settings`` (default: the environment's).

    ``workdir`` holds the generated images, the flow file, the cache volume (when
    the site has none) and the jobs' folders. ``overrides`` are the flow's
    ``--param`` values (``profile``, ``epochs``, ``max_steps``, ``seed``,
    ``workers``); by default each task reads with no DataLoader worker (the
    pool gives it one CPU) and its jobs are told this lakecache home, so that
    training reads its cached input as a commit.
    """
    from lakecache.data.dataset import Dataset
    from lakecache.data.hub import Hub
    from lakecache.flows import FlowSpec
    from lakecache.flows.engine import FlowEngine
    from lakecache.settings import Settings

    settings = settings or Settings.load()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    hub = Hub(settings, remote=False)
    try:
        data = workdir / "chest-xray14"
        if not (data / "Data_Entry_2017.csv").is_file():
            from lakecache import synth

            say(f"generating {images} synthetic NIH-layout chest X-rays ({size} px) in {data}")
            counts = synth.generate_nih(
                data, images, size=size, images_per_folder=max(1, images // 2), seed=11
            )
            say(f"  {counts['images']} images of {counts['patients']} patients")
        ds = Dataset.create(
            DATASET, hub=hub, exist_ok=True, description="synthetic NIH ChestX-ray14 layout"
        )
        commit = ds.commit(data, "synthetic NIH ChestX-ray14 layout")
        say(f"committed {data.name} as {DATASET}@{commit.id[:12]}")
        _setup_site(hub, workdir, cpus)
        cache = _cache(hub, say)
        say(f"cached {DATASET}@{commit.id[:12]} on site {SITE}: {cache}")

        flow_file = workdir / "xray.yaml"
        flow_file.write_text(flow_text())
        spec = FlowSpec.from_yaml(flow_file)
        engine = FlowEngine(hub)
        params = {"workers": 0, "home": str(Path(settings.home).resolve()), **dict(overrides or {})}
        run_id = engine.start(spec, params)
        say(f"flow run {run_id} (xray) started from {flow_file}; its tasks run on queue {QUEUE}")
        stop, threads = _run_site(hub, workdir)
        try:
            run = engine.wait(run_id, timeout=timeout)
        except TimeoutError:
            raise UserError(
                f"flow run {run_id} is still running after {timeout:.0f} s",
                hint=f"Let an agent finish it (lakecache agent --site {SITE}) and follow it "
                f"with `lakecache flow show {run_id}`, or stop it: lakecache flow cancel {run_id}.",
            ) from None
        except KeyboardInterrupt:
            say(
                f"interrupted: flow run {run_id} stays as it is; an agent for {SITE} "
                f"(lakecache agent --site {SITE}) carries it on, or stop it with "
                f"`lakecache flow cancel {run_id}`"
            )
            raise
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        outcome = Outcome(run_id, run.state, commit.id, flow_file=flow_file)
        _collect(hub, engine, outcome)
        return outcome
    finally:
        hub.close()


def _setup_site(hub: Any, workdir: Path, cpus: int) -> None:
    """Site ``onprem`` with a cache volume, a local pool of ``cpus`` CPUs, a template of
    one CPU and queue ``onprem`` (two trainings side by side); what exists is kept."""
    from lakecache.cache.clock import SystemClock
    from lakecache.catalog.topology import Topology
    from lakecache.compute.model import Resources
    from lakecache.compute.store import ComputeStore

    now = SystemClock().now()
    topology = Topology(hub.catalog)
    store = ComputeStore(hub.catalog)
    if SITE not in {s.name for s in topology.list_sites()}:
        topology.add_site(SITE, "GPU cluster, NFS export on every node", now)
    if not topology.list_volumes(SITE):
        root = workdir / "volume"
        root.mkdir(parents=True, exist_ok=True)
        topology.add_volume(VOLUME, SITE, str(root), 10 * 10**9, 86400, now)
    if COMPUTE not in {c.name for c in topology.list_compute()}:
        topology.add_compute(COMPUTE, SITE, "local", {}, [], now)
        store.set_capacity(COMPUTE, Resources(cpus * 1000, cpus * 2 * 10**9, 0))
    if TEMPLATE not in {t.name for t in store.list_templates()}:
        store.add_template(TEMPLATE, COMPUTE, Resources(1000, 2 * 10**9), None, now)
    if QUEUE not in {q.name for q in store.list_queues()}:
        store.add_queue(QUEUE, [TEMPLATE], now=now)


def _cache(hub: Any, say: Callable[[str], None]) -> str:
    """Fill (or find) the cache of the dataset's latest commit on the site; its path."""
    from lakecache.cache.clock import SystemClock
    from lakecache.cache.service import CacheService

    caches = CacheService(hub, clock=SystemClock(), poll_every=0.05)
    rec = caches.request(DATASET, "latest", site=SITE)
    rec = caches.ensure_ready(rec, timeout=600)
    return str(caches.cache_path(rec))


def _run_site(hub: Any, workdir: Path) -> tuple[threading.Event, list[threading.Thread]]:
    """The site's job runner (what ``lakecache agent --site onprem`` runs), in a thread."""
    from lakecache.cache.clock import SystemClock
    from lakecache.cache.service import CacheService
    from lakecache.compute.runner import JobRunner

    caches = CacheService(hub, clock=SystemClock(), poll_every=0.05)
    runner = JobRunner(caches, SITE, interval=0.1, heartbeat_every=1.0, jobs_root=workdir / "jobs")
    thread = threading.Thread(target=runner.run_forever, name="xray-agent", daemon=True)
    thread.start()
    return runner.stop_event, [thread]


def _collect(hub: Any, engine: Any, outcome: Outcome) -> None:
    """Tasks, evaluations, the choice and the lineage of a finished run."""
    from lakecache.data.dataset import Dataset
    from lakecache.tracking.store import TrackingStore

    runs = TrackingStore(hub.catalog)
    tasks = engine.store.tasks(outcome.run_id)
    for t in tasks:
        outcome.tasks.append(
            {
                "name": t.name,
                "state": t.state,
                "job_id": t.job_id,
                "seconds": t.seconds,
                "reason": t.reason,
                "output_commit": t.output_commit,
                "input_commits": dict(t.input_commits),
                "output_commits": _dataset_outputs(t.output_commits),
                "tracking_runs": [r.id for r in runs.runs_of_job(t.job_id)] if t.job_id else [],
            }
        )
    if outcome.state != "succeeded":
        return
    best_ds = Dataset(f"{DATASET}-best", hub=hub)
    outcome.best_commit = best_ds.resolve("latest")
    pulled = Path(hub.settings.home) / "scenario-pulled" / outcome.best_commit[:12]
    if not (pulled / "best.json").is_file():
        best_ds.pull(outcome.best_commit, pulled)
    outcome.best = json.loads((pulled / "best.json").read_text())
    for t in tasks:
        if t.name == "evaluate" and t.job_id is not None:
            folder = _task_output(engine, t)
            metrics = folder / "evaluation" / "metrics.json" if folder is not None else None
            if metrics is not None and metrics.is_file():
                outcome.evaluation = json.loads(metrics.read_text())
    outcome.lineage = lineage(hub, engine, outcome)


def _dataset_outputs(output_commits: Mapping[str, Any]) -> dict[str, str]:
    """``{dataset: commit}`` of the outputs a task committed to a dataset of their own."""
    out: dict[str, str] = {}
    for value in (output_commits or {}).values():
        if isinstance(value, list | tuple) and len(value) >= 2:
            out[str(value[0])] = str(value[1])
        elif isinstance(value, Mapping) and "dataset" in value and "commit" in value:
            out[str(value["dataset"])] = str(value["commit"])
    return out


def _task_output(engine: Any, task: Any) -> Path | None:
    job = engine.jobs.get_job(task.job_id)
    if job.workdir is None:
        return None
    for candidate in (Path(job.workdir) / "outputs", Path(job.workdir)):
        if candidate.is_dir():
            return candidate
    return None


def lineage(hub: Any, engine: Any, outcome: Outcome) -> list[str]:
    """Lines "dataset@commit -> flow task (job, tracking run) -> dataset@commit": for each
    dataset the flow committed, what it was made from, back to the source commit."""
    by_commit = {t["output_commit"]: t for t in outcome.tasks if t["output_commit"]}
    lines = []
    for t in outcome.tasks:
        reads = []
        for v in (t["input_commits"] or {}).values():
            ds, commit = v[0], v[1]
            upstream = by_commit.get(commit)
            reads.append(f"{upstream['name']}'s output" if upstream else f"{ds}@{commit[:12]}")
        made = [f"{d}@{c[:12]}" for d, c in sorted((t["output_commits"] or {}).items())]
        runs = ",".join(str(r) for r in t["tracking_runs"]) or "-"
        line = f"{', '.join(reads) or '-'} -> {t['name']} (job {t['job_id']}, run {runs})"
        lines.append(line + (f" -> {', '.join(made)}" if made else ""))
    return lines
