"""A config file points the server at PostgreSQL, an S3 lake and several sites."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from lakecache.errors import UserError
from lakecache.lake.s3 import S3Lake
from lakecache.server import ControlPlane, ServerConfig, load_config
from lakecache.server.app import path_problem
from lakecache.settings import Settings


def test_a_team_config_with_postgres_s3_and_two_sites(
    tmp_path: Path, pg_url: str, s3_settings: Settings
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f"""
[lakecache]
home = "{tmp_path / "home"}"
catalog_url = "{pg_url}"
lake_url = "{s3_settings.lake_url}"
s3_endpoint = "{s3_settings.s3_endpoint}"
s3_public_endpoint = "https://s3.example.com"
s3_access_key = "{s3_settings.s3_access_key}"
s3_secret_key = "{s3_settings.s3_secret_key}"

[server]
host = "127.0.0.1"
port = 9999
session_hours = 12
login_max_failures = 3

[[sites]]
name = "onprem"
description = "GPU cluster"
agent = true
volumes = [{{ name = "onprem-nfs", root = "{tmp_path / "nfs"}", capacity = "2TB", ttl = "12h" }}]
compute = [{{ name = "onprem-ray", backend = "ray" }}]

[[sites]]
name = "cloud"
volumes = [{{ name = "cloud-pvc", root = "/mnt/not-here", capacity = "500GiB" }}]
""")
    settings, server = load_config(config, {"LAKECACHE_ADMIN_PASSWORD": "from-env-123"}, port=8000)
    assert settings.catalog_url == pg_url and settings.lake_url.startswith("s3://")
    assert settings.home == tmp_path / "home"
    assert settings.s3_public_endpoint == "https://s3.example.com"
    assert server.port == 8000 and server.session_ttl == timedelta(hours=12)
    assert server.login_max_failures == 3 and server.admin_password == "from-env-123"
    assert "from-env-123" not in repr(server) and s3_settings.s3_secret_key not in repr(settings)
    plane = ControlPlane.open(settings, server)
    try:
        lake = plane.hub.lake
        assert isinstance(lake, S3Lake) and lake.endpoint == s3_settings.s3_endpoint
        assert lake.presign("get_object", "k", 60).startswith("https://s3.example.com/")
        topo = plane.topology
        assert [s.name for s in topo.list_sites()] == ["cloud", "onprem"]
        vols = {v.name: v for v in topo.list_volumes()}
        assert vols["onprem-nfs"].capacity == 2 * 10**12 and vols["onprem-nfs"].ttl_seconds == 43200
        assert vols["cloud-pvc"].capacity == 500 * 2**30
        assert not Path("/mnt/not-here").exists()  # another site's mount is not made here
        assert [c.backend for c in topo.list_compute()] == ["ray"]
        assert plane.accounts.check_password("admin", "from-env-123") is not None
        assert plane.bootstrap.admin_password is None  # it came from the environment
        plane.start_agents()
        assert plane.agent_sites == ["onprem"]
    finally:
        plane.close()
    again = ControlPlane.open(settings, server)  # a restart changes nothing
    try:
        assert len(again.topology.list_volumes()) == 2 and again.bootstrap.admin_name is None
    finally:
        again.close()


@pytest.mark.parametrize(
    "text",
    [
        "[server]\nbogus = 1\n",
        "[lakecache]\nnope = 1\n",
        "not toml [",
        "[[sites]]\ndescription='x'\n",
        "[[sites]]\nname='a'\nvolumes=[{name='v', root='/x', capacity='lots'}]\n",
    ],
)
def test_bad_config_files_are_user_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UserError):
        load_config(path, {"LAKECACHE_HOME": str(tmp_path)})
    with pytest.raises(UserError):
        load_config(tmp_path / "missing.toml", {})


def test_the_public_s3_endpoint_comes_from_the_environment_else_is_the_endpoint(
    tmp_path: Path,
) -> None:
    env = {"LAKECACHE_HOME": str(tmp_path), "LAKECACHE_S3_ENDPOINT": "http://10.0.0.5:8333"}
    settings, _ = load_config(None, env)
    assert settings.s3_public_endpoint is None
    lake = S3Lake("b", endpoint=settings.s3_endpoint, public_endpoint=None)
    assert lake.public_endpoint == lake.endpoint == "http://10.0.0.5:8333"
    env["LAKECACHE_S3_PUBLIC_ENDPOINT"] = "https://s3.example.com"
    settings, _ = load_config(None, env)
    assert settings.s3_public_endpoint == "https://s3.example.com"


def test_server_config_checks_itself() -> None:
    with pytest.raises(UserError):
        ServerConfig(port=70000)
    with pytest.raises(UserError):
        ServerConfig(default_page_size=5000)
    assert ServerConfig(host="::1", port=1).url == "http://[::1]:1"


@pytest.mark.parametrize(
    ("raw", "path", "refused"),
    [
        (b"/api/v1/x/files/a/b.png", "/api/v1/x/files/a/b.png", False),
        (b"/api/v1/x/files/a%20b.png", "/api/v1/x/files/a b.png", False),
        (b"/api/v1/x/files/a%2Fb", "/api/v1/x/files/a/b", True),
        (b"/api/v1/x/files/%2E%2E/b", "/api/v1/x/files/../b", True),
        (b"/api/v1/x/files/../b", "/api/v1/x/files/../b", True),
        (b"/api/v1/x/files/a%5cb", "/api/v1/x/files/a\\b", True),
        (b"/api/v1/x//b", "/api/v1/x//b", True),
        (b"/api/v1/x/", "/api/v1/x/", False),
    ],
)
def test_path_guard(raw: bytes, path: str, refused: bool) -> None:
    assert (path_problem(raw, path) is not None) is refused


def test_upload_expiry_and_maintenance_interval_are_read(tmp_path: Path) -> None:
    cfg = tmp_path / "server.toml"
    cfg.write_text('[server]\nupload_expiry = "12h"\nmaintenance_interval = "10m"\n')
    _, config = load_config(cfg, env={"LAKECACHE_HOME": str(tmp_path)})
    assert config.upload_expiry == timedelta(hours=12)
    assert config.maintenance_interval == timedelta(minutes=10)


def test_metrics_access_and_the_account_login_lock_are_settings(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        f"""
[lakecache]
home = "{tmp_path / "home"}"

[server]
metrics_public = false
login_max_failures_per_account = 12
login_account_window = "10m"
"""
    )
    token = "prometheus-" + "t" * 20
    _, server = load_config(path, {"LAKECACHE_METRICS_TOKEN": token})
    assert server.metrics_public is False and server.metrics_token == token
    assert token not in repr(server)  # a secret, like the admin's password
    assert server.login_max_failures_per_account == 12
    assert server.login_account_window == timedelta(minutes=10)
    assert [(limit.scope, limit.failures, limit.window) for limit in server.login_limits()] == [
        ("name at address", 5, timedelta(minutes=1)),
        ("address", 30, timedelta(minutes=1)),
        ("name", 12, timedelta(minutes=10)),
    ]
    # The defaults: /metrics open as before, the account lock at 20 failures in 15 minutes.
    _, default = load_config(None, {"LAKECACHE_HOME": str(tmp_path)})
    assert default.metrics_public is True and default.metrics_token is None
    assert default.login_limits()[-1].failures == 20
    with pytest.raises(UserError, match="16 characters"):
        ServerConfig(metrics_token="short")
    with pytest.raises(UserError, match="at least 1"):
        ServerConfig(login_max_failures_per_account=0)
