"""The image of deploy/Containerfile, built with Podman and run: it serves /healthz, and a
commit and a cache fill against SeaweedFS (catalog on PostgreSQL) work through it.

No registry is reachable here, so the build is ``FROM`` a Debian bookworm + Python 3.11
base made locally (debootstrap, cached between runs under ~/.cache/lakecache/podman), and
pip installs from a wheelhouse downloaded once; users build ``FROM python:3.11-slim``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.parallel import machine_lock
from fixtures.seaweed import drop_bucket, new_bucket

import lakecache
from lakecache.services.images import build_image, python_base_image, wheelhouse
from lakecache.services.podman import PodmanUnavailableError, podman_config
from lakecache.services.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parents[2]
TAG = f"localhost/lakecache-test:{lakecache.__version__}"
PASSWORD = "image-admin-password"

pytestmark = [pytest.mark.timeout(900), pytest.mark.container]


def podman_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lakecache" / "podman"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    try:
        return podman_config(tmp_path_factory.mktemp("podman"))
    except PodmanUnavailableError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def image(podman: dict[str, Any]) -> str:
    cache = podman_cache()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with machine_lock("podman-images"):  # one process builds, the others reuse the layers
            base = python_base_image(cache, podman)
            wheels = wheelhouse(REPO, cache, sys.executable)
            return build_image(
                REPO, podman, tag=TAG, base=base, version=lakecache.__version__, wheels=wheels
            )
    except PodmanUnavailableError as exc:
        pytest.fail(str(exc))


def podman_run(podman: dict[str, Any], *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["podman", *args],
        env=dict(os.environ, CONTAINERS_CONF=podman["containers_conf"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_image_is_slim_non_root_labelled_and_checks_its_health(
    podman: dict[str, Any], image: str
) -> None:
    info = json.loads(podman_run(podman, "image", "inspect", image))[0]
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["org.opencontainers.image.version"] == lakecache.__version__
    assert "/healthz" in " ".join(info["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["lakecache"]
    run = ["run", "--rm", "--runtime", podman["runtime"], "--entrypoint", "sh", image, "-c"]
    # No compilers, no pip, no test dependencies in the runtime image.
    found = podman_run(podman, *run, "command -v gcc cc make pip pip3 || true")
    assert found.strip() == ""
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('pytest', 'ruff', 'mypy', 'pip') if u.find_spec(m)])"
    )
    assert podman_run(podman, *run, f'python3 -c "{probe}"').strip() == "[]"
    assert podman_run(podman, *run, "id -u").strip() == "10001"


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> Iterator[str]:
    name = new_bucket(seaweed)
    yield name
    drop_bucket(seaweed, name)


def test_the_server_in_the_image_commits_and_fills_a_cache_on_seaweedfs(
    podman: dict[str, Any],
    image: str,
    seaweed: SeaweedServer,
    bucket: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    name = f"lakecache-test-{uuid.uuid4().hex[:8]}"
    podman_run(
        podman,
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        podman["runtime"],
        "--network",
        "host",
        "-e",
        f"LAKECACHE_CATALOG={pg_url}",
        "-e",
        f"LAKECACHE_LAKE=s3://{bucket}/lake",
        "-e",
        f"LAKECACHE_S3_ENDPOINT={seaweed.endpoint}",
        "-e",
        f"LAKECACHE_S3_ACCESS_KEY={seaweed.access_key}",
        "-e",
        f"LAKECACHE_S3_SECRET_KEY={seaweed.secret_key}",
        "-e",
        f"LAKECACHE_ADMIN_PASSWORD={PASSWORD}",
        "-e",
        f"LAKECACHE_HEALTH_URL=http://127.0.0.1:{port}/healthz",
        image,
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 90:
                logs = podman_run(podman, "logs", name, check=False)
                pytest.fail(f"the server in the image never answered /healthz:\n{logs}")
            time.sleep(0.3)
        # The image's own HEALTHCHECK passes (podman runs it on demand here: no systemd).
        podman_run(podman, "healthcheck", "run", name)
        assert podman_run(podman, "exec", name, "id", "-u").strip() == "10001"

        token = httpx.post(
            f"{url}/api/v1/auth/token",
            json={"name": "admin", "password": PASSWORD, "token_name": "test"},
            timeout=30,
        ).json()["token"]
        src = tmp_path / "src"
        for i in range(12):
            (src / f"part{i % 3}").mkdir(parents=True, exist_ok=True)
            (src / f"part{i % 3}" / f"f{i}.bin").write_bytes(os.urandom(1000 + i))
        env = dict(
            os.environ,
            LAKECACHE_HOME=str(tmp_path / "client-home"),
            LAKECACHE_SERVER=url,
            LAKECACHE_TOKEN=token,
        )
        for key in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT"):
            env.pop(key, None)
        cli = [sys.executable, "-m", "lakecache"]

        def run(*args: str) -> str:
            done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            return done.stdout

        run("data", "init", "xray")
        run("data", "commit", "xray", str(src), "-m", "through the image", "-q")
        run("cache", "add", "xray@latest", "--site", "local", "--no-wait", "-q")
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        while True:
            caches = httpx.get(f"{url}/api/v1/caches", headers=headers, timeout=10).json()
            items = caches["items"] if isinstance(caches, dict) else caches
            if items and items[0]["state"] in ("ready", "failed"):
                break
            assert time.monotonic() < deadline, f"the fill never ended: {items}"
            time.sleep(0.3)
        cache = items[0]
        assert cache["state"] == "ready", cache["error"]
        assert cache["files"] == 12
        # The files are on the volume inside the container, written by the non-root user.
        listed = podman_run(
            podman,
            "exec",
            name,
            "sh",
            "-c",
            "find /var/lib/lakecache/cache -name 'f*.bin' -user 10001 | wc -l",
        )
        assert int(listed.strip()) == 12
        # The lake is the bucket on SeaweedFS, written by the server in the container.
        assert "through the image" in run("data", "log", "xray")
    finally:
        podman_run(podman, "rm", "-f", "-t", "2", name, check=False)
