"""The ``kubernetes`` backend: one Kubernetes Job per attempt, through the official client.

The Job (built from the client's models by :meth:`KubernetesBackend.build_job`):

* one pod, ``restartPolicy: Never``, ``backoffLimit: 0`` (lakecache decides about
  another attempt, never Kubernetes), ``ttlSecondsAfterFinished`` (setting
  ``ttl_after_finished``), ``activeDeadlineSeconds`` from the attempt's timeout if
  it has one;
* labels ``lakecache.io/job-id`` and ``lakecache.io/attempt`` on the Job and its pod;
* the slot as requests and limits (cpu, memory, GPUs as ``nvidia.com/gpu`` or the
  setting ``gpu_resource``), ``nodeSelector`` pinning it to the site's nodes;
* the site's cache volume mounted **read-only** at the path where the agent sees it
  (setting ``cache``: ``root`` plus one of ``claim_name`` (a PVC), ``host_path`` or
  ``nfs: {server, path}``), so the input paths the job is told hold on the node too;
* outputs: with the setting ``jobs`` (a volume of the same form whose ``root`` is the
  agent's jobs folder) the attempt's own folder is mounted read-write where the agent
  sees it and the outputs are collected as on any backend; without it an
  ``emptyDir`` at ``/outputs`` (outputs then stay in the pod, and streamed inputs,
  which live in the attempt's folder, are refused).

Submit, poll, cancel and logs go through the client to the configured cluster
(``kubeconfig``, ``context``, or ``in_cluster``), in ``namespace``. The exit code is
the container's (from the pod's terminated state) and the reason the pod's or the
Job's (``DeadlineExceeded``, ``OOMKilled``, image pull errors); the pod's log is
copied to the job's log file when it ends.

No API server can run where lakecache is tested: the contract suite does not run
against this backend. Its tests validate the manifests it builds against the
Kubernetes JSON schemas of a named version (with ``kubernetes-validate``), for
every volume kind, with and without GPUs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lakecache.compute.backends.base import BackendError, Exit, LaunchSpec
from lakecache.compute.backends.container import HOST_ONLY_ENV, OUTPUTS

INSTALL_HINT = (
    "Install the Kubernetes client on the agent's machine: pip install 'lakecache[kubernetes]'."
)
LABEL_JOB = "lakecache.io/job-id"
LABEL_ATTEMPT = "lakecache.io/attempt"


def _models() -> Any:
    try:
        from kubernetes import client
    except ImportError:
        raise BackendError(
            "the Kubernetes client is not installed on this machine", hint=INSTALL_HINT
        ) from None
    return client


def _volume_source(kind: str, volume: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
    """The V1Volume keyword for a volume setting: a PVC, a hostPath or an NFS export."""
    client = _models()
    if "claim_name" in volume:
        return {
            "persistent_volume_claim": client.V1PersistentVolumeClaimVolumeSource(
                claim_name=str(volume["claim_name"]), read_only=read_only
            )
        }
    if "host_path" in volume:
        return {
            "host_path": client.V1HostPathVolumeSource(
                path=str(volume["host_path"]), type="Directory"
            )
        }
    if "nfs" in volume:
        nfs = volume["nfs"]
        if not isinstance(nfs, Mapping) or not {"server", "path"} <= set(nfs):
            raise BackendError(
                f"kubernetes setting {kind}.nfs must name a server and a path, not {nfs!r}",
                hint='e.g. "nfs": {"server": "10.0.0.5", "path": "/export/cache"}',
            )
        return {
            "nfs": client.V1NFSVolumeSource(
                server=str(nfs["server"]), path=str(nfs["path"]), read_only=read_only
            )
        }
    raise BackendError(
        f"kubernetes setting {kind} names no volume: give claim_name, host_path or nfs",
        hint=f'e.g. "{kind}": {{"root": "/mnt/cache", "claim_name": "lakecache-cache"}}',
    )


def _check_volume(kind: str, volume: Mapping[str, Any] | None) -> None:
    if volume is None:
        return
    if not isinstance(volume, Mapping) or not str(volume.get("root", "")).startswith("/"):
        raise BackendError(
            f"kubernetes setting {kind} needs root: the absolute path where the agent "
            "sees that volume",
            hint=f'e.g. "{kind}": {{"root": "/mnt/cache", "claim_name": "lakecache-cache"}}',
        )
    _volume_source(kind, volume, True)


class KubernetesBackend:
    """Kubernetes Jobs in one namespace of one cluster. Safe to use from several threads."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str = "default",
        image: str | None = None,
        cache: Mapping[str, Any] | None = None,
        jobs: Mapping[str, Any] | None = None,
        node_selector: Mapping[str, str] | None = None,
        gpu_resource: str = "nvidia.com/gpu",
        ttl_after_finished: int = 3600,
        service_account: str | None = None,
        image_pull_policy: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
    ) -> None:
        _check_volume("cache", cache)
        _check_volume("jobs", jobs)
        self.namespace = namespace
        self.image = image
        self.cache = dict(cache) if cache else None
        self.jobs = dict(jobs) if jobs else None
        self.node_selector = dict(node_selector or {})
        self.gpu_resource = gpu_resource
        self.ttl_after_finished = ttl_after_finished
        self.service_account = service_account
        self.image_pull_policy = image_pull_policy
        self.kubeconfig = kubeconfig
        self.context = context
        self.in_cluster = in_cluster
        self._logs: dict[str, Path] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._api: Any = None

    # -- the manifest --------------------------------------------------------------------

    def build_job(self, spec: LaunchSpec) -> Any:
        """The ``V1Job`` for ``spec`` (pure: no cluster needed). Raises BackendError for an
        attempt this configuration cannot run (no image, an input off the cache volume)."""
        client = _models()
        image = spec.image or self.image
        if not image:
            raise BackendError(
                f"job {spec.job_id} names no image, and neither its template nor its "
                "compute resource has a default image",
                hint="Give one with job run --image IMAGE, or on the template (--image).",
            )
        name = job_name(spec)
        labels = {LABEL_JOB: str(spec.job_id), LABEL_ATTEMPT: str(spec.attempt)}
        env = {k: v for k, v in spec.env.items() if k not in HOST_ONLY_ENV}
        volumes, mounts = [], []
        for told in spec.inputs:
            if self._within("jobs", told):
                continue  # a streamed input in the attempt's folder: on the jobs volume
            if not self._within("cache", told):
                where = f"the cache volume's root {self.cache['root']}" if self.cache else "none"
                raise BackendError(
                    f"input {told} is not on a volume the pod can mount (cache: {where})",
                    hint="Set cache (and jobs, for streamed inputs) in the compute "
                    "resource's config: the volumes the site's nodes mount.",
                )
        if self.cache and spec.inputs:
            volumes.append(
                client.V1Volume(name="cache", **_volume_source("cache", self.cache, True))
            )
            mounts.append(
                client.V1VolumeMount(name="cache", mount_path=self.cache["root"], read_only=True)
            )
        if self.jobs:
            root = str(self.jobs["root"]).rstrip("/")
            workdir = str(spec.workdir)
            if not self._within("jobs", workdir):
                raise BackendError(
                    f"the attempt's folder {workdir} is not under the jobs volume's root {root}",
                    hint="Set jobs.root to the agent's jobs folder.",
                )
            volumes.append(client.V1Volume(name="jobs", **_volume_source("jobs", self.jobs, False)))
            mounts.append(
                client.V1VolumeMount(
                    name="jobs",
                    mount_path=workdir,
                    sub_path=workdir[len(root) :].lstrip("/"),
                )
            )
            working_dir = workdir
        else:
            volumes.append(
                client.V1Volume(name="outputs", empty_dir=client.V1EmptyDirVolumeSource())
            )
            mounts.append(client.V1VolumeMount(name="outputs", mount_path=OUTPUTS))
            env["LAKECACHE_OUTPUTS"] = OUTPUTS
            working_dir = OUTPUTS
        amounts: dict[str, str] = {}
        if spec.slot.cpu_milli:
            amounts["cpu"] = f"{spec.slot.cpu_milli}m"
        if spec.slot.memory:
            amounts["memory"] = str(spec.slot.memory)
        if spec.slot.gpu:
            amounts[self.gpu_resource] = str(spec.slot.gpu)
        container = client.V1Container(
            name="job",
            image=image,
            image_pull_policy=self.image_pull_policy,
            command=list(spec.command),
            working_dir=working_dir,
            env=[client.V1EnvVar(name=k, value=v) for k, v in sorted(env.items())],
            resources=client.V1ResourceRequirements(requests=amounts, limits=dict(amounts)),
            volume_mounts=mounts,
        )
        pod = client.V1PodSpec(
            restart_policy="Never",
            containers=[container],
            volumes=volumes,
            node_selector=self.node_selector or None,
            service_account_name=self.service_account,
        )
        return client.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=client.V1ObjectMeta(name=name, namespace=self.namespace, labels=labels),
            spec=client.V1JobSpec(
                backoff_limit=0,
                active_deadline_seconds=spec.timeout_seconds,
                ttl_seconds_after_finished=self.ttl_after_finished,
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels), spec=pod
                ),
            ),
        )

    def manifest(self, spec: LaunchSpec) -> dict[str, Any]:
        """The Job as the plain dict ``kubectl apply`` would take."""
        from kubernetes.client import ApiClient

        built: dict[str, Any] = ApiClient().sanitize_for_serialization(self.build_job(spec))
        return built

    def _within(self, kind: str, path: str) -> bool:
        volume = self.cache if kind == "cache" else self.jobs
        if not volume:
            return False
        root = str(volume["root"]).rstrip("/") + "/"
        return (path.rstrip("/") + "/").startswith(root)

    # -- the cluster ---------------------------------------------------------------------

    def _batch(self) -> tuple[Any, Any]:
        """(BatchV1Api, CoreV1Api) for the configured cluster, made on first use."""
        with self._lock:
            if self._api is None:
                from kubernetes import client, config

                try:
                    if self.in_cluster:
                        config.load_incluster_config()
                        api = client.ApiClient()
                    else:
                        api = config.new_client_from_config(
                            config_file=self.kubeconfig, context=self.context
                        )
                except config.ConfigException as exc:
                    raise BackendError(
                        f"no Kubernetes cluster configured: {exc}",
                        hint="Set kubeconfig (and context) or in_cluster in the compute "
                        "resource's config.",
                    ) from exc
                self._api = (client.BatchV1Api(api), client.CoreV1Api(api))
            return self._api  # type: ignore[no-any-return]

    def submit(self, spec: LaunchSpec) -> str:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        job = self.build_job(spec)
        batch, _ = self._batch()
        try:
            batch.create_namespaced_job(self.namespace, job)
        except ApiException as exc:
            raise BackendError(f"the Kubernetes API refused the Job: {_api_message(exc)}") from exc
        except (OSError, HTTPError) as exc:  # urllib3's, once its retries are spent
            raise BackendError(f"the Kubernetes API cannot be reached: {exc}") from exc
        with self._lock:
            self._logs[job_name(spec)] = spec.log_path
        return str(job.metadata.name)

    def poll(self, handle: str) -> Exit | None:
        from kubernetes.client.exceptions import ApiException

        batch, core = self._batch()
        try:
            status = batch.read_namespaced_job_status(handle, self.namespace).status
        except ApiException as exc:
            if exc.status == 404 and handle in self._cancelled:
                return Exit(137, "cancelled: the Kubernetes Job was deleted")
            return Exit(1, f"the Kubernetes Job is gone: {_api_message(exc)}")
        if not (status.succeeded or status.failed):
            return None
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"job-name={handle}").items
        code, reason = (0 if status.succeeded else 1), None
        for pod in pods:
            for state in pod.status.container_statuses or []:
                if state.state and state.state.terminated:
                    code = int(state.state.terminated.exit_code)
                    reason = state.state.terminated.reason
            self._copy_log(core, handle, pod.metadata.name)
        if status.failed and reason in (None, "Error", "Completed"):
            reasons = [c.message or c.reason for c in status.conditions or [] if c.status == "True"]
            reason = "; ".join(r for r in reasons if r) or reason
        return Exit(code, None if code == 0 else reason)

    def _copy_log(self, core: Any, handle: str, pod: str) -> None:
        from kubernetes.client.exceptions import ApiException

        path = self.logs(handle)
        try:
            text = core.read_namespaced_pod_log(pod, self.namespace)
        except ApiException as exc:
            text = f"(the pod's log could not be read: {_api_message(exc)})\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as log:
            log.write(text)

    def cancel(self, handle: str) -> None:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        batch, _ = self._batch()
        with self._lock:
            self._cancelled.add(handle)
        try:
            batch.delete_namespaced_job(
                handle, self.namespace, body=V1DeleteOptions(propagation_policy="Foreground")
            )
        except ApiException as exc:
            if exc.status != 404:  # gone already: what was asked
                raise BackendError(f"cannot delete Job {handle}: {_api_message(exc)}") from exc

    def logs(self, handle: str) -> Path:
        with self._lock:
            path = self._logs.get(handle)
        if path is None:
            raise BackendError(f"no Kubernetes Job {handle!r} started by this agent")
        return path


def job_name(spec: LaunchSpec) -> str:
    """The Job's name: one per attempt (a DNS label)."""
    return f"lakecache-{spec.handle}"


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"
