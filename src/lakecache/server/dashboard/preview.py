"""Previews of small text files on a file's page: plain text as lines, CSV and TSV as a table.

A labels CSV is what a "fix labels" commit touches, so its rows are worth
seeing without a download. Only files up to :data:`MAX_BYTES` are previewed:
their whole blob is read and checked against its BLAKE3 before anything of
it is shown (a partial read could not be verified). Everything shown goes
through the templates' autoescaping.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import blake3

from lakecache.errors import IntegrityError

if TYPE_CHECKING:
    from lakecache.server.models import TreeItem
    from lakecache.server.runtime import ControlPlane

MAX_BYTES = 1 << 20
MAX_LINES = 200
MAX_ROWS = 100
MAX_COLUMNS = 30
_TEXT_TYPES = {"application/json", "application/xml", "application/x-yaml", "application/yaml"}
_TABLE_TYPES = {"text/csv": ",", "text/tab-separated-values": "\t"}


@dataclass
class TextPreview:
    """What the file page shows: ``rows`` for a table (first row is the header) or ``lines``."""

    kind: str  # "table", "text" or "none"
    lines: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    truncated: bool = False
    #: Why there is no preview, for a file that looks like text.
    reason: str = ""


def previewable(content_type: str | None) -> bool:
    """True for the media types shown as text or as a table."""
    if content_type is None:
        return False
    return content_type.startswith("text/") or content_type in _TEXT_TYPES


def text_preview(plane: ControlPlane, file: TreeItem) -> TextPreview | None:
    """The preview of ``file``, or None if its type is not text.

    Raises IntegrityError if the bytes in the lake disagree with the file's digest.
    """
    if not previewable(file.content_type) or file.digest is None:
        return None
    if file.size > MAX_BYTES:
        return TextPreview(
            "none", reason=f"Larger than {MAX_BYTES >> 20} MiB: download it to read it."
        )
    data = _read_verified(plane, file.digest, file.size, file.path)
    text = data.decode("utf-8", errors="replace")
    delimiter = _TABLE_TYPES.get(file.content_type or "")
    if delimiter is not None:
        rows: list[list[str]] = []
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            for row in reader:
                if len(rows) > MAX_ROWS:  # the header plus MAX_ROWS rows
                    return TextPreview("table", rows=rows, truncated=True)
                rows.append(row[:MAX_COLUMNS])
        except csv.Error:
            pass  # not well-formed CSV after all: show it as text below
        else:
            return TextPreview("table", rows=rows)
    lines = text.splitlines()
    return TextPreview("text", lines=lines[:MAX_LINES], truncated=len(lines) > MAX_LINES)


def _read_verified(plane: ControlPlane, digest: str, size: int, path: str) -> bytes:
    if size == 0:
        return b""
    loc = plane.hub.catalog.locate_blobs([digest]).get(digest)
    if loc is None:
        raise IntegrityError(f"the bytes of {path!r} are not in the lake's index")
    data = b"".join(
        plane.hub.lake.iter_chunks(
            loc.key, start=loc.offset if loc.pack_id else 0, length=size, chunk_size=1 << 20
        )
    )
    if blake3.blake3(data).hexdigest() != digest:
        raise IntegrityError(
            f"the bytes of {path!r} in the lake do not match its digest",
            hint="Run `lakecache cache verify` or re-commit the file; report it if it persists.",
        )
    return data
