"""``lakecache cache``: materialise commits next to the compute, and watch them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lakecache.cli.common import get_caches, json_option
from lakecache.cli.output import (
    RichProgress,
    human_age,
    human_bytes,
    human_duration,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from lakecache.cache.service import CacheService
    from lakecache.catalog.topology import CacheRecord

_SITE_TO_FILL = click.option(
    "--site", "-s", default=None, help="The site (its volume with the most room is used)."
)
_VOLUME_TO_FILL = click.option("--volume", "-v", "volume", default=None, help="The cache volume.")
_SITE_FILTER = click.option("--site", "-s", default=None, help="Only caches on this site.")
_VOLUME_FILTER = click.option(
    "--volume", "-v", "volume", default=None, help="Only caches on this volume."
)
_PATH_FILTER = click.option(
    "--path",
    "-p",
    "subpath",
    default=None,
    help="The folder cached, for a commit cached in parts (as `cache ls` shows it).",
)


def _where(f):  # type: ignore[no-untyped-def]
    """--site and --volume of a command that places a cache."""
    return _SITE_TO_FILL(_VOLUME_TO_FILL(f))


def _which(f):  # type: ignore[no-untyped-def]
    """--site, --volume and --path of a command that picks caches that exist."""
    return _SITE_FILTER(_VOLUME_FILTER(_PATH_FILTER(f)))


def _find(
    svc: CacheService,
    target: str,
    site: str | None,
    volume: str | None,
    subpath: str | None = None,
) -> CacheRecord:
    """A cache by id, or by DATASET@REF on a site or volume (and folder, with ``subpath``)."""
    from lakecache.data.dataset import split_ref
    from lakecache.errors import NotFoundError, UserError
    from lakecache.lake.objects import normalize_folder

    if target.isdigit():
        return svc.topology.get_cache(int(target))
    name, ref = split_ref(target)
    commit_id = svc.hub.catalog.resolve(name, ref)
    found = [
        c
        for c in svc.topology.list_caches(dataset=name, site=site, volume=volume)
        if c.commit_id == commit_id and c.state != "evicted"
    ]
    if subpath is not None:
        want = normalize_folder(subpath)
        found = [c for c in found if normalize_folder(c.subpath) == want]
    if not found:
        raise NotFoundError(
            f"no cache of {target} here", hint="List caches with `lakecache cache ls`."
        )
    if len(found) > 1:
        shown = "; ".join(
            f"{c.id} on {c.volume} ({f'folder {c.subpath}' if c.subpath else 'whole commit'})"
            for c in found
        )
        raise UserError(
            f"{target} matches {len(found)} caches: {shown}",
            hint="Say which with its id, or with --path FOLDER (--path / for the whole commit) "
            "and --volume.",
        )
    return found[0]


def _row(svc: CacheService, c: CacheRecord, now: datetime) -> dict[str, Any]:
    ttl = svc.topology.get_volume(c.volume).ttl_seconds
    expires = None
    if c.state == "ready" and not c.pinned and not c.leases:
        expires = max(0.0, (c.last_used_at.timestamp() + ttl) - now.timestamp())
    return {
        "id": c.id,
        "dataset": c.dataset,
        "commit": c.commit_id,
        "subpath": c.subpath,
        "site": c.site,
        "volume": c.volume,
        "state": c.state,
        "files": c.files,
        "bytes": c.bytes,
        "done_bytes": c.done_bytes,
        "linked_bytes": c.linked_bytes,
        "fetched_bytes": c.fetched_bytes,
        "last_used": c.last_used_at.isoformat(),
        "expires_in_seconds": expires,
        "pinned": c.pinned,
        "leases": c.leases,
        "error": c.error,
        "report": c.report,
    }


@click.group()
def cache() -> None:
    """Caches: a commit materialised as plain files on a site's cache volume.

    \b
    Every run and teammate at the site reads the same files, without a download.
    Caches unused for the volume's TTL (default 1 day) are evicted; a cache in
    use (leased) or pinned never is.
    """


@cache.command("add")
@click.argument("spec", metavar="DATASET@REF")
@_where
@click.option(
    "--path", "-p", "path", default="", help="Cache only this folder or file of the commit."
)
@click.option("--no-wait", is_flag=True, help="Only ask; the site's agent fills it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def cache_add(
    spec: str,
    site: str | None,
    volume: str | None,
    path: str,
    no_wait: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Cache a commit on a site (or a volume), filling it now if this machine mounts the volume.

    Files already on the volume (in another cache) are hard-linked, the rest
    fetched from the lake with parallel ranged GETs and verified, then
    published in one step: readers see the whole commit or nothing.
    """
    from lakecache.data.dataset import split_ref

    if not site and not volume:
        raise click.UsageError("say where to cache it: --site SITE or --volume VOLUME")
    svc = get_caches()
    name, ref = split_ref(spec)
    rec = svc.request(name, ref, site=site, volume=volume, path=path)
    mounted = Path(svc.topology.get_volume(rec.volume).root).is_dir()
    if rec.state != "ready" and not no_wait and mounted:
        rec = svc.ensure_ready(
            rec, progress=RichProgress(enabled=False if quiet or as_json else None)
        )
    if as_json:
        print_json(_row(svc, rec, datetime.now(UTC)))
        return
    if rec.state == "ready":
        click.echo(
            f"cache {rec.id} ready: {rec.name} on {rec.volume} ({rec.site}) "
            f"at {svc.cache_path(rec)}; "
            f"{human_bytes(rec.bytes)}, "
            f"{human_bytes(rec.linked_bytes)} hard-linked from other caches, "
            f"{human_bytes(rec.fetched_bytes)} fetched"
        )
    else:
        from lakecache.cache.presence import no_agent_note, sites_with_agent

        why = "" if mounted else " (this machine does not mount the volume)"
        click.echo(
            f"cache {rec.id} {rec.state}: {rec.name} on {rec.volume}; "
            f"the agent of site {rec.site} fills it{why}"
        )
        if rec.site not in sites_with_agent(svc.topology.list_volumes(rec.site), datetime.now(UTC)):
            click.echo(f"but {no_agent_note(rec.site)}")


