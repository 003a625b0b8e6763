"""``lakecache data``: version datasets in the lake."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lakecache.cli.common import get_hub, json_option
from lakecache.cli.output import human_age, human_bytes, print_json, print_table

if TYPE_CHECKING:
    from lakecache.data.dataset import Dataset
    from lakecache.data.hub import Hub


def _hub() -> Hub:
    return get_hub()


def _dataset(spec: str) -> tuple[Dataset, str | None]:
    from lakecache.data.dataset import Dataset, split_ref

    name, ref = split_ref(spec)
    return Dataset(name, hub=_hub()), ref


def _progress(quiet: bool) -> object:
    from lakecache.cli.output import RichProgress

    return RichProgress(enabled=False if quiet else None)


@click.group()
def data() -> None:
    """Version datasets in the lake: init, commit, log, ls, diff, pull, tag, show.

    \b
    A ref names a commit: NAME@latest (the default), NAME@TAG, or NAME@<commit id prefix>.
    """


@data.command()
@click.argument("name")
@click.option("--description", "-d", default="", help="One line about the dataset.")
def init(name: str, description: str) -> None:
    """Create the dataset NAME (lowercase letters, digits, '.', '_', '-')."""
    from lakecache.data.dataset import Dataset

    Dataset.create(name, hub=_hub(), description=description)
    click.echo(f"created dataset {name}; next: lakecache data commit {name} PATH -m MESSAGE")


@data.command()
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--message",
    "-m",
    default=None,
    help="What changed in this version (default: 'Update from FOLDER').",
)
@click.option("--tag", "-t", "tags", multiple=True, help="Tag the new commit (repeatable).")
@click.option(
    "--allow-empty", is_flag=True, help="Make a commit even if nothing changed since latest."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def commit(
    name: str,
    path: Path,
    message: str | None,
    tags: tuple[str, ...],
    allow_empty: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Commit the folder PATH as the new latest version of NAME.

    Files are hashed (BLAKE3) in parallel, small ones packed together, and only
    blobs the lake does not already hold are uploaded. Re-commits read only
    files whose size or mtime changed. Safe to re-run after an interruption.
    A folder that matches latest exactly makes no commit (see --allow-empty).
    """
    ds, ref = _dataset(name)
    if ref:
        raise click.UsageError("commit takes a dataset name without '@ref'")
    if message is None:
        message = f"Update from {path.resolve().name or path}"
        if not as_json:
            click.echo(f"no -m given: the message is {message!r}")
    c = ds.commit(
        path,
        message=message,
        allow_empty=allow_empty,
        progress=_progress(quiet or as_json),  # type: ignore[arg-type]
    )
    for t in tags:
        ds.tag(t, c.id)
    s = ds.last_commit_stats
    assert s is not None
    if not s.created:
        if as_json:
            print_json({"id": c.id, "created": False, "files": s.files, "tags": list(tags)})
        else:
            tagged = f"; tagged {', '.join(tags)}" if tags else ""
            click.echo(
                f"nothing changed since {name}@{c.id[:12]}: no commit made{tagged} "
                "(--allow-empty makes one anyway)"
            )
        return
    if as_json:
        print_json(
            {
                "id": c.id,
                "files": s.files,
                "bytes": s.bytes,
                "uploaded_bytes": s.uploaded_bytes,
                "uploaded_blobs": s.uploaded_blobs,
                "hashed_files": s.hashed_files,
                "packs": s.packs,
                "seconds": round(s.seconds, 3),
                "tags": list(tags),
                "created": True,
            }
        )
        return
    click.echo(
        f"committed {name}@{c.id[:12]}: {s.files:,} files, {human_bytes(s.bytes)}; "
        f"read {s.hashed_files:,} files, uploaded {human_bytes(s.uploaded_bytes)} "
        f"in {s.packs} pack(s) and {s.uploaded_blobs - 0:,} new blob(s), {s.seconds:.1f} s"
    )


@data.command()
@click.argument("spec", metavar="NAME[@REF]")
@click.option("--limit", "-n", type=int, default=None, help="Show at most N commits.")
@json_option
def log(spec: str, limit: int | None, as_json: bool) -> None:
    """Show the lineage of a commit (default latest), newest first."""
    ds, ref = _dataset(spec)
    entries = ds.log(ref, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "id": e.id,
                    "parents": list(e.commit.parents),
                    "author": e.commit.author,
                    "message": e.commit.message,
                    "created_at": e.commit.created_at,
                    "files": e.commit.file_count,
                    "bytes": e.commit.bytes,
                    "tags": list(e.tags),
                }
                for e in entries
            ]
        )
        return
    if not entries:
        click.echo(
            f"{ds.name} has no commits yet; add one with: "
            f"lakecache data commit {ds.name} PATH -m MESSAGE"
        )
        return
    print_table(
        ["commit", "tags", "when", "author", "files", "size", "message"],
        [
            (
                e.id[:12],
                ",".join(e.tags),
                human_age(e.commit.created_at),
                e.commit.author,
                f"{e.commit.file_count:,}",
                human_bytes(e.commit.bytes),
                e.commit.message,
            )
            for e in entries
        ],
        right=["files", "size"],
    )


