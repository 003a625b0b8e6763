"""The chest X-ray scenario end to end on the local backend (real jobs, real cache, real lake).

Synthetic NIH-layout images are committed, cached on site onprem, and the AI
library's flow file ``split -> prepare -> train x2 (lr) -> pick (validation) ->
evaluate (test, once)`` runs on queue onprem as real job processes, each tracked.
Tiny images and one or two steps: this checks the path and the bookkeeping, not
that the model learns (tests/library does that).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.flows.store import FlowStore
from lakecache.scenario import DATASET, FLOW_FILE, run_xray
from lakecache.settings import Settings
from lakecache.tracking.store import TrackingStore

pytestmark = pytest.mark.timeout(900)

LRS = {"0.001", "0.003"}


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's lake and catalog for the jobs too (they load settings from the environment)."""
    monkeypatch.setenv("LAKECACHE_HOME", str(settings.home))
    monkeypatch.setenv("LAKECACHE_AUTHOR", settings.author)
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_SERVER", "LAKECACHE_OUTPUTS"):
        monkeypatch.delenv(k, raising=False)
    return settings


def test_xray_scenario_end_to_end(env: Settings, tmp_path: Path) -> None:
    said: list[str] = []
    outcome = run_xray(
        tmp_path / "work",
        settings=env,
        images=60,
        size=32,
        overrides={"epochs": 1, "max_steps": 1},
        timeout=800,
        say=said.append,
    )
    tasks = {t["name"]: t for t in outcome.tasks}
    assert outcome.state == "succeeded", _failures(tmp_path / "work", outcome.tasks)
    assert sorted(tasks) == sorted(
        [
            "split",
            "prepare",
            "train[lr=0.001]",
            "train[lr=0.003]",
            "pick",
            "evaluate",
        ]
    )
    assert any("cached xray14@" in line for line in said)
    # The library's flow file is the one that ran, with this interpreter in its commands.
    assert outcome.flow_file is not None
    ran = outcome.flow_file.read_text()
    assert ran.replace(sys.executable, "python") == FLOW_FILE.read_text()

    hub = Hub(env, remote=False)
    try:
        runs = TrackingStore(hub.catalog)
        source = Dataset(DATASET, hub=hub).resolve("latest")
        assert source == outcome.dataset_commit

        # split and prepare read the dataset commit from the site's cache, and say so.
        for name in ("split", "prepare"):
            (run,) = runs.runs_of_job(tasks[name]["job_id"])
            reads = runs.run_inputs(run.id)
            assert [(r.dataset, r.commit_id, r.source) for r in reads] == [
                (DATASET, source, "cache")
            ]

        # Two trainings with different learning rates, each a tracked run with its figures;
        # each read its cached input as its commit, through lakecache.torch.
        trained = {}
        prepared = tasks["prepare"]["output_commit"]
        for name in ("train[lr=0.001]", "train[lr=0.003]"):
            (run,) = runs.runs_of_job(tasks[name]["job_id"])
            params = runs.run_params(run.id)
            metrics = runs.latest_metrics(run.id)
            assert params["arch"] == "resnet18" and params["epochs"] == "1"
            assert params["data_commit"] == prepared and params["read_from"] == "cache"
            assert "loss" in metrics and "val_mean_auroc" in metrics
            reads = runs.run_inputs(run.id)
            assert {r.commit_id for r in reads} == {prepared, tasks["split"]["output_commit"]}
            # Recorded by the job itself: its spooled inputs.jsonl, stored by the runner.
            assert any(r.reader == "torch.CommitDataset" for r in reads), reads
            trained[params["lr"]] = run.id
        assert set(trained) == LRS
        # ... side by side: the pool has room for both (one CPU each of two).
        store = FlowStore(hub.catalog)
        spans = [
            (t.started_at, t.ended_at)
            for t in store.tasks(outcome.run_id)
            if t.name.startswith("train[") and t.started_at and t.ended_at
        ]
        assert len(spans) == 2, spans
        (a0, a1), (b0, b1) = spans
        assert a0 < b1 and b0 < a1, spans  # the two trainings' times overlap

        # pick-best chose the training with the higher validation mean AUROC, and kept its
        # model; the test split was scored once, with that model.
        best = outcome.best["best"]
        val = {str(c["params"]["lr"]): c["mean_auroc"] for c in outcome.best["candidates"]}
        assert set(val) == LRS
        assert best["mean_auroc"] == pytest.approx(max(val.values()))
        assert str(best["params"]["lr"]) in LRS
        pulled = tmp_path / "best"
        Dataset(f"{DATASET}-best", hub=hub).pull(outcome.best_commit, pulled)
        assert (pulled / "model.pt").stat().st_size > 1000
        assert json.loads((pulled / "best.json").read_text())["best"] == best
        ev = outcome.evaluation
        assert ev["split"] == "test" and len(ev["per_class_auroc"]) == 15
        assert any(not math.isnan(v) for v in ev["per_class_auroc"].values())
        assert ev["data"]["commit"] == prepared
        (run,) = runs.runs_of_job(tasks["evaluate"]["job_id"])
        keys = runs.metric_keys(run.id)
        assert sum(k.startswith("test_auroc/") for k in keys) == 15, keys

        # Lineage: xray14-best@c was made by pick, from the trainings,
        # from prepare's and split's outputs, from the dataset commit.
        assert outcome.best_commit is not None
        pick = store.produced(f"{DATASET}-best", outcome.best_commit)
        assert pick is not None and pick.name == "pick" and pick.run_id == outcome.run_id
        by_output = {t["output_commit"]: n for n, t in tasks.items()}
        reached: set[str] = set()
        frontier = ["pick"]
        while frontier:
            name = frontier.pop()
            for ds, commit, *_ in tasks[name]["input_commits"].values():
                if ds == DATASET:
                    reached.add(f"{ds}@{commit}")
                else:
                    frontier.append(by_output[commit])
        assert reached == {f"{DATASET}@{source}"}
        prepared = Dataset(f"{DATASET}-prepared", hub=hub).resolve("latest")
        made = store.produced(f"{DATASET}-prepared", prepared)
        assert made is not None and made.name == "prepare"
        assert made.input_commits["xray"][:2] == [DATASET, source]
        assert any(
            line.startswith(f"{DATASET}@{source[:12]} -> prepare") for line in outcome.lineage
        )
    finally:
        hub.close()


def _failures(work: Path, tasks: list[dict[str, object]]) -> str:
    """Each failed task's reason and the end of its job's log."""
    lines = []
    for t in tasks:
        if t["state"] == "failed":
            logs = sorted((work / "jobs" / str(t["job_id"])).glob("attempt-*/job.log"))
            tail = logs[-1].read_text(errors="replace")[-1500:] if logs else "(no log)"
            lines.append(f"{t['name']}: {t['reason']}\n{tail}")
    return "\n".join(lines) or str([(t["name"], t["state"]) for t in tasks])


def test_example_xray_rejects_a_bad_param(
    env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --param that is not KEY=VALUE stops before anything is generated, naming the fix."""
    from lakecache.cli.main import main

    code = main(["example", "xray", "--dir", str(tmp_path / "w"), "--param", "profile"])
    err = capsys.readouterr().err
    assert code == 1
    assert "is not KEY=VALUE" in err and "--param" in err
    assert not (tmp_path / "w").exists()