@cache.command("ls")
@_SITE_FILTER
@_VOLUME_FILTER
@click.option("--dataset", "-d", default=None, help="Only caches of this dataset.")
@click.option("--all", "-a", "show_all", is_flag=True, help="Include evicted caches.")
@json_option
def cache_ls(
    site: str | None, volume: str | None, dataset: str | None, show_all: bool, as_json: bool
) -> None:
    """Caches: dataset, commit, volume, state, size, last used, expires in, pinned, leases.

    Below the table, a note for each cache that needs someone: why it failed,
    or that it waits at a site where no agent runs.
    """
    from lakecache.cache.presence import no_agent_note, sites_with_agent

    svc = get_caches()
    now = datetime.now(UTC)
    recs = [
        c
        for c in svc.topology.list_caches(site=site, volume=volume, dataset=dataset, now=now)
        if show_all or c.state != "evicted"
    ]
    live = sites_with_agent(svc.topology.list_volumes(), now)
    rows = [_row(svc, c, now) for c in recs]
    for r in rows:
        r["agent_live"] = r["site"] in live
        r["note"] = None
        if r["state"] == "failed" and r["error"]:
            r["note"] = f"failed: {r['error']}"
        elif r["state"] == "pending" and not r["agent_live"]:
            r["note"] = no_agent_note(str(r["site"]))
    if as_json:
        print_json(rows)
        return

    def state(r: dict[str, Any]) -> str:
        s = str(r["state"])
        if s == "filling" and r["bytes"]:
            s += f" {100 * int(r['done_bytes']) // max(int(r['bytes']), 1)}%"  # type: ignore[call-overload]
        return s

    print_table(
        [
            "id",
            "dataset",
            "commit",
            "volume",
            "state",
            "size",
            "linked",
            "last used",
            "expires in",
            "pinned",
            "leases",
        ],
        [
            (
                r["id"],
                r["dataset"] + (f":{r['subpath']}" if r["subpath"] else ""),
                str(r["commit"])[:12],
                f"{r['volume']} ({r['site']})",
                state(r),
                human_bytes(r["bytes"]),  # type: ignore[arg-type]
                human_bytes(r["linked_bytes"]),
                human_age(str(r["last_used"])),  # type: ignore[arg-type]
                "-"
                if r["expires_in_seconds"] is None
                else human_duration(float(r["expires_in_seconds"])),  # type: ignore[arg-type]
                "yes" if r["pinned"] else "",
                r["leases"] or "",
            )
            for r in rows
        ],
        right=["id", "size", "linked", "leases"],
    )
    for r in rows:
        if r["note"]:
            click.echo(f"cache {r['id']}: {r['note']}")


@cache.command("evict")
@click.argument("target", metavar="ID|DATASET@REF")
@_which
@click.option("--force", "-f", is_flag=True, help="Unpin it first.")
def cache_rm(
    target: str, site: str | None, volume: str | None, subpath: str | None, force: bool
) -> None:
    """Evict a cache now (refused while a run holds a lease on it, or pinned without --force).

    `lakecache cache rm` is the same command.
    """
    svc = get_caches()
    rec = _find(svc, target, site, volume, subpath)
    if not Path(svc.topology.get_volume(rec.volume).root).is_dir():
        svc.topology.ask(rec.id, "evict")
        click.echo(f"asked the agent of {rec.site} to evict cache {rec.id}")
        return
    if svc.evict(rec.id, force_unpin=force):
        click.echo(f"evicted cache {rec.id} ({rec.name}) from {rec.volume}")
        return
    from lakecache.errors import UserError

    rec = svc.topology.get_cache(rec.id, datetime.now(UTC))
    if rec.leases:
        why, hint = (
            f"in use by {rec.leases} lease(s)",
            "Try again when the runs using it end.",
        )
    elif rec.pinned:
        why, hint = (
            "pinned",
            f"Unpin it first, or pass --force: lakecache cache evict {rec.id} --force",
        )
    else:
        why, hint = f"it is {rec.state}", "Try again once it is ready or failed."
    raise UserError(f"cache {rec.id} ({rec.name}) was kept: {why}", hint=hint)


