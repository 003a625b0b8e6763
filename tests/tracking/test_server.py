"""Tracking through a real server: the SDK over HTTP (and across a server restart), the
runs API, and the real ``mlflow`` client logging into lakecache."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from server.live import World, build_world, free_port

from lakecache.server.app import create_app
from lakecache.settings import Settings
from lakecache.tracking import start
from lakecache.tracking.store import TrackingStore

SRC = Path(__file__).resolve().parents[2] / "src"


class RestartableServer:
    """uvicorn serving the world's control plane on one fixed port, stopped and started again."""

    def __init__(self, world: World, port: int) -> None:
        self.world, self.port = world, port
        self.url = f"http://127.0.0.1:{port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = create_app(self.world.settings, self.world.plane.config, plane=self.world.plane)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive()
            time.sleep(0.02)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("tracking-world")
    w = build_world(base / "home", base / "src")
    yield w
    w.server.stop()
    w.plane.close()


def _settings(world: World, who: str, home: Path) -> Settings:
    return Settings(home=home, server_url=world.url, token=world.tokens[who])


def test_the_sdk_logs_through_the_server_and_its_runs_api_sorts_and_filters(
    world: World, tmp_path: Path
) -> None:
    ids = []
    for lr in (0.3, 0.1, 0.2):
        with start(
            "sweep", settings=_settings(world, "rita", tmp_path), system_metrics=False
        ) as run:
            run.log_params({"lr": lr})
            for step in range(2000):
                run.log_metric("loss", lr + 1 / (step + 1), step=step)
            run.log_metric("odd", math.nan)
            run.log_metric("odd", -math.inf)
            (tmp_path / "notes.txt").write_text(f"lr {lr}")
            run.log_artifact(tmp_path / "notes.txt")
            ids.append(run.id)
    page = world.call(
        "rita",
        "GET",
        "/api/v1/tracking/runs",
        params={"experiment": "sweep", "order_by": "metric:loss", "descending": "false"},
    ).json()
    assert [r["id"] for r in page["items"]] == [ids[1], ids[2], ids[0]] and page["total"] == 3
    assert page["items"][0]["params"] == {"lr": "0.1"}
    assert page["items"][0]["metrics"]["odd"] == "-Infinity"
    narrowed = world.call(
        "rita", "GET", "/api/v1/tracking/runs", params={"filter": ["param:lr=0.2"]}
    ).json()
    assert [r["id"] for r in narrowed["items"]] == [ids[2]]
    series = world.call(
        "rita", "GET", f"/api/v1/tracking/runs/{ids[0]}/metrics/loss", params={"buckets": 100}
    ).json()
    assert series["downsampled"] and series["points_total"] == 2000 and len(series["steps"]) == 100
    assert series["maxs"][0] == pytest.approx(1.3)
    odd = world.call("rita", "GET", f"/api/v1/tracking/runs/{ids[0]}/metrics/odd").json()
    assert odd["values"] == ["NaN", "-Infinity"]
    csv = world.call(
        "rita", "GET", f"/api/v1/tracking/runs/{ids[0]}/metrics/loss", params={"format": "csv"}
    )
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.splitlines()) == 2001
    detail = world.call("rita", "GET", f"/api/v1/tracking/runs/{ids[0]}").json()
    assert detail["run"]["status"] == "finished" and detail["run"]["user"] == "rita"
    assert [a["path"] for a in detail["artifacts"]] == ["notes.txt"]
    got = world.call("rita", "GET", f"/api/v1/tracking/runs/{ids[0]}/artifacts/notes.txt")
    assert got.content == b"lr 0.3"
    # Another user sees neither the run nor its experiment (the 404 of what does not exist).
    assert world.call("nora", "GET", f"/api/v1/tracking/runs/{ids[0]}").status_code == 404
    assert world.call("nora", "GET", "/api/v1/tracking/experiments/sweep").status_code == 404
    assert world.call("nora", "GET", "/api/v1/tracking/runs").json()["total"] == 0


def test_a_bad_metric_name_is_refused_at_once_and_over_http(world: World, tmp_path: Path) -> None:
    with start(settings=_settings(world, "rita", tmp_path), system_metrics=False) as run:
        with pytest.raises(Exception, match=r"300 characters long \(at most 250\)"):
            run.log_metric("x" * 300, 1.0)
        r = world.call(
            "rita",
            "POST",
            f"/api/v1/tracking/runs/{run.id}/batch",
            json={"metrics": {"bad\nname": [[0], [0], [1.0]]}},
        )
        assert r.status_code == 400 and "control characters" in r.json()["error"]["message"]


