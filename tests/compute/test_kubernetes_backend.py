"""The kubernetes backend, to the manifest level.

No API server can run here (no kube-apiserver, k3s or kind), so the contract
suite does not run against this backend: these tests validate the Jobs it builds
against the Kubernetes JSON schemas of version 1.30 (strict: no unknown field)
with ``kubernetes-validate``, which ships them, for every volume kind and with and
without GPUs, and check what each manifest says.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from backend_contract import make_spec

from lakecache.compute.backends import BackendError, open_backend
from lakecache.compute.backends.base import LaunchSpec
from lakecache.compute.model import Resources

kubernetes_validate = pytest.importorskip("kubernetes_validate")

#: The Kubernetes version the manifests are checked against.
K8S_VERSION = "1.30.0"

CACHE_VOLUMES: dict[str, dict[str, Any]] = {
    "pvc": {"root": "/mnt/cache", "claim_name": "lakecache-cache"},
    "hostPath": {"root": "/mnt/cache", "host_path": "/data/lakecache"},
    "nfs": {"root": "/mnt/cache", "nfs": {"server": "nfs.onprem", "path": "/export/cache"}},
}


def _spec(tmp_path: Path, gpu: int = 0, **kw: Any) -> LaunchSpec:
    spec = make_spec(
        tmp_path,
        "python",
        "train.py",
        image="pytorch:2",
        job_id=17,
        env={"LAKECACHE_INPUT_XRAY": "/mnt/cache/xray/abc", "HOME": "/root", "SEED": "1"},
        inputs={"/mnt/cache/xray/abc": Path("/mnt/cache/xray/abc")},
    )
    return dataclasses.replace(spec, slot=Resources(2000, 8 * 10**9, gpu), **kw)


def _valid(manifest: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    return manifest


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_schemas_of_the_named_version_ship_offline() -> None:
    with pytest.raises(kubernetes_validate.ValidationError):
        _valid(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "x"},
                "spec": {"backoffLimit": "zero", "template": {}},
            }
        )


@pytest.mark.parametrize("kind", sorted(CACHE_VOLUMES))
@pytest.mark.parametrize("gpu", [0, 2])
def test_a_job_manifest_is_valid_and_mounts_the_cache_read_only(
    tmp_path: Path, kind: str, gpu: int
) -> None:
    backend = open_backend("kubernetes", {"namespace": "ml", "cache": CACHE_VOLUMES[kind]})
    manifest = _valid(backend.manifest(_spec(tmp_path, gpu)))  # type: ignore[attr-defined]
    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    assert manifest["metadata"]["name"] == "lakecache-job-17-1"
    assert manifest["metadata"]["namespace"] == "ml"
    labels = {"lakecache.io/job-id": "17", "lakecache.io/attempt": "1"}
    assert manifest["metadata"]["labels"] == labels
    assert manifest["spec"]["template"]["metadata"]["labels"] == labels
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in manifest["spec"]
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    volume = next(v for v in pod["volumes"] if v["name"] == "cache")
    if kind == "pvc":
        assert volume["persistentVolumeClaim"] == {"claimName": "lakecache-cache", "readOnly": True}
    elif kind == "hostPath":
        assert volume["hostPath"] == {"path": "/data/lakecache", "type": "Directory"}
    else:
        assert volume["nfs"] == {"server": "nfs.onprem", "path": "/export/cache", "readOnly": True}
    container = _container(manifest)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "cache")
    assert mount == {"name": "cache", "mountPath": "/mnt/cache", "readOnly": True}
    assert container["image"] == "pytorch:2"
    assert container["command"] == ["python", "train.py"]
    limits = container["resources"]["limits"]
    assert limits["cpu"] == "2000m" and limits["memory"] == str(8 * 10**9)
    if gpu:
        assert limits["nvidia.com/gpu"] == "2"
    else:
        assert "nvidia.com/gpu" not in limits
    assert container["resources"]["requests"] == limits
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LAKECACHE_INPUT_XRAY"] == "/mnt/cache/xray/abc"  # the same path on the node
    assert env["LAKECACHE_OUTPUTS"] == "/outputs" and env["SEED"] == "1"
    assert "HOME" not in env and "PATH" not in env


def test_outputs_on_the_jobs_volume_are_mounted_where_the_agent_sees_them(
    tmp_path: Path,
) -> None:
    jobs = {"root": str(tmp_path), "claim_name": "lakecache-jobs"}
    backend = open_backend(
        "kubernetes",
        {
            "cache": CACHE_VOLUMES["pvc"],
            "jobs": jobs,
            "node_selector": {"lakecache.io/site": "onprem"},
        },
    )
    spec = _spec(tmp_path, timeout_seconds=600)
    manifest = _valid(backend.manifest(spec))  # type: ignore[attr-defined]
    assert manifest["spec"]["activeDeadlineSeconds"] == 600
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"lakecache.io/site": "onprem"}
    assert {
        "name": "jobs",
        "persistentVolumeClaim": {"claimName": "lakecache-jobs", "readOnly": False},
    } in pod["volumes"]
    container = _container(manifest)
    assert {"name": "jobs", "mountPath": str(spec.workdir), "subPath": "attempt"} in container[
        "volumeMounts"
    ]
    assert container["workingDir"] == str(spec.workdir)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LAKECACHE_OUTPUTS"] == str(spec.workdir / "outputs")


def test_a_streamed_input_needs_the_jobs_volume(tmp_path: Path) -> None:
    streamed = str(tmp_path / "attempt" / "inputs" / "xray")
    spec = dataclasses.replace(
        _spec(tmp_path), inputs={streamed: Path(streamed)}, env={"LAKECACHE_INPUT_XRAY": streamed}
    )
    bare = open_backend("kubernetes", {"cache": CACHE_VOLUMES["pvc"]})
    with pytest.raises(BackendError, match="not on a volume the pod can mount") as info:
        bare.manifest(spec)  # type: ignore[attr-defined]
    assert "jobs" in info.value.hint
    with_jobs = open_backend(
        "kubernetes",
        {"cache": CACHE_VOLUMES["pvc"], "jobs": {"root": str(tmp_path), "host_path": "/jobs"}},
    )
    _valid(with_jobs.manifest(spec))  # type: ignore[attr-defined]


def test_an_input_off_the_cache_volume_is_refused(tmp_path: Path) -> None:
    backend = open_backend("kubernetes", {"cache": {"root": "/elsewhere", "claim_name": "c"}})
    with pytest.raises(BackendError, match="/mnt/cache/xray/abc is not on a volume"):
        backend.manifest(_spec(tmp_path))  # type: ignore[attr-defined]


def test_a_job_without_an_image_is_refused(tmp_path: Path) -> None:
    backend = open_backend("kubernetes", {"cache": CACHE_VOLUMES["pvc"]})
    with pytest.raises(BackendError, match="names no image"):
        backend.manifest(dataclasses.replace(_spec(tmp_path), image=None))  # type: ignore[attr-defined]
    fallback = open_backend("kubernetes", {"cache": CACHE_VOLUMES["pvc"], "image": "busybox:1"})
    manifest = _valid(fallback.manifest(dataclasses.replace(_spec(tmp_path), image=None)))  # type: ignore[attr-defined]
    assert _container(manifest)["image"] == "busybox:1"


def test_another_gpu_resource_name_is_used_as_given(tmp_path: Path) -> None:
    backend = open_backend(
        "kubernetes", {"cache": CACHE_VOLUMES["pvc"], "gpu_resource": "amd.com/gpu"}
    )
    manifest = _valid(backend.manifest(_spec(tmp_path, gpu=1)))  # type: ignore[attr-defined]
    assert _container(manifest)["resources"]["limits"]["amd.com/gpu"] == "1"


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"cache": {"claim_name": "c"}}, "needs root"),
        ({"cache": {"root": "/mnt/cache"}}, "names no volume"),
        (
            {"cache": {"root": "/mnt/cache", "nfs": {"server": "x"}}},
            "must name a server and a path",
        ),
    ],
)
def test_bad_volume_settings_are_refused_with_an_example(config: dict[str, Any], says: str) -> None:
    with pytest.raises(BackendError, match=says) as info:
        open_backend("kubernetes", config)
    assert "e.g." in info.value.hint


def test_without_a_cluster_submit_fails_with_the_reason(tmp_path: Path) -> None:
    """No kubeconfig at all: the job fails at submit with what to set, nothing is stuck."""
    missing = tmp_path / "no-kubeconfig"
    backend = open_backend(
        "kubernetes", {"cache": CACHE_VOLUMES["pvc"], "kubeconfig": str(missing)}
    )
    with pytest.raises(BackendError, match="no Kubernetes cluster configured") as info:
        backend.submit(_spec(tmp_path))
    assert "kubeconfig" in info.value.hint


def test_an_unreachable_api_server_fails_the_submit_with_the_reason(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed again: nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: here\n"
        f"clusters: [{{name: here, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "contexts: [{name: here, context: {cluster: here, user: me}}]\n"
        "users: [{name: me, user: {token: t}}]\n"
    )
    backend = open_backend(
        "kubernetes", {"cache": CACHE_VOLUMES["pvc"], "kubeconfig": str(kubeconfig)}
    )
    with pytest.raises(BackendError, match="cannot be reached"):
        backend.submit(_spec(tmp_path))
