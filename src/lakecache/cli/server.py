"""``lakecache server``: the control plane (REST API, later the dashboard) on one port."""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
from pathlib import Path

import click


@click.command("server")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8765; 0 picks a free one).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file: catalog, lake, sites, server settings.",
)
@click.option("--no-agent", is_flag=True, help="Do not run site agents inside the server.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def server(
    host: str | None, port: int | None, config_path: Path | None, no_agent: bool, log_level: str
) -> None:
    """Run the lakecache server: REST API at /api/v1, health at /healthz, metrics at /metrics.

    \b
    Embedded default: the SQLite catalog and lake folder of LAKECACHE_HOME, one
    site 'local' with a cache volume in LAKECACHE_HOME/cache, filled by an agent
    inside the server. On first start it creates the org admin 'admin' with the
    password in LAKECACHE_ADMIN_PASSWORD, or a random one printed once.
    """
    import uvicorn

    from lakecache.server import ControlPlane, create_app, load_config, logs

    logs.configure(log_level)
    settings, config = load_config(
        config_path, os.environ, host=host, port=port, agents=False if no_agent else None
    )
    sock = _bind(config.host, config.port)
    actual = sock.getsockname()[1]
    config = dataclasses.replace(config, port=actual)
    plane = ControlPlane.open(settings, config)
    try:
        app = create_app(settings, config, plane=plane)
        _announce(plane, config.url)
        uv = uvicorn.Config(
            app,
            log_level=log_level,
            server_header=False,
            proxy_headers=True,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall requests for 100+ ms.
        gc.collect()
        gc.freeze()
        uvicorn.Server(uv).run(sockets=[sock])
    finally:
        sock.close()
        plane.close()


def _bind(host: str, port: int) -> socket.socket:
    """Bind first, so the address printed is the real one (also for --port 0)."""
    from lakecache.errors import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="Is another server running there? Choose another --port.",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _announce(plane: object, url: str) -> None:
    from lakecache.cache.presence import AGENT_SEEN_WITHIN, agent_seen_at, no_agent_note
    from lakecache.cli.output import human_duration
    from lakecache.server.runtime import ControlPlane
    from lakecache.urls import without_userinfo

    assert isinstance(plane, ControlPlane)
    boot = plane.bootstrap
    click.echo(f"lakecache server at {url}")
    click.echo(f"  catalog   {without_userinfo(plane.hub.catalog.url)}")
    click.echo(f"  dashboard {url}/")
    click.echo(f"  API       {url}/api/v1/docs")
    sites = plane.topology.list_sites()
    if not sites:
        click.echo("  sites     (none yet)")
    here = set(plane.in_process_agent_sites)
    seen = agent_seen_at(plane.topology.list_volumes())
    now = plane.clock.now()
    for i, site in enumerate(sites):
        label = "  sites    " if i == 0 else "           "
        if site.name in here:
            status = "agent in this server"
        elif site.name in seen and now - seen[site.name] <= AGENT_SEEN_WITHIN:
            status = f"agent seen {human_duration((now - seen[site.name]).total_seconds())} ago"
        else:
            status = no_agent_note(site.name)
        click.echo(f"{label} {site.name}: {status}")
    if boot.admin_name and boot.admin_password:
        click.secho(
            f"first start: created org admin '{boot.admin_name}' with password "
            f"{boot.admin_password}",
            fg="yellow",
        )
        click.echo(f"  (shown only now; change it with `lakecache user passwd {boot.admin_name}`)")
    elif boot.admin_name:
        click.echo(
            f"first start: created org admin '{boot.admin_name}' with the password "
            "in LAKECACHE_ADMIN_PASSWORD"
        )
    click.echo(f"log in:  lakecache login {url} --user {boot.admin_name or 'NAME'}")
