"""Memoisation: an identical task reuses earlier outputs; anything changed runs again."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import make_files

from lakecache.compute.runner import JobRunner
from lakecache.data.dataset import Dataset
from lakecache.flows import FlowSpec
from lakecache.flows.engine import code_version
from lakecache.flows.store import FlowTaskRecord
from lakecache.lake.objects import manifest_key

from .conftest import FlowWorld


def _flow(lr: float = 0.1) -> FlowSpec:
    flow = FlowSpec("memo")
    flow.task(
        "count",
        command='mkdir "$LAKECACHE_OUTPUTS/n" && ls -R "$LAKECACHE_INPUT_XRAY" | wc -l '
        '> "$LAKECACHE_OUTPUTS/n/count" && echo {params.lr} >> "$LAKECACHE_OUTPUTS/n/count"',
        queue="q",
        inputs={"xray": {"dataset": "xray@latest"}},
        outputs=["n"],
        params={"lr": lr},
        memo=True,
    )
    flow.task("after", command="true", queue="q", inputs={"n": {"task": "count"}})
    return flow


def _run(world: FlowWorld, flow: FlowSpec, code: str = "none") -> dict[str, FlowTaskRecord]:
    engine = world.engine
    run = engine.wait(engine.start(flow, code=code), timeout=120)
    assert run.state == "succeeded"
    return {t.name: t for t in engine.store.tasks(run.id)}


def test_hits_and_misses(world: FlowWorld, running: JobRunner) -> None:
    first = _run(world, _flow())
    count = first["count"]
    assert count.reused_from is None and count.job_id is not None

    again = _run(world, _flow())
    hit = again["count"]
    assert hit.reused_from == count.id and hit.job_id is None
    assert hit.output_commit == count.output_commit
    assert again["after"].job_id is not None  # memo is opt-in

    # Other params: a miss.
    assert _run(world, _flow(lr=0.2))["count"].reused_from is None

    # A new input commit behind the same ref: a miss.
    xray = Dataset("xray", hub=world.hub)
    xray.commit(make_files(world.tmp / "xray-v2", n=4, size=100), message="v2")
    changed = _run(world, _flow())["count"]
    assert changed.reused_from is None
    # ... and the same again is a hit on that newer run.
    assert _run(world, _flow())["count"].reused_from == changed.id

    # Outputs gone from the lake: a miss, and the task runs again.
    commit = world.hub.catalog.get_commit(changed.output_dataset, changed.output_commit)
    world.hub.lake.delete([manifest_key(commit.manifest)])
    rerun = _run(world, _flow())["count"]
    assert rerun.reused_from is None and rerun.job_id is not None


def test_changed_code_is_never_a_hit(world: FlowWorld, running: JobRunner) -> None:
    repo = world.tmp / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    v1 = code_version(repo)
    assert v1.startswith("git:") and "+diff" not in v1
    first = _run(world, _flow(), code=v1)["count"]
    assert _run(world, _flow(), code=code_version(repo))["count"].reused_from == first.id
    (repo / "train.py").write_text("print(2)\n")  # uncommitted change
    v2 = code_version(repo)
    assert v2.startswith(v1 + "+diff:")
    assert _run(world, _flow(), code=v2)["count"].reused_from is None
    assert code_version(Path("/")) == "none"
