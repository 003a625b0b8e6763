"""How the CLI shows things: sizes, times, tables, JSON, progress bars and errors."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from lakecache.units import format_duration, format_size


def human_bytes(n: int | float | None) -> str:
    """Bytes as every surface shows them (:func:`lakecache.units.format_size`); '-' for None."""
    return "-" if n is None else format_size(n)


def human_age(iso: str | None, now: datetime | None = None) -> str:
    """'3 min ago' from an ISO timestamp."""
    if not iso:
        return "-"
    when = datetime.fromisoformat(iso)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    secs = ((now or datetime.now(UTC)) - when).total_seconds()
    return human_duration(secs) + " ago" if secs >= 0 else "in " + human_duration(-secs)


def human_duration(secs: float) -> str:
    """A span as every surface shows it (:func:`lakecache.units.format_duration`)."""
    return format_duration(secs)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
) -> None:
    """A readable table on a terminal; tab-separated lines when piped (easy to grep/cut)."""
    if not sys.stdout.isatty():
        click.echo("\t".join(columns))
        for r in rows:
            click.echo("\t".join(_plain(c) for c in r))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left", overflow="fold")
    for r in rows:
        table.add_row(*(_plain(c) for c in r))
    Console().print(table)


def _plain(v: Any) -> str:
    s = "" if v is None else str(v)
    # Names may hold newlines; keep one row per line.
    return s.replace("\n", "\\n").replace("\t", "\\t")


class RichProgress:
    """A progress bar with files, files/s, MB/s and ETA, drawn on stderr."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._task: Any = None
        self._files = 0
        self._total_files = 0
        self._t0 = 0.0

    def begin(self, label: str, total_files: int, total_bytes: int) -> None:
        self._files, self._total_files, self._t0 = 0, total_files, time.perf_counter()
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}/{task.fields[total_files]} files"),
            TextColumn("{task.fields[rate]} files/s"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            label, total=max(total_bytes, 1), files=0, total_files=total_files, rate="0"
        )

    def advance(self, files: int, nbytes: int) -> None:
        self._files += files
        if self._progress is not None:
            dt = max(time.perf_counter() - self._t0, 1e-6)
            self._progress.update(
                self._task, advance=nbytes, files=self._files, rate=f"{self._files / dt:,.0f}"
            )

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
