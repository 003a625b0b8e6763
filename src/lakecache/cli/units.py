"""Parse sizes ('500GB', '1.5TiB') and durations ('1d', '12h', '90s') given on the command line."""

from __future__ import annotations

import re

import click

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?i?b?)?\s*$", re.I)
_MULT = {
    "": 1,
    "b": 1,
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
_DUR = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$", re.I)
_SECS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 500GB, 2TiB or 1000000")
    unit = (m.group(2) or "").lower().rstrip("b")
    return int(float(m.group(1)) * _MULT[unit])


def parse_duration(text: str) -> int:
    m = _DUR.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration; write e.g. 1d, 12h, 30m or 90s")
    return int(float(m.group(1)) * _SECS[m.group(2).lower()])


class Size(click.ParamType):
    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        return value if isinstance(value, int) else parse_size(str(value))


class Duration(click.ParamType):
    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        return value if isinstance(value, int) else parse_duration(str(value))
