"""``lakecache catalog``: the catalog database (rebuild from the lake)."""

from __future__ import annotations

import click

from lakecache.cli.common import json_option
from lakecache.cli.output import print_json


@click.group()
def catalog() -> None:
    """The catalog database: rebuild it from the lake."""


@catalog.command("rebuild")
@click.option(
    "--force", is_flag=True, help="Add to a catalog that is not empty (existing datasets kept)."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@json_option
def rebuild_command(force: bool, quiet: bool, as_json: bool) -> None:
    """Recreate datasets, commits, tags and the blob index from the lake alone.

    \b
    Into the catalog LAKECACHE_CATALOG names, which must be empty (a new SQLite
    file or PostgreSQL database) unless --force. Users, members, tokens, sites,
    volumes and caches are not in the lake: recreate them afterwards.
    """
    from lakecache.catalog import Catalog
    from lakecache.catalog.rebuild import rebuild
    from lakecache.lake import open_lake
    from lakecache.settings import Settings

    settings = Settings.load()
    lake = open_lake(settings)
    cat = Catalog.open(settings.catalog_url)
    try:

        def report(line: str) -> None:
            if not quiet and not as_json:
                click.echo(line, err=True)

        result = rebuild(cat, lake, force=force, report=report)
    finally:
        cat.close()
    if as_json:
        print_json(result.__dict__)
        return
    click.echo(
        f"rebuilt {result.datasets} datasets, {result.commits} commits, {result.branches} "
        f"branches, {result.tags} tags; indexed {result.blobs} blobs in {result.packs} packs"
    )
    if result.skipped:
        click.echo(f"kept as they were: {', '.join(result.skipped)}")
    if result.missing_commits:
        click.secho(
            f"warning: {len(result.missing_commits)} commit(s) the ref log names are missing "
            f"from the lake (first {result.missing_commits[0][:12]})",
            err=True,
            fg="yellow",
        )
