"""The ``container`` backend: the job's command in a Podman or Docker container on the
agent's machine, through the engine's CLI (both take the same flags).

Each attempt is one ``<engine> run --rm`` whose client process stays attached: its
exit code is the container's, and its output (the job's stdout and stderr, and the
engine's own error if the container could not start) is the job's log. Inside:

* each input is mounted read-only at ``/inputs/<NAME>`` and ``LAKECACHE_INPUT_<NAME>``
  points there; an input no such variable names is mounted at the path the job is told;
* the attempt's outputs folder is mounted read-write at ``/outputs``
  (``LAKECACHE_OUTPUTS=/outputs``); nothing else of the agent's machine is visible;
* the slot's size caps the container (``--cpus``, ``--memory``), and GPUs are given
  as CDI devices (``--device nvidia.com/gpu=all``) or Docker's ``--gpus N``;
* the image is the job's, else its template's default image, else the compute
  resource's (setting ``image``).

The engine reports its own failures as exit codes 125 (the engine failed: image
missing, runtime error), 126 (the command cannot be run) and 127 (no such command);
the job then fails with the engine's ``Error:`` line as its reason.

Settings (the compute resource's config, ``lakecache compute add --config``):
``binary`` (default ``podman`` if found, else ``docker``), ``image``, ``runtime`` (e.g. ``runc``
where the default runtime refuses the kernel's cgroups), ``containers_conf`` (a
containers.conf for Podman, e.g. one with ``default_ulimits = []`` where the
default ulimits cannot be set), ``pull`` (``missing``, ``never``, ``always``),
``network`` (e.g. ``host``), ``gpus`` (``cdi`` or ``docker``), ``grace`` (seconds a
cancelled job gets between ``stop`` and the kill) and ``extra_args``.

Containers carry the labels ``lakecache.job`` and ``lakecache.attempt``. A
container outlives its attached client, so a new attempt of a job first removes
this machine's containers of the job's earlier attempts: a job requeued after its
agent died never runs twice at once here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from lakecache.compute.backends.base import BackendError, Exit, LaunchSpec, ProcessTable

#: Variables that describe the agent's machine, not the image: the image's own win.
HOST_ONLY_ENV = ("PATH", "HOME", "TMPDIR", "USER")
#: Exit codes by which the engine (not the job) says it failed, and what they mean.
ENGINE_EXITS = {
    125: "the container engine failed",
    126: "the command cannot be run",
    127: "the command was not found",
}
INPUT_ROOT = "/inputs"
OUTPUTS = "/outputs"
_INPUT_PREFIX = "LAKECACHE_INPUT_"


def default_binary() -> str:
    """``podman`` if it is on PATH, else ``docker`` (which takes the same flags)."""
    return "podman" if shutil.which("podman") else "docker"


class ContainerBackend:
    """Containers of Podman or Docker on this machine. Safe to use from several threads."""

    name = "container"

    def __init__(
        self,
        binary: str | None = None,
        image: str | None = None,
        runtime: str | None = None,
        containers_conf: str | None = None,
        pull: str = "missing",
        network: str | None = None,
        gpus: str = "cdi",
        grace: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if pull not in ("missing", "never", "always", "newer"):
            raise BackendError(
                f"container setting pull={pull!r} is not a pull policy",
                hint="Use missing, never, always or newer.",
            )
        if gpus not in ("cdi", "docker"):
            raise BackendError(
                f"container setting gpus={gpus!r} is not a way to give GPUs",
                hint="Use cdi (--device nvidia.com/gpu=all) or docker (--gpus N).",
            )
        self.binary = binary or default_binary()
        self.image = image
        self.runtime = runtime
        self.containers_conf = containers_conf
        self.pull = pull
        self.network = network
        self.gpus = gpus
        self.grace = grace
        self.extra_args = tuple(extra_args)
        self._table = ProcessTable("container")

    # -- the command line ----------------------------------------------------------------

    def engine_env(self) -> dict[str, str]:
        """The environment the engine's CLI runs in: the agent's, plus its config file."""
        env = dict(os.environ)
        if self.containers_conf:
            env["CONTAINERS_CONF"] = self.containers_conf
        return env

    def _engine(self, *args: str) -> list[str]:
        cmd = [self.binary]
        if self.runtime:
            cmd += ["--runtime", self.runtime]
        return [*cmd, *args]

    def run_args(self, spec: LaunchSpec, image: str) -> list[str]:
        """The full ``run`` command line for ``spec`` (pure: for tests and for ``--dry-run``)."""
        args = self._engine(
            "run",
            "--rm",
            "--name",
            container_name(spec),
            "--label",
            f"lakecache.job={spec.job_id}",
            "--label",
            f"lakecache.attempt={spec.attempt}",
            "--pull",
            self.pull,
        )
        if self.network:
            args += ["--network", self.network]
        if spec.slot.cpu_milli:
            args += ["--cpus", f"{spec.slot.cpu_milli / 1000:g}"]
        if spec.slot.memory:
            args += ["--memory", str(spec.slot.memory)]
        if spec.slot.gpu:
            if self.gpus == "cdi":
                args += ["--device", "nvidia.com/gpu=all"]
            else:
                args += ["--gpus", str(spec.slot.gpu)]
        env, mounts = container_view(spec)
        for host, inside, mode in mounts:
            args += ["--volume", f"{host}:{inside}:{mode}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        args += list(self.extra_args)
        return [*args, image, *spec.command]

    # -- the protocol --------------------------------------------------------------------

    def submit(self, spec: LaunchSpec) -> str:
        image = spec.image or self.image
        if not image:
            raise BackendError(
                f"job {spec.job_id} names no image, and neither its template nor its "
                "compute resource has a default image",
                hint="Give one with job run --image IMAGE, or on the template (--image).",
            )
        if shutil.which(self.binary) is None:
            raise BackendError(
                f"the container engine {self.binary!r} is not installed on this machine",
                hint="Install podman (apt-get install podman runc) or docker, "
                "or set binary in the compute resource's config.",
            )
        self._remove_earlier_attempts(spec)
        (spec.workdir / "outputs").mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    self.run_args(spec, image),
                    env=self.engine_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a ^C to the agent does not reach the engine
                )
            except OSError as exc:
                raise BackendError(f"cannot start {self.binary}: {exc.strerror}") from exc
        return self._table.add(spec, proc)

    def poll(self, handle: str) -> Exit | None:
        code = self._table.exit_code(handle)
        if code is None:
            return None
        if self._table.proc(handle).returncode < 0:
            # The attached client was killed (by cancel's last resort, or by hand).
            return Exit(code, f"{self.binary} killed by signal {code - 128}")
        if code in ENGINE_EXITS:
            error = engine_error(self.logs(handle))
            if error is not None:
                return Exit(code, f"{ENGINE_EXITS[code]}: {error}")
        return Exit(code)

    def cancel(self, handle: str) -> None:
        proc = self._table.proc(handle)
        if proc.poll() is not None:
            return
        name = _name(handle)
        # Just after submit the engine may still be creating the container, which
        # ``stop`` does not know yet: try again until it does or the client ends.
        deadline = time.monotonic() + self.grace + 15
        while proc.poll() is None and time.monotonic() < deadline:
            stopped = subprocess.run(
                self._engine("stop", "--time", f"{max(int(self.grace), 0)}", name),
                env=self.engine_env(),
                capture_output=True,
                check=False,
            )
            if stopped.returncode == 0:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    continue
            else:
                time.sleep(0.1)
        if proc.poll() is None:
            # The engine could not stop it: force it.
            self._force_remove(name)
            proc.kill()
            proc.wait()

    def logs(self, handle: str) -> Path:
        return self._table.log(handle)

    # -- helpers -------------------------------------------------------------------------

    def _force_remove(self, *names: str) -> None:
        # kill first: ``rm --force`` alone would give each container its stop timeout.
        # Both may find a container gone already, which is what was asked: no error.
        if names:
            for verb in (("kill",), ("rm", "--force")):
                subprocess.run(
                    self._engine(*verb, *names),
                    env=self.engine_env(),
                    capture_output=True,
                    check=False,
                )

    def _remove_earlier_attempts(self, spec: LaunchSpec) -> None:
        listed = subprocess.run(
            self._engine(
                "ps",
                "--all",
                "--filter",
                f"label=lakecache.job={spec.job_id}",
                "--format",
                "{{.Names}}",
            ),
            env=self.engine_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if listed.returncode != 0:
            raise BackendError(
                f"{self.binary} cannot list containers: {_last_error(listed.stderr)}",
                hint="Check that the container engine works on the agent's machine "
                f"({self.binary} ps).",
            )
        # This attempt's own name too: a container left by an earlier run of the same
        # numbers (a catalog restored, a test) would make ``run --name`` refuse (125).
        self._force_remove(*[n for n in listed.stdout.split() if n])


def container_name(spec: LaunchSpec) -> str:
    """The container's name: one per attempt, so a stale one is found by name."""
    return _name(spec.handle)


