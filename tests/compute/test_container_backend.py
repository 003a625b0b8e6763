"""The container backend on real Podman containers: the contract suite, read-only inputs,
engine errors as the job's reason, cancel, and the command line it builds."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_contract import BackendContract, make_spec, wait_exit
from conftest import World
from fixtures.parallel import cache_root, machine_lock
from helpers import make_files

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.topology import Topology
from lakecache.compute.backends import Backend, BackendError, open_backend
from lakecache.compute.backends.container import ContainerBackend, container_view
from lakecache.compute.model import InputSpec, JobRecord, Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.services.podman import busybox_image, podman_config

pytestmark = pytest.mark.container

ONE_CPU = Resources(1000, 10**9)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The container backend's config for this machine's Podman, with a busybox image."""
    config = podman_config(tmp_path_factory.mktemp("podman"))
    with machine_lock("podman-images"):  # one process makes the image, the others reuse it
        config["image"] = busybox_image(cache_root() / "podman", config)
    yield config


def _containers(config: dict[str, Any], job_id: int) -> list[str]:
    listed = subprocess.run(
        [
            "podman",
            "ps",
            "--all",
            "--filter",
            f"label=lakecache.job={job_id}",
            "--format",
            "{{.Names}}",
        ],
        env=dict(os.environ, CONTAINERS_CONF=config["containers_conf"]),
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


class TestContainerBackend(BackendContract):
    @pytest.fixture
    def backend(self, podman: dict[str, Any]) -> Backend:
        return open_backend("container", {**podman, "grace": 1})


def test_an_input_is_mounted_read_only_at_inputs_name(
    podman: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "cache"
    data.mkdir()
    (data / "a.txt").write_text("payload")
    backend = open_backend("container", podman)
    spec = make_spec(
        tmp_path,
        "sh",
        "-c",
        'echo "$LAKECACHE_INPUT_XRAY" > /outputs/where; cat /inputs/XRAY/a.txt > /outputs/copy;'
        " touch /inputs/XRAY/b.txt 2> /outputs/refused; rm /inputs/XRAY/a.txt || exit 7",
        env={"LAKECACHE_INPUT_XRAY": str(data)},
        inputs={str(data): data},
    )
    end = wait_exit(backend, backend.submit(spec))
    out = spec.workdir / "outputs"
    assert end.code == 7  # the rm was refused
    assert (out / "where").read_text() == "/inputs/XRAY\n"
    assert (out / "copy").read_text() == "payload"
    assert "Read-only file system" in (out / "refused").read_text()
    assert sorted(p.name for p in data.iterdir()) == ["a.txt"]


def test_outputs_are_written_at_outputs_and_nothing_else_of_the_machine_is_seen(
    podman: dict[str, Any], tmp_path: Path
) -> None:
    backend = open_backend("container", podman)
    secret = tmp_path / "attempt" / "beside-outputs"
    secret.parent.mkdir(parents=True)
    secret.write_text("not for the job")
    spec = make_spec(
        tmp_path,
        "sh",
        "-c",
        f'echo done > "$LAKECACHE_OUTPUTS/result"; test ! -e {secret} && echo unseen > /outputs/o',
    )
    assert wait_exit(backend, backend.submit(spec)).code == 0
    assert (spec.workdir / "outputs" / "result").read_text() == "done\n"
    assert (spec.workdir / "outputs" / "o").read_text() == "unseen\n"


def test_a_missing_image_fails_the_job_with_podmans_message(
    podman: dict[str, Any], tmp_path: Path
) -> None:
    backend = open_backend("container", podman)
    spec = make_spec(tmp_path, "true", image="localhost/no-such-image:1")
    end = wait_exit(backend, backend.submit(spec))
    assert end.code == 125
    assert end.reason is not None
    assert "container engine failed" in end.reason
    assert "localhost/no-such-image:1: image not known" in end.reason


def test_a_command_missing_from_the_image_fails_with_its_name(
    podman: dict[str, Any], tmp_path: Path
) -> None:
    backend = open_backend("container", podman)
    end = wait_exit(backend, backend.submit(make_spec(tmp_path, "python3", "-V")))
    assert end.code == 127
    assert end.reason is not None and '"python3": executable file not found' in end.reason


def test_a_job_without_any_image_is_refused(podman: dict[str, Any], tmp_path: Path) -> None:
    backend = open_backend("container", {**podman, "image": None})
    with pytest.raises(BackendError, match="names no image") as info:
        backend.submit(make_spec(tmp_path, "true"))
    assert "--image" in info.value.hint


def test_cancel_stops_the_container_and_removes_it(podman: dict[str, Any], tmp_path: Path) -> None:
    backend = open_backend("container", {**podman, "grace": 1})
    handle = backend.submit(make_spec(tmp_path, "sleep", "60", job_id=41))
    deadline = time.monotonic() + 10
    while not _containers(podman, 41) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _containers(podman, 41) == ["lakecache-job-41-1"]
    backend.cancel(handle)
    assert wait_exit(backend, handle, timeout=5).code != 0
    assert _containers(podman, 41) == []


def test_a_new_attempt_removes_a_container_left_by_an_earlier_one(
    podman: dict[str, Any], tmp_path: Path
) -> None:
    """An agent killed mid-job leaves its container running; the next attempt on this
    machine must not run beside it."""
    env = dict(os.environ, CONTAINERS_CONF=podman["containers_conf"])
    subprocess.run(
        [
            "podman",
            "--runtime",
            "runc",
            "run",
            "-d",
            "--name",
            "lakecache-job-42-1",
            "--label",
            "lakecache.job=42",
            podman["image"],
            "sleep",
            "60",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    assert _containers(podman, 42) == ["lakecache-job-42-1"]
    backend = open_backend("container", podman)
    spec = make_spec(tmp_path, "true", job_id=42)
    spec = dataclasses.replace(spec, attempt=2)
    assert wait_exit(backend, backend.submit(spec)).code == 0
    assert _containers(podman, 42) == []


def test_the_run_command_caps_the_slot_and_passes_the_settings(tmp_path: Path) -> None:
    backend = ContainerBackend(
        binary="docker", runtime="runc", network="host", gpus="docker", pull="never"
    )
    spec = dataclasses.replace(
        make_spec(tmp_path, "nvidia-smi", image="pytorch:2"), slot=Resources(1500, 2 * 10**9, 2)
    )
    args = backend.run_args(spec, "pytorch:2")
    assert args[:4] == ["docker", "--runtime", "runc", "run"]
    joined = " ".join(args)
    assert "--rm" in args and "--pull never" in joined and "--network host" in joined
    assert "--cpus 1.5" in joined and "--memory 2000000000" in joined
    assert "--gpus 2" in joined
    assert f"{spec.workdir / 'outputs'}:/outputs:rw" in args
    assert args[-2:] == ["pytorch:2", "nvidia-smi"]
    cdi = ContainerBackend(binary="podman").run_args(spec, "pytorch:2")
    assert "--device nvidia.com/gpu=all" in " ".join(cdi)
    none = ContainerBackend(binary="podman").run_args(make_spec(tmp_path, "true"), "x")
    assert "--device" not in none and "--gpus" not in none


def test_the_job_sees_inputs_and_outputs_at_container_paths(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "true",
        env={"LAKECACHE_INPUT_TRAIN": "/vol/xray", "HOME": "/root", "KEEP": "1"},
        inputs={"/vol/xray": Path("/vol/xray"), "/vol/other": Path("/vol/other")},
    )
    env, mounts = container_view(spec)
    assert env["LAKECACHE_INPUT_TRAIN"] == "/inputs/TRAIN"
    assert env["LAKECACHE_OUTPUTS"] == "/outputs" and env["KEEP"] == "1"
    assert "HOME" not in env and "PATH" not in env
    assert ("/vol/xray", "/inputs/TRAIN", "ro") in mounts
    assert ("/vol/other", "/vol/other", "ro") in mounts


def test_bad_settings_are_refused_with_the_choices() -> None:
    with pytest.raises(BackendError, match="pull='sometimes'"):
        open_backend("container", {"pull": "sometimes"})
    with pytest.raises(BackendError, match="gpus='all'") as info:
        open_backend("container", {"gpus": "all"})
    assert "cdi" in info.value.hint


# -- through the site's job runner -------------------------------------------------------


@pytest.fixture
def boxes(hub: Hub, store: ComputeStore, world: World, podman: dict[str, Any]) -> str:
    """Compute resource onprem-box (container backend, its settings in the catalog), template
    onprem-box-small with the busybox image as its default, and queue ``boxes`` of it."""
    now = SystemClock().now()
    settings = {k: v for k, v in podman.items() if k != "image"}
    Topology(hub.catalog).add_compute("onprem-box", "onprem", "container", settings, [], now)
    store.set_capacity("onprem-box", Resources(2000, 4 * 10**9))
    store.add_template("onprem-box-small", "onprem-box", ONE_CPU, podman["image"], now)
    store.add_queue("boxes", ["onprem-box-small"], now=now)
    return "boxes"


def _run_job(hub: Hub, store: ComputeStore, tmp_path: Path, *command: str, **kw: Any) -> JobRecord:
    runner = JobRunner(
        CacheService(hub, clock=SystemClock(), poll_every=0.05),
        "onprem",
        interval=0.05,
        heartbeat_every=0.2,
        jobs_root=tmp_path / "jobs",
    )
    try:
        job = store.submit(
            "boxes", command, request=ONE_CPU, submitted_by="tester", now=SystemClock().now(), **kw
        )
        deadline = time.monotonic() + 60
        while not (job := store.get_job(job.id)).done:
            assert time.monotonic() < deadline, f"job {job.id} is still {job.state}"
            runner.run_once()
            time.sleep(0.05)
        return job
    finally:
        runner.close()


def test_a_job_through_the_runner_reads_its_cache_read_only_in_the_templates_image(
    hub: Hub, store: ComputeStore, boxes: str, tmp_path: Path
) -> None:
    xray = Dataset.create("xray", hub=hub)
    xray.commit(make_files(tmp_path / "src", n=9, size=1000), message="v1")
    commit = hub.catalog.resolve("xray", "main")
    job = _run_job(
        hub,
        store,
        tmp_path,
        "sh",
        "-c",
        'find "$LAKECACHE_INPUT_XRAY" -type f | wc -l > /outputs/count;'
        ' echo "$LAKECACHE_INPUT_XRAY" > "$LAKECACHE_OUTPUTS/where";'
        ' touch "$LAKECACHE_INPUT_XRAY/new" 2> /outputs/refused;'
        ' test ! -e "$LAKECACHE_INPUT_XRAY/new"',
        inputs=[InputSpec("xray", "xray", "main", commit, "cached")],
    )
    assert (job.state, job.exit_code) == ("succeeded", 0), job.reason
    assert job.workdir is not None
    outputs = Path(job.workdir) / "outputs"
    assert (outputs / "count").read_text().strip() == "9"
    assert (outputs / "where").read_text() == "/inputs/XRAY\n"
    assert "Read-only file system" in (outputs / "refused").read_text()
    started = next(e for e in store.timeline(job.id) if e.kind == "started")
    assert started.detail.startswith("container: job-")


def test_a_job_whose_image_is_missing_fails_with_podmans_message(
    hub: Hub, store: ComputeStore, boxes: str, tmp_path: Path
) -> None:
    job = _run_job(hub, store, tmp_path, "true", image="localhost/no-such-image:2")
    assert (job.state, job.exit_code) == ("failed", 125)
    assert job.reason is not None and "localhost/no-such-image:2: image not known" in job.reason


def test_a_job_of_a_compute_resource_with_bad_settings_fails_with_the_reason(
    hub: Hub, store: ComputeStore, world: World, tmp_path: Path
) -> None:
    now = SystemClock().now()
    Topology(hub.catalog).add_compute("onprem-box", "onprem", "container", {"pul": "x"}, [], now)
    store.set_capacity("onprem-box", Resources(2000, 4 * 10**9))
    store.add_template("onprem-box-small", "onprem-box", ONE_CPU, "busybox", now)
    store.add_queue("boxes", ["onprem-box-small"], now=now)
    job = _run_job(hub, store, tmp_path, "true")
    assert job.state == "failed"
    assert job.reason is not None and "bad settings for the container backend" in job.reason
    assert "'pul'" in job.reason


def test_compute_add_takes_backend_settings_as_key_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lakecache.catalog.topology import BACKENDS
    from lakecache.cli.main import main

    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT", "LAKECACHE_SERVER"):
        monkeypatch.delenv(k, raising=False)
    assert main(["site", "add", "onprem"]) == 0
    code = main(
        [
            "compute",
            "add",
            "box",
            "-s",
            "onprem",
            "--backend",
            "container",
            "--cpu",
            "2",
            "--memory",
            "4GB",
            "--config",
            "runtime=runc",
            "--config",
            "grace=2",
            "--config",
            '{"extra_args": ["--network", "host"]}',
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert main(["compute", "ls", "--json"]) == 0
    out = capsys.readouterr().out
    (box,) = [c for c in json.loads(out[out.index("[") :]) if c["name"] == "box"]
    assert box["backend"] == "container"
    assert box["config"] == {"runtime": "runc", "grace": 2, "extra_args": ["--network", "host"]}
    assert "container" in BACKENDS
    assert main(["compute", "add", "bad", "-s", "onprem", "--config", "no-equals-sign"]) != 0
    assert "write KEY=VALUE" in capsys.readouterr().err


def test_a_container_job_past_its_time_limit_is_stopped_and_removed(
    hub: Hub, store: ComputeStore, boxes: str, tmp_path: Path, podman: dict[str, Any]
) -> None:
    t0 = time.monotonic()
    job = _run_job(hub, store, tmp_path, "sleep", "60", timeout_seconds=2)
    assert (job.state, job.reason) == ("failed", "timed out after 2 s")
    assert time.monotonic() - t0 < 40
    assert _containers(podman, job.id) == []


def test_a_container_engine_that_refuses_fails_the_job_with_podmans_message(
    hub: Hub, store: ComputeStore, world: World, podman: dict[str, Any], tmp_path: Path
) -> None:
    now = SystemClock().now()
    settings = {**podman, "runtime": "no-such-runtime"}
    Topology(hub.catalog).add_compute("onprem-box", "onprem", "container", settings, [], now)
    store.set_capacity("onprem-box", Resources(2000, 4 * 10**9))
    store.add_template("onprem-box-small", "onprem-box", ONE_CPU, podman["image"], now)
    store.add_queue("boxes", ["onprem-box-small"], now=now)
    job = _run_job(hub, store, tmp_path, "true")
    assert job.state == "failed"
    assert job.reason is not None and "no-such-runtime" in job.reason, job.reason
    assert store.capacity()[0].jobs == 0


def test_a_container_job_linking_to_the_hosts_files_gets_none_of_them_collected(
    hub: Hub, store: ComputeStore, boxes: str, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("only the agent's machine has this")
    job = _run_job(
        hub,
        store,
        tmp_path,
        "sh",
        "-c",
        f"echo result > /outputs/result; ln -s {secret} /outputs/secret;"
        " ln -s / /outputs/root; echo out > /outputs/../escaped 2>/dev/null; true",
    )
    assert job.state == "succeeded", job.reason
    assert [f.path for f in store.outputs(job.id)] == ["result"]
    event = next(e for e in store.timeline(job.id) if e.kind == "outputs")
    assert "secret (a symbolic link" in event.detail and "root (a symbolic link" in event.detail
