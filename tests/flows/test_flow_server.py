"""Flows through a live server: authorisation, the server advancing runs, and a restart of
the server in the middle of a run (the run goes on from where it stood)."""

from __future__ import annotations

from typing import Any

from server.live import ADMIN_PASSWORD, LiveServer, World, wait_for

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.server import ControlPlane, ServerConfig, create_app

FLOW = """\
name: served
tasks:
  slow:
    command: sleep 3 && mkdir "$LAKECACHE_OUTPUTS/o" && echo done > "$LAKECACHE_OUTPUTS/o/f"
    queue: q
    inputs: {xray: {dataset: xray@v1, cached: false}}
    outputs: [o]
  publish:
    command: mkdir "$LAKECACHE_OUTPUTS/r" && cp "$LAKECACHE_INPUT_O/o/f" "$LAKECACHE_OUTPUTS/r/"
    queue: q
    inputs: {o: {task: slow}}
    outputs: {r: {dataset: results}}
"""


def _start(w: World, who: str) -> Any:
    return w.call(who, "POST", "/api/v1/flows/runs", json={"source": FLOW, "source_name": "s.yaml"})


def test_flows_through_the_server_survive_a_restart(served: World) -> None:
    w = served
    assert _start(w, "nora").status_code == 404  # no role on xray: as if it did not exist
    r = _start(w, "rita")  # reads xray, but only reads results
    assert r.status_code == 403 and "writer" in r.json()["error"]["message"]
    bad = w.call("wendy", "POST", "/api/v1/flows/runs", json={"source": "name: x\ntasks: {}\n"})
    assert bad.status_code == 400 and "no tasks" in bad.json()["error"]["message"]

    r = _start(w, "wendy")
    assert r.status_code == 201, r.text
    run = r.json()
    run_id = run["id"]
    assert [t["name"] for t in run["tasks"]] == ["slow", "publish"]

    def task_state(name: str) -> str:
        shown = w.call("wendy", "GET", f"/api/v1/flows/runs/{run_id}").json()
        return next(t["state"] for t in shown["tasks"] if t["name"] == name)

    wait_for(lambda: task_state("slow") == "running", timeout=60)
    # Restart the server: a new control plane and app over the same catalog.
    w.server.stop()
    w.plane.close()
    cfg = ServerConfig(admin_password=ADMIN_PASSWORD, agent_interval=0.05, agents=False)
    w.plane = ControlPlane.open(w.settings, cfg)
    w.server = LiveServer(create_app(w.settings, cfg, plane=w.plane))
    w.url = w.server.url

    def ended() -> Any:
        shown = w.call("wendy", "GET", f"/api/v1/flows/runs/{run_id}").json()
        return shown if shown["state"] != "running" else None

    shown = wait_for(ended, timeout=120)
    assert shown["state"] == "succeeded", shown
    publish = shown["tasks"][1]
    assert publish["outputs"]["r"][0] == "results"
    results = Dataset("results", hub=w.plane.hub)
    assert results.resolve("latest") == publish["outputs"]["r"][1]
    assert [e.path for e in results.ls()] == ["f"]

    # The flow's artifacts dataset: its submitter reads it (downstream jobs read as her).
    assert w.call("wendy", "GET", "/api/v1/datasets/flow-served").status_code == 200
    assert w.call("nora", "GET", "/api/v1/datasets/flow-served").status_code == 404

    # Who sees what.
    assert w.call("nora", "GET", f"/api/v1/flows/runs/{run_id}").status_code == 404
    assert w.call("rita", "POST", f"/api/v1/flows/runs/{run_id}/cancel").status_code == 404
    assert w.call("admin", "GET", f"/api/v1/flows/runs/{run_id}").status_code == 200
    mine = w.call("wendy", "GET", "/api/v1/flows/runs").json()["items"]
    assert [x["id"] for x in mine] == [run_id]
    assert w.call("rita", "GET", "/api/v1/flows/runs").json()["items"] == []
    r = w.call("wendy", "POST", f"/api/v1/flows/runs/{run_id}/resume")
    assert r.status_code == 409 and "nothing to re-run" in r.json()["error"]["message"]


def test_the_python_and_cli_layer_through_the_server(served: World) -> None:
    """Logged in, flows go to the server (RemoteFlows), checked against its catalog."""
    from lakecache.flows.engine import CatalogCatalogue
    from lakecache.flows.service import RemoteFlows, flows_of
    from lakecache.flows.spec import FlowSpec, plan

    w = served
    settings = w.settings.with_(server_url=w.url, token=w.tokens["wendy"])
    hub = Hub(settings, remote=True)
    try:
        flows = flows_of(hub)
        assert isinstance(flows, RemoteFlows)
        checked = plan(FlowSpec.from_text(FLOW, "s.yaml"), CatalogCatalogue(hub))
        assert [t.name for t in checked.tasks] == ["slow", "publish"]
        run = flows.start(FLOW, "s.yaml", {}, "git:abc")
        assert run["submitted_by"] == "wendy" and run["code_version"] == "git:abc"
        done = flows.wait(run["id"], timeout=120)
        assert done["state"] == "succeeded", done
        assert [r["id"] for r in flows.list_runs()] == [run["id"]]
        assert flows.show(run["id"])["tasks"][1]["outputs"]["r"][0] == "results"
    finally:
        hub.close()
