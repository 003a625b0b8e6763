"""A flow run through a server commits its outputs as the user who started it, never as
the server: the commits name them as their author, the flow's artifacts dataset is
theirs, a flow whose outputs they may not write is refused before anything runs, and
a role taken away while the run goes on stops the commit (the task fails saying why,
nothing is committed)."""

from __future__ import annotations

from typing import Any

from server.live import World, wait_for

from lakecache.flows.service import commit_as, output_datasets
from lakecache.flows.spec import FlowSpec

FLOW = """\
name: {name}
tasks:
  make:
    command: sleep {sleep} && mkdir "$LAKECACHE_OUTPUTS/r" && echo {text} > "$LAKECACHE_OUTPUTS/r/f"
    queue: q
    outputs: {{r: {{dataset: results}}}}
"""

PLAIN = """\
name: {name}
tasks:
  make:
    command: mkdir "$LAKECACHE_OUTPUTS/o" && echo x > "$LAKECACHE_OUTPUTS/o/f"
    queue: q
    outputs: [o]
"""


def _start(w: World, who: str, source: str) -> Any:
    return w.call(who, "POST", "/api/v1/flows/runs", json={"source": source, "source_name": "f"})


def _ended(w: World, who: str, run_id: int) -> dict[str, Any]:
    def done() -> Any:
        shown = w.call(who, "GET", f"/api/v1/flows/runs/{run_id}").json()
        return shown if shown["state"] != "running" else None

    result: dict[str, Any] = wait_for(done, timeout=120)
    return result


def test_outputs_are_committed_as_the_runs_owner_whose_rights_are_checked(served: World) -> None:
    w = served
    catalog = w.plane.hub.catalog
    r = _start(w, "wendy", FLOW.format(name="ident", sleep=0, text="one"))
    assert r.status_code == 201, r.text
    run = _ended(w, "wendy", r.json()["id"])
    assert run["state"] == "succeeded", run
    task = run["tasks"][0]
    results_commit = catalog.get_commit("results", task["outputs"]["r"][1])
    assert results_commit.author == "wendy"
    artifacts = catalog.get_commit("flow-ident", task["output_commit"])
    assert artifacts.author == "wendy"
    assert catalog.get_dataset("flow-ident").owner == "wendy"
    assert w.plane.accounts.get_member("flow-ident", "wendy").role == "admin"

    # alice runs a flow of the same name: its artifacts would go to wendy's dataset (and
    # she would read wendy's outputs there). Refused before anything runs, saying why.
    refused = _start(w, "alice", PLAIN.format(name="ident"))
    assert refused.status_code == 400, refused.text
    err = refused.json()["error"]
    assert "'flow-ident'" in err["message"] and "name:" in err["hint"]
    assert w.call("alice", "GET", "/api/v1/flows/runs").json()["items"] == []
    assert w.call("alice", "GET", "/api/v1/datasets/flow-ident").status_code == 404
    # Under a name of her own, her run goes on, in a dataset of hers.
    mine = _start(w, "alice", PLAIN.format(name="alices"))
    assert mine.status_code == 201, mine.text
    assert _ended(w, "alice", mine.json()["id"])["state"] == "succeeded"
    assert catalog.get_dataset("flow-alices").owner == "alice"


def test_a_role_taken_away_midway_stops_the_commit(served: World) -> None:
    w = served
    catalog = w.plane.hub.catalog
    before = catalog.resolve("results", "latest") if catalog.log("results") else None
    r = _start(w, "wendy", FLOW.format(name="slowid", sleep=3, text="two"))
    assert r.status_code == 201, r.text
    # While the task runs, another admin of results makes wendy a reader of it.
    now = w.plane.clock.now()
    w.plane.accounts.set_member("results", "alice", "admin", now=now)
    w.plane.accounts.set_member("results", "wendy", "reader", now=now)
    run = _ended(w, "wendy", r.json()["id"])
    assert run["state"] == "failed"
    reason = run["tasks"][0]["reason"]
    assert "'wendy' may not write dataset 'results' (reader)" in reason, reason
    after = catalog.resolve("results", "latest") if catalog.log("results") else None
    assert after == before
    # And a new run of it is refused at once, with the same words.
    again = _start(w, "wendy", FLOW.format(name="slowid", sleep=0, text="three"))
    assert again.status_code == 403 and "writer" in again.json()["error"]["message"]


def test_directly_on_the_catalog_the_submitter_is_the_author(served: World, tmp_path: Any) -> None:
    """No account to check (the catalog used directly): the commit names the submitter."""
    hub = w_hub = served.plane.hub
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "f").write_text("direct")
    commit_id = commit_as(hub, "direct-out", folder, "m", user="someone@laptop")
    assert w_hub.catalog.get_commit("direct-out", commit_id).author == "someone@laptop"
    assert hub.catalog.get_dataset("direct-out").owner == "someone@laptop"
    flow = FlowSpec.from_text(FLOW.format(name="x", sleep=0, text="t"), "f")
    assert output_datasets(flow) == ["flow-x", "results"]
