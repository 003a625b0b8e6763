"""The container backend on real Podman containers: the contract suite, read-only inputs,
engine errors as the job's reason, cancel, and the command line it builds."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_contract import BackendContract, make_spec, wait_exit

from lakecache.compute.backends import Backend, BackendError, open_backend
from lakecache.compute.backends.container import ContainerBackend, container_view
from lakecache.compute.model import Resources
from lakecache.testing.podman import busybox_image, podman_config

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The container backend's config for this machine's Podman, with a busybox image."""
    config = podman_config(tmp_path_factory.mktemp("podman"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lakecache" / "podman"
    config["image"] = busybox_image(cache, config)
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
