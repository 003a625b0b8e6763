"""``lakecache lake``: the lake itself (garbage collection)."""

from __future__ import annotations

from datetime import timedelta

import click

from lakecache.cli.common import get_hub, json_option
from lakecache.cli.output import human_bytes, human_duration, print_json, print_table
from lakecache.cli.units import parse_duration


@click.group()
def lake() -> None:
    """The lake's objects: garbage collection."""


def _require_direct() -> None:
    from lakecache.errors import UserError

    if get_hub().server is not None:
        raise UserError(
            "lake gc works on the lake and catalog directly, not through a server",
            hint="Run it on the server's machine with its settings (or enable the server's "
            "lake_gc maintenance), or `lakecache logout` first.",
        )


@lake.command("gc")
@click.option("--dry-run", is_flag=True, help="Only show what would go and the bytes reclaimed.")
@click.option(
    "--grace",
    default="1d",
    show_default=True,
    help="Never delete what is younger, nor what was condemned less long ago (1d, 12h, 0s).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@json_option
def gc_command(dry_run: bool, grace: str, quiet: bool, as_json: bool) -> None:
    """Delete every pack and blob no commit of any dataset reaches (deleted datasets' bytes).

    \b
    An unreachable pack is first condemned (no new commit reuses it), then
    deleted by a run at least the grace period later; commits running meanwhile
    stay whole. Packs that are mostly garbage are rewritten. --grace 0s
    reclaims at once: only when nothing commits meanwhile.
    """
    from lakecache.data import gc

    _require_direct()
    hub = get_hub()

    def report(line: str) -> None:
        if not quiet and not as_json:
            click.echo(line, err=True)

    result = gc.collect(
        hub.lake,
        hub.catalog,
        grace=timedelta(seconds=parse_duration(grace)),
        dry_run=dry_run,
        report=report,
    )
    plan = result.plan
    if as_json:
        body = plan.to_json()
        body["dry_run"] = dry_run
        if not dry_run:
            body["deleted"] = result.deleted
            body["bytes_deleted"] = result.bytes_freed
            body["spared"] = result.spared
            body["repacked"] = result.repacked
            body["resurrected"] = result.resurrected
        body["seconds"] = round(result.seconds, 3)
        print_json(body)
        return
    rows: list[tuple[str, int, str]] = [
        (kind, n, human_bytes(b)) for kind, (n, b) in plan.by_kind().items()
    ]
    rows.append(("total", len(plan.delete), human_bytes(plan.bytes_freed)))
    title = "would delete" if dry_run else "deleted"
    print_table(["kind", "objects", "bytes"], rows, title=title, right=["objects", "bytes"])
    if dry_run and plan.delete:
        for o in plan.delete[:50]:
            click.echo(f"  {o.key}\t{human_bytes(o.size)}")
        if len(plan.delete) > 50:
            click.echo(f"  ... and {len(plan.delete) - 50} more (--json lists them all)")
    click.echo(
        f"condemned now: {len(plan.condemn)}; waiting out the grace period: "
        f"{plan.waiting[0]} ({human_bytes(plan.waiting[1])}); too young: {plan.young[0]}; "
        f"packs to rewrite: {len(plan.repack)}; live: {plan.live[0]} "
        f"({human_bytes(plan.live[1])})"
    )
    if not dry_run:
        click.echo(
            f"freed {human_bytes(result.bytes_freed)} in {human_duration(result.seconds)}"
            + (f"; {result.spared} spared by the last checks" if result.spared else "")
        )
    if plan.missing_blobs or plan.missing_manifests:
        click.secho(
            f"warning: {plan.missing_blobs} blob(s) and {plan.missing_manifests} manifest(s) "
            "that commits need are missing from the lake; re-commit them from a good copy",
            err=True,
            fg="yellow",
        )
