"""What the compute store's modules share: sizes to and from rows, name checks, and the
signal that a compare-and-swap lost its race."""

from __future__ import annotations

import json
from typing import Any

from lakecache.catalog.names import check_dataset_name
from lakecache.compute.model import Resources
from lakecache.errors import UserError

NAME_HINT = "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-'."


class LostRace(Exception):
    """Another scheduler changed the rows this transaction expected; plan again."""


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid template or queue name, else UserError naming the rule."""
    try:
        return check_dataset_name(name)
    except UserError:
        raise UserError(f"invalid {kind} name {name!r}", hint=NAME_HINT) from None


def size_of(row: Any, prefix: str = "") -> Resources:
    """The size held in a row's ``<prefix>cpu_milli``, ``memory``, ``gpu``, ``resources``."""
    return Resources(
        int(row[f"{prefix}cpu_milli"]),
        int(row[f"{prefix}memory"]),
        int(row[f"{prefix}gpu"]),
        json.loads(row[f"{prefix}resources"] or "{}"),
    )


def size_values(size: Resources, prefix: str = "") -> dict[str, Any]:
    """The column values that hold ``size`` (see :func:`size_of`)."""
    return {
        f"{prefix}cpu_milli": size.cpu_milli,
        f"{prefix}memory": size.memory,
        f"{prefix}gpu": size.gpu,
        f"{prefix}resources": size.named_json(),
    }