@data.command(name="ls")
@click.argument("spec", metavar="[NAME[@REF]]", required=False)
@click.argument("folder", required=False, default="")
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=None, help="At most this many items."
)
@click.option(
    "--after", default=None, metavar="PATH", help="Start after this item (the last one shown)."
)
@json_option
def ls_(spec: str | None, folder: str, limit: int | None, after: str | None, as_json: bool) -> None:
    """List datasets, or one folder of a commit (folders first, with their totals).

    A folder of many files reads in pages: `--limit 1000`, then `--after` the
    last item shown (its name as listed, or its whole path); the command prints
    the next page's command while more items follow.
    """
    if spec is None:
        cat = _hub().catalog
        rows: list[dict[str, Any]] = []
        for d in cat.list_datasets():
            st = cat.dataset_stats(d.name)
            rows.append({"name": d.name, "owner": d.owner, "description": d.description, **st})
        if as_json:
            print_json(rows)
        else:
            print_table(
                ["dataset", "commits", "files", "size", "owner", "description"],
                [
                    (
                        r["name"],
                        r.get("commit_count", 0),
                        f"{r.get('file_count') or 0:,}",
                        human_bytes(r.get("bytes") or 0),
                        r["owner"],
                        r["description"],
                    )
                    for r in rows
                ],
                right=["commits", "files", "size"],
            )
        return
    ds, ref = _dataset(spec)
    # One item more than asked for tells whether another page follows.
    items = ds.ls(ref, folder, limit=limit + 1 if limit else None, after=after)
    more = limit is not None and len(items) > limit
    if more:
        items = items[:limit]
    if as_json:
        print_json(
            [
                {
                    "name": i.name,
                    "path": i.path,
                    "type": "dir" if i.is_dir else "file",
                    "size": i.size,
                    "files": i.files,
                    "digest": i.digest,
                }
                for i in items
            ]
        )
        return
    print_table(
        ["name", "files", "size", "blake3"],
        [
            (
                i.name + ("/" if i.is_dir else ""),
                f"{i.files:,}",
                human_bytes(i.size),
                (i.digest or "")[:12],
            )
            for i in items
        ],
        right=["files", "size"],
    )
    if more:
        last = items[-1].name
        click.echo(
            f"more items follow; next page: lakecache data ls {spec} {folder or '/'} "
            f"-n {limit} --after {shlex.quote(last)}"
        )


@data.command()
@click.argument("old", metavar="NAME@OLD")
@click.argument("new", metavar="[NAME@]NEW", required=False)
@click.option("--limit", type=int, default=50, show_default=True, help="Paths to show (0: all).")
@json_option
def diff(old: str, new: str | None, limit: int, as_json: bool) -> None:
    """What changed between two commits: added, removed, modified, and bytes.

    NEW defaults to latest; it may be just a ref (v2) of the same dataset.
    """
    ds, a = _dataset(old)
    b: str | None = None
    if new:
        other, b = _dataset(new) if "@" in new else (ds, new)
        if other.name != ds.name:
            raise click.UsageError("diff compares two commits of the same dataset")
    d = ds.diff(a, b)
    counts = d.counts
    if as_json:
        print_json(
            {
                "old": d.old,
                "new": d.new,
                **counts,
                "bytes_added": d.bytes_added,
                "bytes_removed": d.bytes_removed,
                "changes": [
                    {
                        "path": c.path,
                        "status": c.status,
                        "old_size": c.old_size,
                        "new_size": c.new_size,
                    }
                    for c in d.changes
                ],
            }
        )
        return
    click.echo(
        f"{ds.name}: {d.old[:12]} -> {d.new[:12]}: {counts['added']:,} added, "
        f"{counts['removed']:,} removed, {counts['modified']:,} modified; "
        f"+{human_bytes(d.bytes_added)} -{human_bytes(d.bytes_removed)}"
    )
    shown = d.changes if limit == 0 else d.changes[:limit]
    if shown:
        marks = {"added": "+", "removed": "-", "modified": "M"}
        print_table(
            ["", "path", "old size", "new size"],
            [
                (marks[c.status], c.path, human_bytes(c.old_size), human_bytes(c.new_size))
                for c in sorted(shown, key=lambda c: c.path)
            ],
            right=["old size", "new size"],
        )
    if len(shown) < len(d.changes):
        click.echo(f"... and {len(d.changes) - len(shown):,} more (use --limit 0 or --json)")