def test_logging_survives_a_server_restart_and_nothing_is_lost(
    world: World, tmp_path: Path
) -> None:
    server = RestartableServer(world, free_port())
    server.start()
    settings = Settings(home=tmp_path, server_url=server.url, token=world.tokens["rita"])
    run = start("restarts", settings=settings, system_metrics=False)
    run.flush_interval = 0.1
    for step in range(1000):
        run.log_metric("loss", float(step), step=step)
    assert run.flush(timeout=30)
    server.stop()
    for step in range(1000, 3000):
        run.log_metric("loss", float(step), step=step)
    run.log_params({"phase": "during the restart"})
    spool = tmp_path / "tracking-spool"
    deadline = time.monotonic() + 30
    while not any(spool.glob("*.jsonl")):  # the flusher could not send: kept on disk
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not run.flush(timeout=0.5)
    server.start()
    run.end()
    server.stop()
    store = TrackingStore(world.plane.hub.catalog)
    series = store.metric_series(run.id, "loss", buckets=None)
    assert sorted(set(series.steps)) == list(range(3000))
    assert store.run_params(run.id) == {"phase": "during the restart"}
    assert store.get_run(run.id).status == "finished"
    assert not list(spool.glob("*.json*")) and not list(spool.glob("*.sending"))


def test_the_mlflow_client_logs_into_lakecache(world: World, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    script = tmp_path / "with_mlflow.py"
    (tmp_path / "model.txt").write_text("weights")
    script.write_text(
        textwrap.dedent(
            f"""
            import math, mlflow
            mlflow.set_experiment("mlflow-exp")
            with mlflow.start_run(run_name="from-mlflow") as run:
                mlflow.log_param("lr", 0.01)
                mlflow.log_params({{"depth": 50, "opt": "sgd"}})
                for step in range(5):
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                mlflow.log_metric("nan", math.nan)
                mlflow.log_metric("inf", math.inf)
                mlflow.log_metrics({{"acc": 0.9, "f1": 0.8}}, step=7)
                mlflow.set_tag("team", "vision")
                mlflow.log_artifact({str(tmp_path / "model.txt")!r}, artifact_path="ckpt")
                print("RUN", run.info.run_id)
            fetched = mlflow.get_run(run.info.run_id)
            print("STATUS", fetched.info.status)
            """
        )
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": world.url,
        "MLFLOW_TRACKING_TOKEN": world.tokens["rita"],
        "PYTHONPATH": str(SRC),
    }
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = int(done.stdout.split("RUN ")[1].split()[0])
    assert "STATUS FINISHED" in done.stdout
    store = TrackingStore(world.plane.hub.catalog)
    run = store.get_run(run_id)
    assert (run.experiment, run.name, run.user, run.status) == (
        "mlflow-exp",
        "from-mlflow",
        "rita",
        "finished",
    )
    assert store.run_params(run_id) == {"depth": "50", "lr": "0.01", "opt": "sgd"}
    assert store.run_tags(run_id)["team"] == "vision"
    latest = store.latest_metrics(run_id)
    assert latest["loss"].step == 4 and latest["acc"].step == 7 and latest["f1"].value == 0.8
    assert math.isnan(latest["nan"].value) and latest["inf"].value == math.inf
    assert store.metric_series(run_id, "loss").steps == [0, 1, 2, 3, 4]
    (artifact,) = store.list_artifacts(run_id)
    assert artifact.path == "ckpt/model.txt"


def test_mlflow_routes_are_authorised(world: World, tmp_path: Path) -> None:
    store = TrackingStore(world.plane.hub.catalog)
    ritas = store.create_run("Default", user="rita")
    body = {"run_id": str(ritas.id), "key": "k", "value": "v"}
    anonymous = httpx.post(f"{world.url}/api/2.0/mlflow/runs/log-parameter", json=body)
    assert anonymous.status_code == 401
    nora = world.call("nora", "POST", "/api/2.0/mlflow/runs/log-parameter", json=body)
    assert nora.status_code == 404 and nora.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    rita = world.call("rita", "POST", "/api/2.0/mlflow/runs/log-parameter", json=body)
    assert rita.status_code == 200 and store.run_params(ritas.id) == {"k": "v"}
    bad = world.call(
        "rita",
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        json={"run_id": str(ritas.id), "key": "y" * 300, "value": 1, "timestamp": 0},
    )
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    escape = world.call(
        "rita",
        "PUT",
        f"/api/2.0/mlflow-artifacts/artifacts/0/{ritas.id}/artifacts/a/../../b",
        content=b"x",
    )
    assert escape.status_code in (400, 404) and not store.list_artifacts(ritas.id)
