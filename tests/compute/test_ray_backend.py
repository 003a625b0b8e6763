"""The ray backend on a real two-node Ray cluster (one node per site) started here.

The heavy tests of the compute suite (marked ``ray``): the cluster takes about 8 s
(more on a busy machine) and 850 MB, so one cluster serves the whole module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_contract import BackendContract, make_spec, wait_exit
from conftest import World
from helpers import make_files

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.topology import Topology
from lakecache.compute.backends import Backend, BackendError, open_backend
from lakecache.compute.model import InputSpec, Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.services.ray_cluster import RayCluster, start_ray_cluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Nodes onprem (2 cores) and cloud (2 cores), each with the resource site:<name>."""
    # Ray's socket paths must stay short, so not under pytest's deep temporary tree.
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="lc-ray-", dir="/tmp"))
    cluster = start_ray_cluster(tmp, {"onprem": 2, "cloud": 2})
    try:
        yield cluster
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


class TestRayBackend(BackendContract):
    @pytest.fixture
    def backend(self, ray_cluster: RayCluster) -> Backend:
        return open_backend("ray", {"address": ray_cluster.address, "site_resource": "site:onprem"})


def _site_of_the_task(tmp_path: Path, backend: Backend) -> str:
    # The command's parent is the Ray worker, which has its node's environment.
    spec = make_spec(
        tmp_path,
        "sh",
        "-c",
        "tr '\\0' '\\n' < /proc/$PPID/environ | sed -n 's/^LAKECACHE_RAY_SITE=//p'"
        ' > "$LAKECACHE_OUTPUTS/site"',
    )
    assert wait_exit(backend, backend.submit(spec)).code == 0
    return (spec.workdir / "outputs" / "site").read_text().strip()


