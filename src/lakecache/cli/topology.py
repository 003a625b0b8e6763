"""``lakecache site | volume | compute``: where the compute and the cache volumes are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lakecache.cli.common import get_caches, json_option
from lakecache.cli.output import human_bytes, human_duration, print_json, print_table
from lakecache.cli.units import Duration, Size


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


@click.group()
def site() -> None:
    """Sites: places with compute and cache volumes (an on-prem cluster, a cloud region)."""


@site.command("add")
@click.argument("name")
@click.option("--description", "-d", default="", help="One line about the site.")
def site_add(name: str, description: str) -> None:
    """Add the site NAME."""
    get_caches().topology.add_site(name, description, _now())
    click.echo(
        f"added site {name}; next: "
        f"lakecache volume add VOLUME --site {name} --root PATH --capacity SIZE"
    )


@site.command("ls")
@json_option
def site_ls(as_json: bool) -> None:
    """List sites with their volumes and compute resources."""
    topo = get_caches().topology
    vols, comp = topo.list_volumes(), topo.list_compute()
    rows = [
        {
            "name": s.name,
            "description": s.description,
            "volumes": [v.name for v in vols if v.site == s.name],
            "compute": [c.name for c in comp if c.site == s.name],
        }
        for s in topo.list_sites()
    ]
    if as_json:
        print_json(rows)
        return
    print_table(
        ["site", "volumes", "compute", "description"],
        [
            (r["name"], ", ".join(r["volumes"]), ", ".join(r["compute"]), r["description"])
            for r in rows
        ],
    )


@click.group()
def volume() -> None:
    """Cache volumes: a filesystem at a site (NFS export, local NVMe, PVC) that holds caches."""


@volume.command("add")
@click.argument("name")
@click.option("--site", "-s", required=True, help="The site whose compute mounts this volume.")
@click.option(
    "--root",
    "-r",
    required=True,
    help="Where the volume is mounted, the same path on every node of the site.",
)
@click.option(
    "--capacity", "-c", type=Size(), required=True, help="Room for caches, e.g. 500GB or 2TiB."
)
@click.option(
    "--ttl",
    type=Duration(),
    default="1d",
    show_default=True,
    help="Evict caches unused for this long.",
)
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Make ROOT on this machine if missing; --no-create where only the site mounts it.",
)
def volume_add(name: str, site: str, root: str, capacity: int, ttl: int, create: bool) -> None:
    """Add the cache volume NAME at a site.

    A machine fills caches on the volumes it mounts (where ROOT is a folder);
    the others leave the fill to the site's agent.
    """
    path = Path(root).expanduser().absolute()
    v = get_caches().topology.add_volume(name, site, str(path), capacity, ttl, _now())
    click.echo(
        f"added volume {v.name} at {v.site}: {v.root}, {human_bytes(v.capacity)}, "
        f"TTL {human_duration(v.ttl_seconds)}"
    )
    if not path.is_dir():
        if create:
            path.mkdir(parents=True, exist_ok=True)
            click.echo(f"created {path} on this machine")
        else:
            click.echo(f"{path} is not mounted on this machine; the agent of {site} fills it")


@volume.command("ls")
@click.option("--site", "-s", default=None, help="Only this site's volumes.")
@json_option
def volume_ls(site: str | None, as_json: bool) -> None:
    """Capacity, bytes committed to caches, free for caches (capacity left, bounded by the
    disk), free on disk (the filesystem), cache count."""
    svc = get_caches()
    rows: list[dict[str, Any]] = []
    for v in svc.topology.list_volumes(site):
        u = svc.usage(v)
        rows.append(
            {
                "name": v.name,
                "site": v.site,
                "root": v.root,
                "capacity": v.capacity,
                "committed": u.committed,
                "free": u.free_fs,
                "available": u.available,
                "caches": u.caches,
                "ttl_seconds": v.ttl_seconds,
                "saved_by_links": u.linked_saved,
            }
        )
    if as_json:
        print_json(rows)
        return
    print_table(
        [
            "volume",
            "site",
            "capacity",
            "committed",
            "free for caches",
            "free on disk",
            "caches",
            "ttl",
            "root",
        ],
        [
            (
                r["name"],
                r["site"],
                human_bytes(r["capacity"]),
                human_bytes(r["committed"]),
                human_bytes(r["available"]),
                human_bytes(r["free"]),
                r["caches"],
                human_duration(r["ttl_seconds"]),
                r["root"],
            )
            for r in rows
        ],
        right=["capacity", "committed", "free for caches", "free on disk", "caches"],
    )


@volume.command("set")
@click.argument("name")
@click.option("--capacity", "-c", type=Size(), default=None, help="New room for caches, e.g. 2TB.")
@click.option(
    "--ttl", type=Duration(), default=None, help="New time unused before eviction, e.g. 12h."
)
def volume_set(name: str, capacity: int | None, ttl: int | None) -> None:
    """Change the capacity or TTL of the volume NAME (what is not given stays).

    A capacity below what its caches hold evicts nothing now; new fills evict
    unused caches, least recently used first, until they fit.
    """
    if capacity is None and ttl is None:
        raise click.UsageError("give --capacity, --ttl or both")
    v = get_caches().topology.update_volume(name, capacity=capacity, ttl_seconds=ttl)
    click.echo(
        f"volume {v.name}: capacity {human_bytes(v.capacity)}, ttl {human_duration(v.ttl_seconds)}"
    )


@volume.command("rm")
@click.argument("name")
def volume_rm(name: str) -> None:
    """Remove the volume NAME from the catalog (it must hold no caches)."""
    get_caches().topology.remove_volume(name)
    click.echo(f"removed volume {name} (its files on disk were not touched)")


@click.group()
def compute() -> None:
    """Compute resources: pools of machines at a site with a backend (local, container, ray,
    kubernetes)."""


def parse_backend_config(items: tuple[str, ...] | list[str]) -> dict[str, object]:
    """Backend settings from ``--config`` values: ``KEY=VALUE`` or a JSON object each."""
    cfg: dict[str, object] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                whole = json.loads(item)
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"--config {item!r} is not JSON: {exc}") from exc
            if not isinstance(whole, dict):
                raise click.BadParameter(f"--config {item!r} is not a JSON object")
            cfg.update(whole)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"--config {item!r}: write KEY=VALUE (e.g. address=head:6379) or a JSON object"
            )
        try:
            cfg[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key.strip()] = value
    return cfg


@compute.command("add")
@click.argument("name")
@click.option("--site", "-s", required=True)
@click.option(
    "--backend",
    "-b",
    default="local",
    show_default=True,
    # catalog.topology.BACKENDS, spelt out so the CLI starts without the catalog's imports.
    type=click.Choice(["local", "container", "ray", "kubernetes"]),
)
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    help="An extra volume it mounts (repeatable); its site's volumes always count.",
)
@click.option(
    "--config",
    "config",
    multiple=True,
    help="A backend setting as KEY=VALUE (repeatable; VALUE is read as JSON if it is JSON, "
    "else as text), or all of them as one JSON object, e.g. --config address=head:6379 "
    "--config site_resource=site:onprem.",
)
@click.option(
    "--cpu",
    default=None,
    help="Cores its jobs may use at once (default for local: this machine's cores).",
)
@click.option(
    "--memory",
    type=Size(),
    default=None,
    help="Memory its jobs may use at once, e.g. 64GB (default for local: this machine's).",
)
@click.option("--gpu", default=0, show_default=True, help="GPUs its jobs may use at once.")
@click.option(
    "--resource",
    "named",
    multiple=True,
    help="A named resource as NAME=COUNT (repeatable), e.g. ssd=4.",
)
def compute_add(
    name: str,
    site: str,
    backend: str,
    volumes: tuple[str, ...],
    config: tuple[str, ...],
    cpu: str | None,
    memory: int | None,
    gpu: int,
    named: tuple[str, ...],
) -> None:
    """Add the compute resource NAME at a site, with the capacity its jobs share.

    Jobs get a slot of a template's size on it (`lakecache template add`) while
    the capacity has room; the rest wait in their queue or burst to the next.
    """
    import os

    from lakecache.cli.jobs import make_size
    from lakecache.compute.sdk import jobs_store

    cfg = parse_backend_config(config)
    if backend == "local":
        cpu = cpu or str(os.cpu_count() or 1)
        if memory is None:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    size = make_size(cpu or "0", memory or 0, gpu, named)
    caches = get_caches()
    caches.topology.add_compute(name, site, backend, cfg, list(volumes), _now())
    jobs_store(caches.hub).set_capacity(name, size)
    click.echo(f"added compute {name} ({backend}) at {site}: {size.describe()}")


@compute.command("ls")
@json_option
def compute_ls(as_json: bool) -> None:
    """List compute resources: site, backend (and its settings, with --json), volumes,
    capacity used and free, jobs."""
    from lakecache.compute.sdk import jobs_store

    caches = get_caches()
    topo = caches.topology
    vols = topo.list_volumes()
    caps = {c.compute: c for c in jobs_store(caches.hub).capacity()}
    rows: list[dict[str, Any]] = []
    for c in topo.list_compute():
        cap = caps.get(c.name)
        rows.append(
            {
                "name": c.name,
                "site": c.site,
                "backend": c.backend,
                "config": c.config,
                "volumes": sorted({v.name for v in vols if v.site == c.site} | set(c.volumes)),
                "capacity": cap.total.as_dict() if cap else None,
                "used": cap.used.as_dict() if cap else None,
                "jobs": cap.jobs if cap else 0,
            }
        )
    if as_json:
        print_json(rows)
        return
    print_table(
        [
            "compute",
            "site",
            "backend",
            "volumes",
            "cpu used/total",
            "memory used/total",
            "gpu",
            "jobs",
        ],
        [
            (
                r["name"],
                r["site"],
                r["backend"],
                ", ".join(r["volumes"]),
                f"{r['used']['cpu']:g}/{r['capacity']['cpu']:g}" if r["capacity"] else "-",
                f"{human_bytes(r['used']['memory'])}/{human_bytes(r['capacity']['memory'])}"
                if r["capacity"]
                else "-",
                f"{r['used']['gpu']}/{r['capacity']['gpu']}" if r["capacity"] else "-",
                r["jobs"],
            )
            for r in rows
        ],
        right=["cpu used/total", "memory used/total", "gpu", "jobs"],
    )


@compute.command("rm")
@click.argument("name")
def compute_rm(name: str) -> None:
    """Remove the compute resource NAME (it must have no templates)."""
    from lakecache.compute.sdk import jobs_store

    jobs_store(get_caches().hub).remove_compute(name)
    click.echo(f"removed compute {name}")