def _name(handle: str) -> str:
    return "lakecache-" + handle


def container_view(spec: LaunchSpec) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The job's environment as seen inside, and its mounts as (host, inside, mode).

    Inputs move to ``/inputs/<NAME>`` (the variable that names them is rewritten),
    the outputs folder to ``/outputs``; the agent machine's own PATH, HOME, TMPDIR
    and USER are left out so the image's apply.
    """
    env = {k: v for k, v in spec.env.items() if k not in HOST_ONLY_ENV}
    mounts: list[tuple[str, str, str]] = []
    placed: dict[str, str] = {}
    for key, value in spec.env.items():
        if key.startswith(_INPUT_PREFIX) and value in spec.inputs:
            inside = f"{INPUT_ROOT}/{key[len(_INPUT_PREFIX) :]}"
            placed.setdefault(value, inside)
            env[key] = placed[value]
    for told, host in spec.inputs.items():
        mounts.append((str(host), placed.get(told, told), "ro"))
    mounts.append((str(spec.workdir / "outputs"), OUTPUTS, "rw"))
    env["LAKECACHE_OUTPUTS"] = OUTPUTS
    return env, mounts


def engine_error(log_path: Path, tail: int = 8192) -> str | None:
    """The engine's last ``Error: ...`` line in a job's log, if any."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - tail, 0))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    return _last_error(text)


def _last_error(text: str) -> str | None:
    errors = re.findall(r"^Error: (.+)$", text, flags=re.MULTILINE)
    if errors:
        return str(errors[-1]).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else None