def test_a_site_resource_pins_the_task_to_that_sites_node(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    for site in ("cloud", "onprem", "cloud"):
        backend = open_backend(
            "ray", {"address": ray_cluster.address, "site_resource": f"site:{site}"}
        )
        assert _site_of_the_task(tmp_path / site, backend) == site


def test_a_task_waits_while_its_site_has_no_room(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """The site's node has 2 cores: a third 1-core task waits for one to end."""
    import dataclasses

    backend = open_backend("ray", {"address": ray_cluster.address, "site_resource": "site:cloud"})
    handles = []
    for n in range(3):
        spec = dataclasses.replace(
            make_spec(tmp_path / str(n), "sleep", "3", job_id=100 + n), slot=Resources(1000, 10**8)
        )
        handles.append(backend.submit(spec))
    time.sleep(1.5)
    assert [backend.poll(h) for h in handles[:2]] == [None, None]
    t0 = time.monotonic()
    assert wait_exit(backend, handles[2], timeout=60).code == 0
    # It could only start when one of the first two ended (about 3 s after they started).
    assert time.monotonic() - t0 > 1.0


def test_the_demands_carry_the_slot_and_the_site(tmp_path: Path) -> None:
    import dataclasses

    from lakecache.compute.backends.ray import SITE_SHARE, RayBackend

    backend = RayBackend(address="head:6379", site_resource="site:onprem")
    spec = dataclasses.replace(make_spec(tmp_path, "true"), slot=Resources(1500, 2 * 10**9, 1))
    assert backend.demands(spec) == {
        "num_cpus": 1.5,
        "num_gpus": 1,
        "memory": 2 * 10**9,
        "resources": {"site:onprem": SITE_SHARE},
        "name": "job-1-1",
    }


def test_cancel_kills_the_command_on_the_node(ray_cluster: RayCluster, tmp_path: Path) -> None:
    backend = open_backend("ray", {"address": ray_cluster.address, "site_resource": "site:onprem"})
    spec = make_spec(tmp_path, "sh", "-c", 'echo $$ > "$LAKECACHE_OUTPUTS/pid"; exec sleep 60')
    handle = backend.submit(spec)
    pid_file = spec.workdir / "outputs" / "pid"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    backend.cancel(handle)
    end = wait_exit(backend, handle, timeout=20)
    assert end.code != 0 and end.reason is not None and "cancel" in end.reason
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_a_backend_for_another_cluster_is_refused_in_the_same_agent(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    first = open_backend("ray", {"address": ray_cluster.address})
    wait_exit(first, first.submit(make_spec(tmp_path, "true")))
    other = open_backend("ray", {"address": "127.0.0.1:1"})
    with pytest.raises(BackendError, match="connected to the Ray cluster at"):
        other.submit(make_spec(tmp_path, "true"))


def test_a_cluster_that_is_down_fails_the_submit_at_once_with_the_reason(tmp_path: Path) -> None:
    """In a process of its own: ray.init is once per process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed again: nothing listens there
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lakecache.compute.backends import open_backend, LaunchSpec, BackendError\n"
        "from lakecache.compute.model import Resources\n"
        "w = Path(sys.argv[1]); w.mkdir()\n"
        f"b = open_backend('ray', {{'address': '127.0.0.1:{port}'}})\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    b.submit(LaunchSpec(1, 1, ('true',), {}, w, w / 'job.log', Resources()))\n"
        "except BackendError as exc:\n"
        "    print(f'{time.monotonic() - t0:.1f}', exc.message)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "w")],
        env={"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    took, _, message = done.stdout.strip().partition(" ")
    assert f"the Ray cluster at 127.0.0.1:{port} cannot be reached" in message, done.stderr
    assert float(took) < 10


def test_no_address_is_refused_with_a_hint() -> None:
    with pytest.raises(BackendError, match="needs the address") as info:
        open_backend("ray", {})
    assert "address=" in info.value.hint


# -- through the site's job runner -------------------------------------------------------


def test_a_job_through_the_runner_runs_on_its_sites_ray_node_with_its_cached_input(
    ray_cluster: RayCluster,
    hub: Hub,
    store: ComputeStore,
    world: World,
    tmp_path: Path,
) -> None:
    now = SystemClock().now()
    settings = {"address": ray_cluster.address, "site_resource": "site:cloud"}
    Topology(hub.catalog).add_compute("cloud-ray", "cloud", "ray", settings, [], now)
    store.set_capacity("cloud-ray", Resources(2000, 4 * 10**9))
    store.add_template("cloud-ray-small", "cloud-ray", Resources(1000, 10**9), None, now)
    store.add_queue("rays", ["cloud-ray-small"], now=now)
    xray = Dataset.create("xray", hub=hub)
    xray.commit(make_files(tmp_path / "src", n=5, size=500), message="v1")
    commit = hub.catalog.resolve("xray", "main")
    runner = JobRunner(
        CacheService(hub, clock=SystemClock(), poll_every=0.05),
        "cloud",
        interval=0.05,
        heartbeat_every=0.2,
        jobs_root=tmp_path / "jobs",
    )
    try:
        job = store.submit(
            "rays",
            [
                "sh",
                "-c",
                'find "$LAKECACHE_INPUT_XRAY" -type f | wc -l > "$LAKECACHE_OUTPUTS/count";'
                " tr '\\0' '\\n' < /proc/$PPID/environ | sed -n 's/^LAKECACHE_RAY_SITE=//p'"
                ' > "$LAKECACHE_OUTPUTS/site"; echo on-the-node',
            ],
            request=Resources(1000, 10**9),
            inputs=[InputSpec("xray", "xray", "main", commit, "cached")],
            submitted_by="tester",
            now=now,
        )
        deadline = time.monotonic() + 120
        while not (job := store.get_job(job.id)).done:
            assert time.monotonic() < deadline, f"job {job.id} is still {job.state}"
            runner.run_once()
            time.sleep(0.05)
    finally:
        runner.close()
    assert (job.state, job.exit_code) == ("succeeded", 0), job.reason
    assert job.workdir is not None
    outputs = Path(job.workdir) / "outputs"
    assert (outputs / "count").read_text().strip() == "5"
    assert (outputs / "site").read_text().strip() == "cloud"
    assert "on-the-node" in (Path(job.workdir) / "job.log").read_text()
    started = next(e for e in store.timeline(job.id) if e.kind == "started")
    assert started.detail.startswith("ray: job-")
