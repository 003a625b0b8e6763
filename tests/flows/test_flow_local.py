"""Flows end to end on the local backend: real processes, real caches, real lake commits."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from lakecache.compute.runner import JobRunner
from lakecache.data.dataset import Dataset
from lakecache.flows import FlowSpec

from .conftest import PY, FlowWorld

PREPARE = (
    "import os, pathlib; src = pathlib.Path(os.environ['LAKECACHE_INPUT_XRAY']); "
    "out = pathlib.Path(os.environ['LAKECACHE_OUTPUTS'], 'data'); out.mkdir(); "
    "n = sum(1 for p in src.rglob('*') if p.is_file()); (out / 'count.txt').write_text(str(n))"
)
TRAIN = (
    "import os, sys, pathlib; lr = float(sys.argv[1]); "
    "n = int(pathlib.Path(os.environ['LAKECACHE_INPUT_PREP'], 'data', 'count.txt').read_text()); "
    "out = pathlib.Path(os.environ['LAKECACHE_OUTPUTS'], 'model'); out.mkdir(); "
    "(out / 'score.txt').write_text(str(n - abs(lr - 0.5) * 10))"
)
PICK = (
    "import os, json, pathlib; names = os.environ['LAKECACHE_UPSTREAM_MODELS'].split(); "
    "params = json.loads(os.environ['LAKECACHE_UPSTREAM_MODELS_PARAMS']); "
    "scores = [float(pathlib.Path(os.environ[v], 'model', 'score.txt').read_text()) "
    "for v in names]; "
    "best = max(range(len(names)), key=lambda i: scores[i]); "
    "out = pathlib.Path(os.environ['LAKECACHE_OUTPUTS'], 'best'); out.mkdir(); "
    "choice = {'lr': params[best]['lr'], 'score': scores[best], 'of': len(names)}; "
    "(out / 'choice.json').write_text(json.dumps(choice))"
)


def pipeline(tmp: Path) -> FlowSpec:
    text = textwrap.dedent(
        f"""\
        name: pipeline
        tasks:
          prepare:
            command: [{PY!r}, -c, {PREPARE!r}]
            queue: q
            inputs: {{xray: {{dataset: xray@v1, cached: true}}}}
            outputs: [data]
          train:
            params: {{lr: [0.1, 0.5, 0.9]}}
            command: [{PY!r}, -c, {TRAIN!r}, "{{params.lr}}"]
            queue: q
            inputs: {{prep: {{task: prepare}}}}
            outputs: [model]
          pick:
            command: [{PY!r}, -c, {PICK!r}]
            queue: q
            inputs: {{models: {{task: train}}}}
            outputs: {{best: {{dataset: best-model}}}}
        """
    )
    path = tmp / "pipeline.yaml"
    path.write_text(text)
    return FlowSpec.from_yaml(path)


def test_fan_out_pick_best_and_dataset_output_with_lineage(
    world: FlowWorld, running: JobRunner
) -> None:
    engine = world.engine
    run_id = engine.start(pipeline(world.tmp))
    run = engine.wait(run_id, timeout=120)
    tasks = {t.name: t for t in engine.store.tasks(run_id)}
    assert run.state == "succeeded", [(t.name, t.state, t.reason) for t in tasks.values()]
    assert list(tasks) == [
        "prepare",
        "train[lr=0.1]",
        "train[lr=0.5]",
        "train[lr=0.9]",
        "pick",
    ]
    assert all(t.job_id is not None and t.seconds is not None for t in tasks.values())
    # The best of the three trainings, read from their outputs passed downstream.
    best = Dataset("best-model", hub=world.hub)
    commit_id = best.resolve("latest")
    choice = json.loads(_read(best, commit_id, "choice.json"))
    assert choice == {"lr": 0.5, "score": 9.0, "of": 3}
    # Lineage: dataset -> run -> dataset.
    pick = engine.store.produced("best-model", commit_id)
    assert pick is not None and pick.name == "pick" and pick.run_id == run_id
    assert sorted(pick.input_commits) == ["models_0", "models_1", "models_2"]
    prepare = tasks["prepare"]
    xray = Dataset("xray", hub=world.hub).resolve("v1")
    assert prepare.input_commits == {"xray": ["xray", xray, "cached"]}
    upstream = {v[1] for v in pick.input_commits.values()}
    assert upstream == {tasks[n].output_commit for n in tasks if n.startswith("train")}
    assert f"run {run_id} task pick" in best.get_commit(commit_id).message


def _read(ds: Dataset, commit_id: str, path: str) -> bytes:
    out = ds.hub.settings.home / "pulled"
    ds.pull(commit_id, out)
    return (out / path).read_bytes()


def test_outputs_collected_to_the_lake_are_used_when_the_agents_folder_is_elsewhere(
    world: FlowWorld,
) -> None:
    """An agent on another machine: its attempt folder is not here, the lake has the outputs."""
    import shutil
    import time

    flow = FlowSpec("remote")
    flow.task(
        "make",
        command='mkdir "$LAKECACHE_OUTPUTS/o" && echo far > "$LAKECACHE_OUTPUTS/o/f"',
        queue="q",
        outputs={"o": {"dataset": "far-away"}},
    )
    engine = world.engine
    run_id = engine.start(flow)
    (task,) = engine.store.tasks(run_id)
    runner = world.runner()
    try:
        deadline = time.monotonic() + 60
        while not (job := world.store.get_job(task.job_id or 0)).done:
            assert time.monotonic() < deadline
            runner.run_once()
            time.sleep(0.05)
    finally:
        runner.close()
    assert job.state == "succeeded" and job.workdir is not None
    shutil.rmtree(job.workdir)
    run = engine.wait(run_id, timeout=60)
    assert run.state == "succeeded", engine.store.tasks(run_id)[0].reason
    # The dataset output is the task's folder o/, committed as the dataset's whole tree.
    assert _read(Dataset("far-away", hub=world.hub), "latest", "f") == b"far\n"


def test_run_flow_from_python(world: FlowWorld, running: JobRunner) -> None:
    from lakecache.flows import run_flow

    flow = FlowSpec("py")
    flow.task("hello", command=["sh", "-c", "echo {params.who}"], queue="q", params={"who": "x"})
    run = run_flow(flow, params={"hello.who": "there"}, wait=True, timeout=120, hub=world.hub)
    assert run.state == "succeeded" and run.counts == {"succeeded": 1}
    (task,) = world.engine.store.tasks(run.id)
    assert task.spec.command == ("sh", "-c", "echo there")