@cache.command("pin")
@click.argument("target", metavar="ID|DATASET@REF")
@_which
def cache_pin(target: str, site: str | None, volume: str | None, subpath: str | None) -> None:
    """Keep a cache whatever its TTL or the room needed."""
    svc = get_caches()
    rec = _find(svc, target, site, volume, subpath)
    svc.topology.set_pinned(rec.id, True, now=datetime.now(UTC))
    click.echo(f"pinned cache {rec.id} ({rec.name})")


@cache.command("unpin")
@click.argument("target", metavar="ID|DATASET@REF")
@_which
def cache_unpin(target: str, site: str | None, volume: str | None, subpath: str | None) -> None:
    """Let a cache be evicted again by TTL or for room."""
    svc = get_caches()
    rec = _find(svc, target, site, volume, subpath)
    svc.topology.set_pinned(rec.id, False, now=datetime.now(UTC))
    click.echo(f"unpinned cache {rec.id} ({rec.name})")


@cache.command("verify")
@click.argument("target", metavar="ID|DATASET@REF")
@_which
@click.option("--repair", is_flag=True, help="Re-fetch missing or modified files.")
@json_option
def cache_verify(
    target: str,
    site: str | None,
    volume: str | None,
    subpath: str | None,
    repair: bool,
    as_json: bool,
) -> None:
    """Check every file of a cache against its BLAKE3; exit 1 if any is missing or modified."""
    svc = get_caches()
    rec = _find(svc, target, site, volume, subpath)
    if not Path(svc.topology.get_volume(rec.volume).root).is_dir():
        svc.topology.ask(rec.id, "repair" if repair else "verify")
        click.echo(
            f"this machine does not mount {rec.volume}: asked the agent of {rec.site} to "
            f"{'repair' if repair else 'verify'} cache {rec.id}; `lakecache cache ls` shows "
            "the report"
        )
        return
    r = svc.verify(rec.id, repair=repair)
    if as_json:
        print_json(
            {
                "id": rec.id,
                "checked": r.checked,
                "missing": r.missing,
                "modified": r.modified,
                "repaired": r.repaired,
            }
        )
    else:
        click.echo(
            f"cache {rec.id} ({rec.name}): checked {r.checked:,} files, {len(r.missing)} missing, "
            f"{len(r.modified)} modified" + (f", repaired {r.repaired}" if repair else "")
        )
        for p in r.missing[:20]:
            click.echo(f"  missing   {p}")
        for p in r.modified[:20]:
            click.echo(f"  modified  {p}")
    if not r.ok and not repair:
        raise click.exceptions.Exit(1)


@cache.command("gc")
@click.option("--site", "-s", default=None, help="Only this site's volumes.")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan; evict nothing.")
@json_option
def cache_gc(site: str | None, dry_run: bool, as_json: bool) -> None:
    """Evict caches unused for longer than their volume's TTL (never leased or pinned ones).

    Only on the volumes this machine mounts; each site's agent collects its own.
    """
    svc = get_caches()
    plans = svc.gc(dry_run=dry_run, site=site)
    rows: list[dict[str, Any]] = [
        {
            "volume": v.name,
            "cache_id": e.cache_id,
            "cache": e.name,
            "bytes": e.size,
            "reason": e.reason,
        }
        for v, p in plans
        for e in p.evictions
    ]
    if as_json:
        print_json({"dry_run": dry_run, "evictions": rows})
        return
    verb = "would evict" if dry_run else "evicted"
    if not rows:
        click.echo("nothing to evict")
        return
    print_table(
        ["volume", "id", "cache", "size", "reason"],
        [
            (r["volume"], r["cache_id"], r["cache"], human_bytes(r["bytes"]), r["reason"])
            for r in rows
        ],
    )  # type: ignore[arg-type]
    click.echo(f"{verb} {len(rows)} cache(s), {human_bytes(sum(int(r['bytes']) for r in rows))}")  # type: ignore[call-overload]


@cache.command("path")
@click.argument("spec", metavar="DATASET@REF")
@_where
@click.option("--path", "-p", "path", default="", help="A folder or file of the commit.")
def cache_path(spec: str, site: str | None, volume: str | None, path: str) -> None:
    """Print the folder of a ready cache (filling it first), for shell scripts.

    Unlike `lakecache.use()` in Python this holds no lease once it returns: pin
    the cache if a long shell job depends on it.
    """
    from lakecache.data.dataset import split_ref

    svc = get_caches()
    name, ref = split_ref(spec)
    with svc.use(name, ref, site=site, volume=volume, path=path) as p:
        click.echo(str(p))


# `rm` is what people type first; `evict` is the word every surface uses, so `rm`
# works but is not listed twice in --help.
cache.add_command(
    click.Command(
        "rm",
        callback=cache_rm.callback,
        params=cache_rm.params,
        help="Evict a cache now (the same as `lakecache cache evict`).",
        hidden=True,
    )
)
