"""How a control-plane server is set up: address, sessions, limits, and the sites it serves.

Built once at the edge (the ``lakecache server`` command, or a test) and passed
in; nothing here reads the environment by itself. A TOML file can describe a
whole team setup::

    [lakecache]                 # any lakecache.Settings field
    lake_url = "s3://datasets/lake"
    catalog_url = "postgresql+psycopg://lakecache@db:5432/lakecache"
    s3_endpoint = "https://s3.example.internal"
    s3_public_endpoint = "https://s3.example.com"   # what clients reach; URLs are signed for it
    s3_access_key = "..."
    s3_secret_key = "..."

    [server]
    host = "0.0.0.0"
    port = 8765
    cookie_secure = true        # behind TLS
    session_hours = 168
    upload_expiry = "1d"        # drop uploads a killed commit left open after this long
    lake_gc = false             # collect the lake's garbage in each maintenance pass
    lake_gc_grace = "1d"        # ... never deleting what is younger than this
    metrics_public = false      # /metrics for org admins and the metrics_token only
    metrics_token = "..."       # what Prometheus sends as a Bearer token (or
                                # LAKECACHE_METRICS_TOKEN in the environment)
    login_max_failures_per_account = 20   # from any addresses, within:
    login_account_window = "15m"          # the most an account's logins stay locked

    [[sites]]
    name = "onprem"
    description = "GPU cluster"
    agent = true                # run this site's agent inside the server
    volumes = [{ name = "onprem-nfs", root = "/mnt/cache", capacity = "2TB", ttl = "1d" }]
    compute = [{ name = "onprem-local", backend = "local" }]

Without ``[[sites]]`` on a catalog that has no site yet, the server sets up the
embedded default: one site ``local`` with one cache volume under the lakecache
home and local-process compute, filled by an agent inside the server.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from lakecache.catalog.accounts.throttle import LoginLimit
from lakecache.errors import UserError
from lakecache.settings import Settings
from lakecache.units import parse_duration, parse_size

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_SITE = "local"


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    root: str
    capacity: int
    ttl_seconds: int = 86400


@dataclass(frozen=True)
class ComputeSpec:
    name: str
    backend: str = "local"
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteSpec:
    """A site the server makes sure exists at start (existing ones are left as they are)."""

    name: str
    description: str = ""
    volumes: tuple[VolumeSpec, ...] = ()
    compute: tuple[ComputeSpec, ...] = ()
    #: Run this site's agent (fills, evictions) in a thread of the server.
    agent: bool = False


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Sites to create at start; empty: the embedded default on a catalog with no site.
    sites: tuple[SiteSpec, ...] = ()
    #: Start an agent thread for the embedded default site (and for sites with agent=true).
    agents: bool = True
    #: Mark the session cookie Secure (set when the server is reached over HTTPS).
    cookie_secure: bool = False
    session_ttl: timedelta = timedelta(days=7)
    #: Failed logins per (user, address) inside the window before 429.
    login_max_failures: int = 5
    #: Failed logins per address (any user names) inside the window before 429.
    login_max_failures_per_ip: int = 30
    login_window: timedelta = timedelta(minutes=1)
    #: Failed logins for one user name from any addresses inside ``login_account_window``
    #: before that name's password logins get 429 (many guessers at one account).
    login_max_failures_per_account: int = 20
    #: Also the longest such a lock lasts: refused attempts are not counted.
    login_account_window: timedelta = timedelta(minutes=15)
    #: Anyone may read /metrics; False: org admins and the bearer of ``metrics_token`` only.
    metrics_public: bool = True
    #: A secret a scraper sends as ``Authorization: Bearer ...`` (used when not public).
    metrics_token: str | None = field(default=None, repr=False)
    default_page_size: int = 100
    max_page_size: int = 1000
    #: Password for the admin created on first start; None: a random one, printed once.
    admin_password: str | None = field(default=None, repr=False)
    admin_name: str = "admin"
    #: Seconds between agent passes of the in-process agents.
    agent_interval: float = 1.0
    #: Uploads left open this long (a commit killed midway) are dropped from the lake.
    upload_expiry: timedelta = timedelta(days=1)
    #: How often the server looks for them.
    maintenance_interval: timedelta = timedelta(hours=1)
    #: Opt-in: collect the lake's garbage in each maintenance pass (see lakecache.data.gc).
    lake_gc: bool = False
    #: Its grace period: nothing younger, nor condemned less long ago, is deleted.
    lake_gc_grace: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise UserError(f"port {self.port} is out of range", hint="Use 1 to 65535.")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise UserError("default_page_size must be between 1 and max_page_size")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise UserError(
                "metrics_token needs at least 16 characters",
                hint="Generate one: python -c 'import secrets; print(secrets.token_urlsafe())'",
            )
        for name in ("login_max_failures", "login_max_failures_per_ip"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")
        if self.login_max_failures_per_account < 1:
            raise UserError("login_max_failures_per_account must be at least 1")

    def login_limits(self) -> tuple[LoginLimit, ...]:
        """The limits on failed password logins, in the order they are checked."""
        return (
            LoginLimit("name at address", self.login_max_failures, self.login_window),
            LoginLimit("address", self.login_max_failures_per_ip, self.login_window),
            LoginLimit("name", self.login_max_failures_per_account, self.login_account_window),
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def load_config(
    path: Path | None, env: Mapping[str, str], **overrides: Any
) -> tuple[Settings, ServerConfig]:
    """Settings and server config from ``path`` (TOML, optional), ``env`` and ``overrides``.

    ``env`` is the process environment, handed in by the caller: LAKECACHE_* as
    for every command, plus LAKECACHE_ADMIN_PASSWORD for the first admin and
    LAKECACHE_METRICS_TOKEN for the scraper of /metrics.
    Precedence, later wins: defaults, ``$LAKECACHE_HOME/config.toml``, the
    environment, the file's ``[lakecache]`` table, ``overrides`` (host, port, ...).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(
                f"no config file {path}", hint="Check the path given to --config."
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path} is not valid TOML: {exc}", hint="Fix the file.") from None
    lake = dict(data.get("lakecache", {}))
    known = {f.name for f in fields(Settings)}
    unknown = set(lake) - known
    if unknown:
        raise UserError(
            f"unknown [lakecache] key(s) in {path}: {', '.join(sorted(unknown))}",
            hint=f"Known keys: {', '.join(sorted(known))}.",
        )
    home = lake.pop("home", None)
    if home is not None:
        env = {**env, "LAKECACHE_HOME": str(home)}
    settings = Settings.load(env, **lake)

    server = dict(data.get("server", {}))
    kwargs: dict[str, Any] = {}
    simple = {
        "host": str,
        "port": int,
        "agents": bool,
        "cookie_secure": bool,
        "login_max_failures": int,
        "login_max_failures_per_ip": int,
        "login_max_failures_per_account": int,
        "metrics_public": bool,
        "metrics_token": str,
        "default_page_size": int,
        "max_page_size": int,
        "admin_name": str,
        "agent_interval": float,
        "lake_gc": bool,
    }
    for key, kind in simple.items():
        if key in server:
            kwargs[key] = kind(server.pop(key))
    if "session_hours" in server:
        kwargs["session_ttl"] = timedelta(hours=float(server.pop("session_hours")))
    for key in (
        "login_window",
        "login_account_window",
        "upload_expiry",
        "maintenance_interval",
        "lake_gc_grace",
    ):
        if key in server:
            kwargs[key] = timedelta(seconds=parse_duration(server.pop(key), key))
    if server:
        raise UserError(f"unknown [server] key(s) in {path}: {', '.join(sorted(server))}")
    kwargs["sites"] = tuple(_site(s) for s in data.get("sites", []))
    if env.get("LAKECACHE_ADMIN_PASSWORD"):
        kwargs["admin_password"] = env["LAKECACHE_ADMIN_PASSWORD"]
    if env.get("LAKECACHE_METRICS_TOKEN"):
        kwargs["metrics_token"] = env["LAKECACHE_METRICS_TOKEN"]
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return settings, ServerConfig(**kwargs)


def _site(raw: Mapping[str, Any]) -> SiteSpec:
    if "name" not in raw:
        raise UserError("a [[sites]] entry has no name")
    name = str(raw["name"])
    volumes = tuple(
        VolumeSpec(
            name=str(v["name"]),
            root=str(Path(str(v["root"])).expanduser()),
            capacity=parse_size(v["capacity"], f"volume {v['name']} capacity"),
            ttl_seconds=parse_duration(v.get("ttl", "1d"), f"volume {v['name']} ttl"),
        )
        for v in raw.get("volumes", [])
    )
    compute = tuple(
        ComputeSpec(str(c["name"]), str(c.get("backend", "local")), dict(c.get("config", {})))
        for c in raw.get("compute", [])
    )
    return SiteSpec(
        name, str(raw.get("description", "")), volumes, compute, bool(raw.get("agent", False))
    )
