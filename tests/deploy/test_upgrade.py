"""A rolling upgrade: the catalog is migrated (once, under the lock) while a server of the
previous release keeps serving reads from it, and a server of this release joins it.

The previous release is this repository's code from before the newest migration was
added (taken with ``git archive``), run from its own source folder on the same virtualenv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lakecache.catalog.db import Catalog, _current_revision, _newest_shipped_revision
from lakecache.services.replicas import PASSWORD, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
VERSIONS = "src/lakecache/catalog/migrations/versions"


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(
            f"git {' '.join(args)} failed: {done.stderr.strip()}. The upgrade test takes the "
            "previous release from this repository's history: run it in a full git clone."
        )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source folder of the code from just before the newest migration was added."""
    head = _newest_shipped_revision()
    newest = sorted((REPO / VERSIONS).glob(f"{head}_*.py"))[0]
    added = _git("log", "--diff-filter=A", "--format=%H", "-1", "--", str(newest))
    folder = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", f"{added}^", "src/lakecache"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, check=True)
    assert archive.wait() == 0
    return folder / "src"


def _old_env(old_src: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    # Before the editable install's path entry: the old package is the one imported.
    env["PYTHONPATH"] = str(old_src)
    env["LAKECACHE_HOME"] = str(home)
    env["LAKECACHE_ADMIN_PASSWORD"] = PASSWORD
    return env


def _old_python(old_src: Path, home: Path, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=_old_env(old_src, home), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def old_server(
    previous_release: Path, pg_url: str, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[lakecache]\ncatalog_url = "{pg_url}"\nlake_url = "{tmp_path / "lake"}"\n'
        "[server]\nagents = false\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lakecache", "server", "--config", str(config), "--port", str(port)],
        env=_old_env(previous_release, tmp_path / "old-home"),
        stdout=open(tmp_path / "old.log", "wb"),  # noqa: SIM115 - the process keeps it
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the old server did not start:\n{(tmp_path / 'old.log').read_text()}")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_migrating_while_the_previous_release_serves_reads(
    previous_release: Path,
    old_server: tuple[str, subprocess.Popen[bytes]],
    pg_url: str,
    tmp_path: Path,
) -> None:
    old_url, old_process = old_server
    old_head = _old_python(
        previous_release,
        tmp_path / "old-home",
        "import lakecache.catalog.db as d; print(d._newest_shipped_revision(), d.__file__)",
    )
    revision, where = old_head.split()
    assert where.startswith(str(previous_release)), "the old code was not the one imported"
    assert revision < _newest_shipped_revision(), "no migration between the two releases"
    # Data written by the previous release, directly (as its CLI would).
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for i in range(20):
        (src / "a" / f"f{i}.txt").write_text(f"file {i}\n")
    _old_python(
        previous_release,
        tmp_path / "old-home",
        "from lakecache import Dataset, Settings\n"
        f"s = Settings(home={str(tmp_path / 'writer')!r}, catalog_url={pg_url!r}, "
        f"lake_url={str(tmp_path / 'lake')!r}, author='old')\n"
        f"Dataset.create('xray', settings=s).commit({str(src)!r}, 'old release')\n",
    )
    token = httpx.post(
        f"{old_url}/api/v1/auth/token",
        json={"name": "admin", "password": PASSWORD, "token_name": "t"},
        timeout=30,
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    paths = ["/api/v1/datasets", "/api/v1/datasets/xray/commits/latest/tree/a", "/healthz"]
    stop = threading.Event()
    results: list[tuple[str, int]] = []

    def read() -> None:
        with httpx.Client(base_url=old_url, headers=headers, timeout=30) as client:
            i = 0
            while not stop.is_set():
                path = paths[i % len(paths)]
                try:
                    results.append((path, client.get(path).status_code))
                except httpx.HTTPError as exc:
                    results.append((f"{path}: {exc!r}", 0))
                i += 1
                time.sleep(0.02)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1)
        assert _current_revision_of(pg_url) == revision
        # The new release's first replica migrates (under the advisory lock), while the
        # old one serves.
        new = Catalog.open(pg_url)
        new.close()
        assert _current_revision_of(pg_url) == _newest_shipped_revision()
        before = len(results)
        time.sleep(2)
        assert len(results) > before + 10, "the old server stopped answering"
    finally:
        stop.set()
        reader.join(timeout=30)
    failures = [r for r in results if r[1] != 200]
    assert failures == [], failures[:5]
    assert old_process.poll() is None
    listing = httpx.get(f"{old_url}/api/v1/datasets/xray/commits/latest/tree/a", headers=headers)
    assert listing.status_code == 200 and len(listing.json()["items"]) == 20
    # A replica of this release joins the old one on the migrated catalog: same answers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    port = free_port()
    new_server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lakecache",
            "server",
            "--config",
            str(tmp_path / "server.toml"),
            "--port",
            str(port),
        ],
        env={**env, "LAKECACHE_HOME": str(tmp_path / "new-home")},
        stdout=open(tmp_path / "new.log", "wb"),  # noqa: SIM115 - the process keeps it
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                got = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/datasets/xray/commits/latest/tree/a",
                    headers=headers,
                    timeout=5,
                )
                if got.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert new_server.poll() is None and time.monotonic() < deadline, (
                tmp_path / "new.log"
            ).read_text()
            time.sleep(0.2)
        assert got.json()["items"] == listing.json()["items"]
    finally:
        new_server.terminate()
        new_server.wait(timeout=30)


def _current_revision_of(url: str) -> str | None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return _current_revision(engine)
    finally:
        engine.dispose()
