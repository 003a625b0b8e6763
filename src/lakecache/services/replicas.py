"""Several ``lakecache server`` processes on one catalog (PostgreSQL) and one lake, behind a
round-robin balancer (standing for a Kubernetes Service): what the replica tests and the
deploy bench start (each replica a real process, killed with SIGKILL on demand)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lakecache.services.balancer import RoundRobinBalancer

PASSWORD = "replica-admin-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ReplicaSet:
    """``count`` replicas of one config file; start, kill (SIGKILL) and restart each."""

    root: Path
    config: Path
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)
    balancer: RoundRobinBalancer | None = None

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        catalog_url: str,
        lake_url: str,
        s3: dict[str, str],
        server: str = "",
        sites: str = "",
        count: int = 2,
    ) -> ReplicaSet:
        root.mkdir(parents=True, exist_ok=True)
        config = root / "server.toml"
        lake = "\n".join(f'{key} = "{value}"' for key, value in s3.items())
        config.write_text(
            "[lakecache]\n"
            f'catalog_url = "{catalog_url}"\nlake_url = "{lake_url}"\n{lake}\n'
            "[server]\nagents = false\n"
            f"{server}\n{sites}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
        env["LAKECACHE_ADMIN_PASSWORD"] = PASSWORD
        rs = cls(root, config, env)
        rs.replicas = [Replica(free_port(), root / f"replica-{i}") for i in range(count)]
        return rs

    def start(self, index: int, *, wait: bool = True) -> Replica:
        replica = self.replicas[index]
        replica.home.mkdir(parents=True, exist_ok=True)
        log = open(replica.home / "server.log", "ab")  # noqa: SIM115 - the process keeps it
        replica.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lakecache",
                "server",
                "--config",
                str(self.config),
                "--port",
                str(replica.port),
                "--log-level",
                "warning",
            ],
            env={**self.env, "LAKECACHE_HOME": str(replica.home)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_healthy(index)
        return replica

    def wait_healthy(self, index: int, timeout: float = 120) -> float:
        """Seconds until the replica's /healthz answered 200."""
        replica = self.replicas[index]
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"{replica.url}/healthz", timeout=10).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            assert replica.process is not None
            if replica.process.poll() is not None or time.monotonic() - started > timeout:
                log = (replica.home / "server.log").read_text()[-3000:]
                code = replica.process.poll()
                how = "still running" if code is None else f"exited with {code}"
                raise RuntimeError(f"replica {index} never became healthy ({how}):\n{log}")
            time.sleep(0.1)

    def start_all(self) -> ReplicaSet:
        for i in range(len(self.replicas)):
            self.start(i, wait=False)
        for i in range(len(self.replicas)):
            self.wait_healthy(i)
        return self.open_balancer()

    def open_balancer(self) -> ReplicaSet:
        """The balancer in front of every replica (started or not: it skips the dead)."""
        self.balancer = RoundRobinBalancer([("127.0.0.1", r.port) for r in self.replicas])
        self.balancer.start()
        return self

    @property
    def url(self) -> str:
        assert self.balancer is not None
        return self.balancer.url

    def kill(self, index: int) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies."""
        process = self.replicas[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        if self.balancer is not None:
            self.balancer.close()
        for replica in self.replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.terminate()
                try:
                    replica.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    replica.process.wait()


class RoundRobinClient:
    """Requests spread over the replicas (a fresh connection each, through the balancer),
    each retried once on a transport error: what "lost beyond a retry" counts."""

    def __init__(self, url: str, token: str) -> None:
        self._client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.retried = 0
        self.lost: list[str] = []

    def get(self, path: str) -> httpx.Response | None:
        for attempt in range(2):
            try:
                return self._client.get(path)
            except httpx.TransportError as exc:
                if attempt == 0:
                    # As the lakecache client does: a short pause, so that a replica dying
                    # right now is gone (its port refused) when the retry is balanced.
                    self.retried += 1
                    time.sleep(0.2)
                    continue
                self.lost.append(f"GET {path}: {exc!r}")
        return None

    def close(self) -> None:
        self._client.close()
