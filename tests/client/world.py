"""Servers for the client tests, on a local-folder lake and on a real S3 lake.

``lake_world`` runs every test that takes it twice: once against a server whose
lake is a folder (the server streams the bytes) and once against one whose
lake is a bucket on the session's SeaweedFS (the client moves the bytes itself,
with presigned URLs). The team is :mod:`server.live`'s; ``other`` is one more
dataset, with its own pack, that only its owner ``olga`` may read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from helpers import make_files
from server.live import PASSWORD, World, build_world

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.lake.objects import pack_key
from lakecache.settings import Settings

MiB = 1 << 20


@dataclass
class LakeWorld:
    """A running server, how its lake is reached, and what the tests need to know of it."""

    world: World
    mode: str  # "local" or "s3"
    #: The lake's credentials (S3 only): must never reach a client.
    secrets: list[str] = field(default_factory=list)
    #: The pack holding ``other``'s files: outside xray's scope.
    other_pack: str = ""

    @property
    def url(self) -> str:
        return self.world.url

    def settings(self, who: str, home: Path, **kw: Any) -> Settings:
        """A client's settings: the server and a token, no lake and no catalog of its own."""
        return Settings(
            home=home,
            server_url=self.url,
            token=self.world.tokens[who],
            workers=4,
            **kw,
        )

    def hub(self, who: str, home: Path, **kw: Any) -> Hub:
        return Hub(self.settings(who, home, **kw))

    def call(self, who: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.world.call(who, method, path, **kw)


def make_lake_world(base: Path, settings: Settings, mode: str, secrets: list[str]) -> LakeWorld:
    world = build_world(base / "home", base / "src", settings=settings)
    plane = world.plane
    now = plane.clock.now()
    plane.accounts.create_user("olga", PASSWORD, now=now)
    _, world.tokens["olga"] = plane.accounts.create_token("olga", "t", now=now, expires_at=None)
    plane.accounts.create_owned_dataset("other", "olga", "not xray's", now=now)
    other = Dataset("other", hub=plane.hub)
    other.commit(make_files(base / "other-src", n=5, size=3000, seed=7), "olga's own")
    entry = other.files()[0]
    loc = plane.hub.catalog.locate_blobs([entry.digest])[entry.digest]
    assert loc.pack_id is not None
    return LakeWorld(world, mode, secrets, pack_key(loc.pack_id))


class Recorder:
    """Everything the client received: bodies and headers from the server and from S3.

    Installed on httpx's and urllib3's send paths, the two ways the client talks.
    Streamed bodies (file bytes) are left out; their headers are kept.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.sent_urls: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Recorder:
        send = httpx.Client.send
        urlopen = urllib3.PoolManager.urlopen

        def recording_send(client: httpx.Client, request: httpx.Request, **kw: Any) -> Any:
            r = send(client, request, **kw)
            self.sent_urls.append(str(request.url))
            self.received.append(
                str(r.url) + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            )
            if not kw.get("stream"):
                self.received.append(r.text)
            return r

        def recording_urlopen(pool: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
            r = urlopen(pool, method, url, *args, **kw)
            self.sent_urls.append(url)
            self.received.append("\n".join(f"{k}: {v}" for k, v in r.headers.items()))
            if kw.get("preload_content", True):
                self.received.append(r.data.decode("latin-1"))
            return r

        monkeypatch.setattr(httpx.Client, "send", recording_send)
        monkeypatch.setattr(urllib3.PoolManager, "urlopen", recording_urlopen)
        return self
