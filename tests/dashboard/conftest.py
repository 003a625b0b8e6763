"""A live server with two sites and a dataset of real PNGs, and headless Chromium to drive it.

``dash`` (one per session): uvicorn on 127.0.0.1 serving a catalog with

* ``chest-xray``: synthetic chest X-ray PNGs (``lakecache.synth``) in three
  class folders plus ``many/`` (451 small files, more than two pages), three
  commits (``v1``, ``v2``: 10% changed and 10% added, then one JPEG more);
* ``notes``: a small second dataset, so that search has something to leave out
  (its description, and two file names of ``chest-xray``, are markup that must
  show as text);
* sites ``onprem`` and ``cloud``, one cache volume and one compute each, both
  filled by agents inside the server;
* users ``admin`` (org admin) and ``rita`` (reader of ``chest-xray`` only).

``browser``: Chromium from the Debian package, launched by Playwright with its
executable path; the tests are skipped, saying why, where it is not installed.
Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import write
from server.live import LiveServer

from dashboard.drive import (
    ADMIN_PASSWORD,
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    DATASET,
    MANY,
    PASSWORD,
    XSS_DESCRIPTION,
    XSS_LAST,
    XSS_NAME,
    Dash,
)
from lakecache import synth
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.server import ControlPlane, ServerConfig, create_app
from lakecache.server.config import ComputeSpec, SiteSpec, VolumeSpec
from lakecache.settings import Settings


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 110, 190)).save(buf, format="JPEG")
    return buf.getvalue()


#: A labels file as a "fix labels" commit touches it; one cell is markup, shown as text.
LABELS_CSV = (
    b"Image Index,Finding Labels,Patient ID\n"
    b"00000001_000.png,Cardiomegaly|Emphysema,1\n"
    b"00000002_000.png,No Finding,2\n"
    b'00000003_000.png,"<script>alert(1)</script>",3\n'
)


def build_dash(base: Path) -> Dash:
    settings = Settings(home=base / "home", workers=4, author="tester")
    src = base / "src"
    synth.generate(src, 36, classes=3, median_size=4000, sigma=0.2, seed=3)
    for i in range(MANY):
        write(src, f"many/item{i:04d}.txt", f"item {i}\n".encode(), age=10)
    # Names that are markup: shown as text by the template (odd/) and by the script (the
    # last page of many/, reached with "Load more").
    write(src, f"odd/{XSS_NAME}", b"odd\n", age=10)
    write(src, f"many/{XSS_LAST}", b"odd\n", age=10)
    hub = Hub(settings)
    try:
        ds = Dataset.create(DATASET, hub=hub, description="Synthetic chest X-rays (PNG)")
        ds.commit(src, "first import")
        ds.tag("v1")
        synth.mutate(src, fraction_changed=0.1, fraction_added=0.1, seed=4)
        ds.commit(src, "relabel 10%, add 10%")
        ds.tag("v2")
        write(src, "scans/photo.jpg", _jpeg(), age=10)
        ds.commit(src, "add a JPEG scan")
        notes_src = base / "notes"
        write(notes_src, "readme.txt", b"just notes\n", age=10)
        write(notes_src, "labels.csv", LABELS_CSV, age=10)
        Dataset.create("notes", hub=hub, description=XSS_DESCRIPTION).commit(notes_src, "notes")
        commits = {"v1": ds.resolve("v1"), "v2": ds.resolve("v2"), "latest": ds.resolve("latest")}
    finally:
        hub.close()
    sites = tuple(
        SiteSpec(
            name,
            description,
            volumes=(VolumeSpec(f"{name}-nvme", str(base / f"cache-{name}"), 50 * 10**6, 3600),),
            compute=(ComputeSpec(f"{name}-{backend}", backend),),
            agent=True,
        )
        for name, description, backend in (
            ("onprem", "GPU cluster in the basement", "local"),
            ("cloud", "eu-west region", "ray"),
        )
    )
    config = ServerConfig(admin_password=ADMIN_PASSWORD, agent_interval=0.05, sites=sites)
    plane = ControlPlane.open(settings, config)
    now = plane.clock.now()
    plane.accounts.create_user("rita", PASSWORD, now=now)
    plane.accounts.set_member(DATASET, "rita", "reader", now=now)
    server = LiveServer(create_app(settings, config, plane=plane))
    return Dash(server.url, plane, server, commits)


@pytest.fixture(scope="package")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    d = build_dash(tmp_path_factory.mktemp("dashboard"))
    yield d
    d.server.stop()
    d.plane.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install the Debian package (apt-get install -y chromium)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def console() -> list[str]:
    """Script errors and console errors of the test's page (a test expecting some clears it)."""
    return []


@pytest.fixture
def page(browser: Any, dash: Dash, console: list[str]) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 x 900; the test fails on any script
    error or console error (a CSP violation, a failed request) the page logs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=dash.url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: console.append(f"{pg.url}: {exc}"))
    pg.on(
        "console",
        lambda msg: console.append(f"{pg.url}: {msg.text}") if msg.type == "error" else None,
    )
    yield pg
    context.close()
    assert not console, f"the page logged errors: {console}"