@data.command()
@click.argument("spec", metavar="NAME[@REF]")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--path", "-p", "paths", multiple=True, help="Pull only this file or folder (repeatable)."
)
@click.option(
    "--force", "-f", is_flag=True, help="Overwrite files in DEST that hold local changes."
)
@click.option(
    "--delete",
    is_flag=True,
    help="Remove files under the pulled folders that the commit does not hold (like rsync).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def pull(
    spec: str,
    dest: Path,
    paths: tuple[str, ...],
    force: bool,
    delete: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Write a commit (or some of its folders) into DEST as plain files.

    Packs are fetched with parallel ranged GETs and every file is verified
    (BLAKE3) before it appears. Files already in DEST with the right content
    are kept, so re-running an interrupted pull resumes it.

    DEST may hold an earlier pull: its files are replaced. A file you changed
    (or put there) is never overwritten without --force: the pull names such
    files and stops before writing anything. Files that the commit does not
    hold are left and counted; --delete removes them.
    """
    from lakecache.data.pull import PullConflictError

    ds, ref = _dataset(spec)
    try:
        s = ds.pull(
            ref,
            dest,
            list(paths) or None,
            force=force,
            delete=delete,
            progress=_progress(quiet or as_json),  # type: ignore[arg-type]
        )
    except PullConflictError as exc:
        raise PullConflictError(exc.check, exc.spec, exc.dest, flag="--force") from None
    if as_json:
        print_json(
            {
                "files": s.files,
                "bytes": s.bytes,
                "fetched_bytes": s.fetched_bytes,
                "requests": s.requests,
                "kept_files": s.skipped_files,
                "overwritten_files": s.overwritten_files,
                "extra_files": s.extra_files,
                "deleted_files": s.deleted_files,
            }
        )
        return
    click.echo(
        f"pulled {s.files:,} files ({human_bytes(s.bytes)}) into {dest} with {s.requests:,} "
        f"request(s); {s.skipped_files:,} already there"
    )
    if s.overwritten_files:
        click.echo(f"overwrote {s.overwritten_files:,} file(s) with local changes (--force)")
    if s.deleted_files:
        click.echo(f"removed {s.deleted_files:,} file(s) not in {ds.name}@{ref or 'latest'}")
    if s.extra_files:
        names = ", ".join(s.extra_shown)
        more = s.extra_files - len(s.extra_shown)
        click.echo(
            f"{s.extra_files:,} file(s) not in {ds.name}@{ref or 'latest'} left in {dest}: "
            f"{names}{f' and {more:,} more' if more > 0 else ''} (--delete removes them)"
        )


@data.command()
@click.argument("spec", metavar="NAME[@REF]")
@click.argument("tag")
@click.option("--force", "-f", is_flag=True, help="Move the tag if it names another commit.")
@click.option("--delete", "-d", is_flag=True, help="Delete the tag instead.")
def tag(spec: str, tag: str, force: bool, delete: bool) -> None:
    """Name a commit TAG (default: latest), so it can be used as NAME@TAG."""
    ds, ref = _dataset(spec)
    if delete:
        _hub().catalog.delete_tag(ds.name, tag)
        click.echo(f"deleted tag {ds.name}@{tag}")
        return
    cid = ds.tag(tag, ref, force=force)
    click.echo(f"tagged {ds.name}@{cid[:12]} as {tag}")


@data.command()
@click.argument("spec", metavar="NAME[@REF]")
@json_option
def show(spec: str, as_json: bool) -> None:
    """Show one commit: id, parents, author, message, stats and tags."""
    ds, ref = _dataset(spec)
    cid = ds.resolve(ref)
    c = ds.hub.catalog.get_commit(ds.name, cid)
    tags = ds.hub.catalog.tags(ds.name).get(cid, [])
    info = {
        "dataset": ds.name,
        "id": cid,
        "parents": list(c.parents),
        "author": c.author,
        "created_at": c.created_at,
        "message": c.message,
        "files": c.file_count,
        "bytes": c.bytes,
        "manifest": c.manifest,
        "tags": list(tags),
    }
    if as_json:
        print_json(info)
        return
    for k, v in info.items():
        if k == "bytes":
            v = f"{human_bytes(c.bytes)} ({c.bytes:,} bytes)"
        elif isinstance(v, list):
            v = ", ".join(v) or "-"
        click.echo(f"{k + ':':<11} {v}")
