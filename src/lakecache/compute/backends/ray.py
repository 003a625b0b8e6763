"""The ``ray`` backend: each attempt is one Ray task on the site's Ray cluster.

The task asks Ray for the slot's size (``num_cpus``, ``num_gpus``, ``memory``) and
for a sliver of the custom resource that marks the site's nodes (setting
``site_resource``, e.g. ``site:onprem``; every node of that site declares it), so
one cluster can hold several sites, or a cluster is one site and needs none. On
the node the task runs the command as a subprocess in the attempt's folder with
the job's environment, writes its stdout and stderr to the job's log file, and
returns the exit code. Paths are the same on every node: the nodes mount the
site's cache volume and the agent's jobs folder at the paths the agent uses (the
inputs and outputs are plain paths, as on the ``local`` backend).

``max_retries=0``: lakecache decides about another attempt, never Ray. Cancel is
``ray.cancel(force=True)``, which kills the worker; the command dies with it
(``PR_SET_PDEATHSIG``), so a cancelled job leaves nothing behind on the node.

The Ray driver is per process (``ray.init``): an agent connects to one Ray
cluster, the first such backend's ``address``. A cluster that cannot be reached
is refused at once (a TCP probe of its address before ``ray.init``, which would
otherwise wait for minutes), and the job fails with that message.

Settings (``lakecache compute add --backend ray --config ...``): ``address``
(``host:port`` of the head's GCS), ``site_resource``, ``namespace`` and
``connect_timeout`` (seconds for the probe).
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any

from lakecache.compute.backends.base import BackendError, Exit, LaunchSpec

#: The share of the site's custom resource one task asks for: enough to pin it to the
#: site's nodes, too little to limit how many run there (admission does that).
SITE_SHARE = 0.001
INSTALL_HINT = "Install Ray on the agent's machine: pip install 'lakecache[ray]'."

# ray.init is one per process, so the address it went to is too.
_connect_lock = threading.Lock()
_connected_to: str | None = None


def run_command(
    command: list[str], cwd: str, env: dict[str, str], log_path: str
) -> tuple[int, str | None]:
    """The body of the Ray task, run on a node: the command's exit code and why it ended."""
    import ctypes
    import signal
    import subprocess
    import sys

    def die_with_worker() -> None:
        # A force-cancelled task's worker is killed; its command must go with it.
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_worker,
            )
        except FileNotFoundError:
            return 127, f"command not found on the Ray node: {command[0]!r}"
        except PermissionError:
            return 126, f"command not executable on the Ray node: {command[0]!r}"
        code = proc.wait()
    if code < 0:
        return 128 - code, f"killed by {signal.Signals(-code).name}"
    return code, None


class RayBackend:
    """Ray tasks on one Ray cluster. Safe to use from several threads."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        site_resource: str | None = None,
        namespace: str = "lakecache",
        connect_timeout: float = 5.0,
    ) -> None:
        if not address:
            raise BackendError(
                "the ray backend needs the address of the Ray cluster",
                hint="Set it in the compute resource's config: --config address=HEAD:6379",
            )
        self.address = address
        self.site_resource = site_resource
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self._refs: dict[str, Any] = {}
        #: Handles cancelled here: a force-cancel can let the task return first with its
        #: command's SIGKILL, and the attempt still ended because it was cancelled.
        self._cancelled: set[str] = set()
        self._logs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._remote: Any = None

    # -- the cluster ---------------------------------------------------------------------

    def _ray(self) -> Any:
        """The ``ray`` module, connected to this backend's cluster."""
        try:
            import ray
        except ImportError:
            raise BackendError("Ray is not installed on this machine", hint=INSTALL_HINT) from None
        global _connected_to
        with _connect_lock:
            if ray.is_initialized() and _connected_to not in (None, self.address):
                raise BackendError(
                    f"this agent is connected to the Ray cluster at {_connected_to}, "
                    f"not {self.address}",
                    hint="A process drives one Ray cluster: run one agent per Ray cluster.",
                )
            if not ray.is_initialized():
                self._probe()
                try:
                    ray.init(
                        address=self.address,
                        namespace=self.namespace,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                    )
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise BackendError(
                        f"cannot connect to the Ray cluster at {self.address}: {exc}",
                        hint="Check that the cluster is up and the address is its head's GCS.",
                    ) from exc
                _connected_to = self.address
            if self._remote is None:
                self._remote = ray.remote(max_retries=0, retry_exceptions=False)(run_command)
        return ray

    def _probe(self) -> None:
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=self.connect_timeout):
                pass
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"the Ray cluster at {self.address} cannot be reached: {exc}",
                hint="Start the cluster, or fix the address in the compute resource's config.",
            ) from exc

    def demands(self, spec: LaunchSpec) -> dict[str, Any]:
        """The Ray task options for ``spec``'s slot (pure: for tests and explanations)."""
        options: dict[str, Any] = {
            "num_cpus": spec.slot.cpu_milli / 1000,
            "num_gpus": spec.slot.gpu,
            "name": spec.handle,
        }
        if spec.slot.memory:
            options["memory"] = spec.slot.memory
        if self.site_resource:
            options["resources"] = {self.site_resource: SITE_SHARE}
        return options

    # -- the protocol --------------------------------------------------------------------

    def submit(self, spec: LaunchSpec) -> str:
        ray = self._ray()
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            ref = self._remote.options(**self.demands(spec)).remote(
                list(spec.command), str(spec.workdir), dict(spec.env), str(spec.log_path)
            )
        except ray.exceptions.RayError as exc:
            raise BackendError(f"the Ray cluster refused the task: {exc}") from exc
        with self._lock:
            self._refs[spec.handle] = ref
            self._logs[spec.handle] = spec.log_path
        return spec.handle

    def _ref(self, handle: str) -> Any:
        with self._lock:
            ref = self._refs.get(handle)
        if ref is None:
            raise BackendError(f"no Ray task {handle!r} started by this agent")
        return ref

    def poll(self, handle: str) -> Exit | None:
        ray = self._ray()
        ref = self._ref(handle)
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return None
        with self._lock:
            cancelled = handle in self._cancelled
        try:
            code, reason = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return Exit(137, "cancelled: the Ray task was killed")
        except ray.exceptions.RayError as exc:
            if cancelled:  # its worker was killed: the cancel, not a failure
                return Exit(137, "cancelled: the Ray task was killed")
            # The node or worker died, or the cluster lost the task: the job fails with it.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return Exit(1, f"the Ray task failed: {type(exc).__name__}: {first}")
        if cancelled and int(code) != 0:
            return Exit(int(code), f"cancelled: the Ray task was killed ({reason})")
        return Exit(int(code), reason)

    def cancel(self, handle: str) -> None:
        ray = self._ray()
        ref = self._ref(handle)
        ready, _ = ray.wait([ref], timeout=0)
        if ready:
            return
        with self._lock:
            self._cancelled.add(handle)
        ray.cancel(ref, force=True)

    def logs(self, handle: str) -> Path:
        with self._lock:
            path = self._logs.get(handle)
        if path is None:
            raise BackendError(f"no Ray task {handle!r} started by this agent")
        return path
