"""One settings object, built once at the edge and passed in.

Nothing in lakecache reads the environment at import time. The CLI and the SDK
call :meth:`Settings.load` once; tests build a :class:`Settings` directly.

Sources, later wins: defaults, ``$LAKECACHE_HOME/config.toml``, environment
variables (``LAKECACHE_*``; S3 credentials also from the usual ``AWS_*``
variables and profiles, which boto3 reads itself).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lakecache.errors import UserError
from lakecache.units import parse_size

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Where the lake, the catalog and the local state live, and how hard to work."""

    home: Path
    #: ``/path``, ``file:///path`` or ``s3://bucket/prefix``.
    lake_url: str = ""
    #: SQLAlchemy URL; SQLite in ``home`` by default, ``postgresql+psycopg://`` for teams.
    catalog_url: str = ""
    s3_endpoint: str | None = None
    #: The endpoint a lakecache server's clients reach S3 at, where it differs from
    #: :attr:`s3_endpoint` (the server's own, often internal, address): presigned URLs name it.
    s3_public_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_profile: str | None = None
    #: Parallel transfers and hashing threads.
    workers: int = 16
    #: Files up to this size go into packs; larger ones are stored alone.
    pack_threshold: int = 4 * MiB
    #: Target size of one pack object.
    pack_target: int = 32 * MiB
    #: Size of one multipart part and of one streamed read.
    part_size: int = 16 * MiB
    #: Attempts for one lake request before giving up (with exponential backoff).
    lake_retries: int = 5
    lake_timeout: float = 30.0
    #: Named in commits made directly; through a server, commits are by the logged-in user.
    author: str = ""
    #: A lakecache server to work through (``http://host:port``): the lake and the
    #: catalog are then the server's, reached with :attr:`token`; no lake credentials here.
    server_url: str | None = None
    #: API token for :attr:`server_url` (else the one ``lakecache login`` saved).
    token: str | None = field(default=None, repr=False)
    #: Seconds without a heartbeat after which another worker takes over a fill (and
    #: without progress, an eviction). Heartbeats come every 5 s: keep this at 15 or
    #: more in production; tests lower it so a paused filler goes stale quickly.
    fill_stale_after: float = 15.0
    #: The most bytes a server takes in one upload of a job attempt's outputs (the tar
    #: of its outputs folder) or of one run artifact (``10GiB`` and the like are read
    #: too): a larger one is refused (HTTP 413) before or while it arrives, nothing of it
    #: is kept, and a job whose outputs were refused fails saying why. The server's home
    #: folder must also have room for it (twice its size for job outputs).
    max_output_bytes: int = 10 * 1024 * MiB

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser()
        object.__setattr__(self, "home", home)
        if not self.lake_url:
            object.__setattr__(self, "lake_url", str(home / "lake"))
        if not self.catalog_url:
            object.__setattr__(self, "catalog_url", f"sqlite:///{home / 'catalog.db'}")
        if not self.author:
            object.__setattr__(self, "author", _default_author())
        if self.workers < 1:
            raise UserError(f"workers must be at least 1, not {self.workers}")
        if self.max_output_bytes < 1:
            raise UserError(
                f"max_output_bytes must be at least 1, not {self.max_output_bytes}",
                hint="Give the most bytes of outputs a job may send, e.g. 10737418240 (10 GiB).",
            )
        if not self.fill_stale_after > 0:
            raise UserError(
                f"fill_stale_after must be positive, not {self.fill_stale_after}",
                hint="Give the seconds without a heartbeat before a fill is taken over (15).",
            )

    @property
    def state_dir(self) -> Path:
        """Local, rebuildable state: the stat cache and manifest indexes."""
        return self.home / "state"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``config.toml`` and the environment (default ``os.environ``)."""
        env = os.environ if env is None else env
        home = Path(env.get("LAKECACHE_HOME") or Path.home() / ".lakecache").expanduser()
        values: dict[str, Any] = {}
        config = home / "config.toml"
        if config.is_file():
            try:
                data = tomllib.loads(config.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise UserError(
                    f"{config} is not valid TOML: {exc}", hint="Fix or remove the file."
                ) from exc
            known = {f.name for f in fields(cls)}
            for key, value in data.get("lakecache", data).items():
                if key in known:
                    values[key] = value
        for name, key in _ENV.items():
            if env.get(name):
                values[key] = env[name]
        for key in (
            "workers",
            "pack_threshold",
            "pack_target",
            "part_size",
            "lake_retries",
        ):
            if key in values:
                values[key] = int(values[key])
        if "max_output_bytes" in values:
            values["max_output_bytes"] = parse_size(values["max_output_bytes"], "max_output_bytes")
        if "lake_timeout" in values:
            values["lake_timeout"] = float(values["lake_timeout"])
        values.update(overrides)
        values.pop("home", None)
        return cls(home=home, **values)


_ENV = {
    "LAKECACHE_LAKE": "lake_url",
    "LAKECACHE_CATALOG": "catalog_url",
    "LAKECACHE_S3_ENDPOINT": "s3_endpoint",
    "LAKECACHE_S3_PUBLIC_ENDPOINT": "s3_public_endpoint",
    "LAKECACHE_S3_REGION": "s3_region",
    "LAKECACHE_S3_ACCESS_KEY": "s3_access_key",
    "LAKECACHE_S3_SECRET_KEY": "s3_secret_key",
    "LAKECACHE_S3_PROFILE": "s3_profile",
    "LAKECACHE_WORKERS": "workers",
    "LAKECACHE_S3_RETRIES": "lake_retries",
    "LAKECACHE_AUTHOR": "author",
    "LAKECACHE_SERVER": "server_url",
    "LAKECACHE_TOKEN": "token",
    "LAKECACHE_MAX_OUTPUT_BYTES": "max_output_bytes",
}


def _default_author() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
