"""The same flow (prepare -> 3 trainings fanned out -> pick the best into a dataset) on the
container backend (real Podman, busybox image) and on a real local Ray cluster."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lakecache.cache.clock import SystemClock
from lakecache.catalog.topology import Topology
from lakecache.compute.model import Resources
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.flows import FlowSpec
from lakecache.flows.engine import FlowEngine
from lakecache.settings import Settings

from .conftest import FlowWorld, add_world

GB = 10**9


def _flow(queue: str) -> FlowSpec:
    flow = FlowSpec("backends")
    flow.task(
        "prep",
        command='mkdir "$LAKECACHE_OUTPUTS/d" && find "$LAKECACHE_INPUT_XRAY" -type f | wc -l '
        '> "$LAKECACHE_OUTPUTS/d/n"',
        queue=queue,
        inputs={"xray": {"dataset": "xray@v1", "cached": True}},
        outputs=["d"],
    )
    flow.task(
        "train",
        command='mkdir "$LAKECACHE_OUTPUTS/m"'
        ' && echo "{params.lr} $(cat "$LAKECACHE_INPUT_PREP/d/n")" > "$LAKECACHE_OUTPUTS/m/score"',
        queue=queue,
        params={"lr": [1, 3, 2]},
        inputs={"prep": {"task": "prep"}},
        outputs=["m"],
    )
    flow.task(
        "pick",
        command='mkdir "$LAKECACHE_OUTPUTS/best" && for v in $LAKECACHE_UPSTREAM_MODELS;'
        ' do eval cat "\\"\\$$v/m/score\\""; done | sort -n | tail -1'
        ' > "$LAKECACHE_OUTPUTS/best/choice"',
        queue=queue,
        inputs={"models": {"task": "train"}},
        outputs={"best": {"dataset": "best"}},
    )
    return flow


@pytest.fixture
def bworld(settings: Settings, tmp_path: Path) -> Iterator[FlowWorld]:
    hub = Hub(settings, remote=False)
    add_world(hub, tmp_path)
    yield FlowWorld(hub, ComputeStore(hub.catalog), FlowEngine(hub), tmp_path)
    hub.close()


def _run(world: FlowWorld, queue: str) -> None:
    """Run the flow on ``queue`` with the site's runner; the best score is lr 3."""
    runner = world.runner()
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    try:
        run = world.engine.wait(world.engine.start(_flow(queue)), timeout=240)
    finally:
        runner.stop_event.set()
        thread.join(timeout=60)
    tasks = world.engine.store.tasks(run.id)
    assert run.state == "succeeded", [(t.name, t.state, t.reason) for t in tasks]
    best = Dataset("best", hub=world.hub)
    out = world.tmp / "best"
    best.pull(best.resolve("latest"), out)
    assert (out / "choice").read_text().split() == ["3", "9"]
    assert len(tasks) == 5 and all(t.job_id is not None for t in tasks)


@pytest.mark.container
def test_the_flow_on_podman_containers(bworld: FlowWorld, tmp_path_factory: Any) -> None:
    from fixtures.parallel import cache_root, machine_lock

    from lakecache.services.podman import busybox_image, podman_config

    config = podman_config(tmp_path_factory.mktemp("podman"))
    with machine_lock("podman-images"):  # one process makes the image, the others reuse it
        image = busybox_image(cache_root() / "podman", config)
    now = SystemClock().now()
    Topology(bworld.hub.catalog).add_compute("onprem-box", "onprem", "container", config, [], now)
    bworld.store.set_capacity("onprem-box", Resources(4000, 8 * GB))
    bworld.store.add_template("box", "onprem-box", Resources(1000, GB), image, now)
    bworld.store.add_queue("boxes", ["box"], now=now)
    _run(bworld, "boxes")
    for t in bworld.engine.store.tasks(1):
        assert any(
            e.detail.startswith("container: ")
            for e in bworld.store.timeline(t.job_id or 0)
            if e.kind == "started"
        )


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_flow_on_a_ray_cluster(bworld: FlowWorld) -> None:
    from lakecache.services.ray_cluster import start_ray_cluster

    tmp = Path(tempfile.mkdtemp(prefix="lc-ray-", dir="/tmp"))  # Ray's sockets want short paths
    cluster = start_ray_cluster(tmp, {"onprem": 2})
    try:
        now = SystemClock().now()
        settings = {"address": cluster.address, "site_resource": "site:onprem"}
        Topology(bworld.hub.catalog).add_compute("onprem-ray", "onprem", "ray", settings, [], now)
        bworld.store.set_capacity("onprem-ray", Resources(2000, 4 * GB))
        bworld.store.add_template("ray-small", "onprem-ray", Resources(1000, GB), None, now)
        bworld.store.add_queue("rays", ["ray-small"], now=now)
        _run(bworld, "rays")
        for t in bworld.engine.store.tasks(1):
            assert any(
                e.detail.startswith("ray: ")
                for e in bworld.store.timeline(t.job_id or 0)
                if e.kind == "started"
            )
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
