"""Sizes and durations, read from people and shown to people: one set of rules everywhere.

The CLI, the server's config file and the dashboard all parse ``500GB``,
``2TiB``, ``1d`` and ``90s`` here, and show bytes and spans the same way, so
that a volume is ``49.8 MB`` free on every surface. The dashboard's script
repeats :func:`format_size` and :func:`format_duration` for live updates; its
test checks that the two agree.
"""

from __future__ import annotations

import re

from lakecache.errors import UserError

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?i?)b?\s*$", re.I)
_SIZE_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "p": 10**15,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
    "pi": 2**50,
}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: object, what: str = "size") -> int:
    """Bytes from ``500GB``, ``1.5TiB``, ``64 kB`` or an integer; UserError otherwise.

    Decimal units (kB, MB, ...) are powers of 1000, binary ones (KiB, MiB, ...)
    powers of 1024. ``what`` names the setting in the error.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UserError(f"{what}: {value} is negative", hint="Give a size of 0 or more.")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise UserError(
            f"{what}: {value!r} is not a size", hint="Write e.g. 500GB, 2TiB or 1000000."
        )
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: object, what: str = "duration") -> int:
    """Seconds from ``1d``, ``12h``, ``30m``, ``90s``, ``2w`` or an integer; UserError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UserError(f"{what}: {value} is negative", hint="Give 0 seconds or more.")
        return value
    m = _DURATION.match(str(value))
    if not m:
        raise UserError(
            f"{what}: {value!r} is not a duration", hint="Write e.g. 1d, 12h, 30m or 90s."
        )
    return int(float(m.group(1)) * _SECONDS[m.group(2).lower()])


def format_size(n: int | float | None) -> str:
    """Bytes for people in decimal units, three significant digits: ``1.23 kB``, ``123 MB``."""
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """A span for people: ``45 s``, ``12 min``, ``5 h 20 min``, ``3 d 4 h``."""
    if seconds is None:
        return "–"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"
