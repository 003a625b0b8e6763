"""Helpers of the AI library's tests."""

from __future__ import annotations

from pathlib import Path


def damage(path: Path) -> None:
    """Make ``path`` a PNG whose header is fine and whose data is not."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"broken" * 30)
