"""A real server for the tests: uvicorn on 127.0.0.1 and a free port, in a thread.

``world`` is one server per test module with a small team and two datasets:

=======  =======================  ==========================
name     who                      role on ``xray``
=======  =======================  ==========================
admin    org admin                (every role, everywhere)
alice    user                     admin
wendy    user                     writer
rita     user                     reader
nora     user                     none (must not see it)
=======  =======================  ==========================

``hidden`` is a second dataset nobody but org admins can see.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from helpers import write

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.server import ControlPlane, ServerConfig, create_app
from lakecache.settings import Settings

ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "user-password-1"
TEAM = {"alice": "admin", "wendy": "writer", "rita": "reader", "nora": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread, until :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, log_level="info", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def png_bytes(color: tuple[int, int, int] = (200, 20, 20)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def make_source(root: Path, many: int = 250) -> Path:
    write(root, "images/a.png", png_bytes(), age=10)
    write(root, "images/b.jpg", jpeg_bytes(), age=10)
    write(root, "docs/readme.txt", b"hello\n", age=10)
    write(root, "docs/evil.html", b"<script>alert(1)</script>", age=10)
    write(root, "docs/logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", age=10)
    write(root, "empty.bin", b"", age=10)
    for i in range(many):
        write(root, f"many/f{i:04d}.bin", f"file {i}".encode() * 10, age=10)
    for i in range(3):
        write(root, f"many/sub{i}/x.bin", b"x" * (i + 1), age=10)
    return root


@dataclass
class World:
    url: str
    settings: Settings
    plane: ControlPlane
    server: LiveServer
    tokens: dict[str, str] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def call(self, who: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        with self.client(who) as c:
            return c.request(method, path, **kw)


def build_world(home: Path, src: Path, *, settings: Settings | None = None, **config: Any) -> World:
    settings = settings or Settings(home=home, workers=4, author="tester")
    hub = Hub(settings)
    try:
        ds = Dataset.create("xray", hub=hub, description="Chest X-rays")
        make_source(src)
        v1 = ds.commit(src, "first import")
        ds.tag("v1")
        write(src, "images/a.png", png_bytes((1, 2, 3)), age=5)
        write(src, "docs/new.txt", b"new file\n", age=5)
        (src / "docs" / "readme.txt").unlink()
        v2 = ds.commit(src, "second")
        hidden = Dataset.create("hidden", hub=hub, description="Nobody may know")
        hidden.commit(src, "secret stuff")
        ids = {"v1": ds.resolve("v1"), "v2": ds.resolve("latest")}
        assert v1.parents == () and ids["v1"] in v2.parents
    finally:
        hub.close()
    cfg = ServerConfig(admin_password=ADMIN_PASSWORD, agent_interval=0.05, **config)
    plane = ControlPlane.open(settings, cfg)
    accounts = plane.accounts
    now = plane.clock.now()
    world = World("", settings, plane, server=None, commits=ids)  # type: ignore[arg-type]
    for name, role in TEAM.items():
        accounts.create_user(name, PASSWORD, now=now)
        if role:
            accounts.set_member("xray", name, role, now=now)
    for name in ("admin", *TEAM):
        _, world.tokens[name] = accounts.create_token(
            name, "tests", now=now, expires_at=now + timedelta(days=1)
        )
    world.server = LiveServer(create_app(settings, cfg, plane=plane))
    world.url = world.server.url
    return world


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(every)
