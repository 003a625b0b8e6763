"""Click parameter types for sizes ('500GB', '1.5TiB') and durations ('1d', '12h', '90s').

The rules are :mod:`lakecache.units`'s, shared with the server's config file.
"""

from __future__ import annotations

import click

from lakecache.errors import UserError
from lakecache.units import parse_duration as _parse_duration
from lakecache.units import parse_size as _parse_size


def parse_size(text: str) -> int:
    """Bytes from a size typed on the command line; a usage error names the forms."""
    try:
        return _parse_size(text)
    except UserError as exc:
        raise click.BadParameter(
            f"{text!r} is not a size; write e.g. 500GB, 2TiB or 1000000"
        ) from exc


def parse_duration(text: str) -> int:
    """Seconds from a duration typed on the command line; a usage error names the forms."""
    try:
        return _parse_duration(text)
    except UserError as exc:
        raise click.BadParameter(
            f"{text!r} is not a duration; write e.g. 1d, 12h, 30m or 90s"
        ) from exc


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
