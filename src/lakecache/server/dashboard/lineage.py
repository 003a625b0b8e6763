"""The lineage graph of a dataset's history, laid out in lanes, one row per commit.

A pure function of the commits (newest first, each with its parents), like
``git log --graph``: every commit gets a lane (column); a lane is reserved for
a parent from the row of its first child down to the parent's own row, so
lines never cross a node. Each row says which line segments cross it, with
ends at the row's top edge, its bottom edge, or its node. The template draws
a row as one small SVG whose lines run to ``y=0`` and ``y=100%``, so rows can
be of any height (a long message wraps on a phone) and still join up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """A line across one row, from lane ``start`` to lane ``end``.

    ``from_top``: it starts at the row's top edge (else at the node);
    ``to_bottom``: it ends at the row's bottom edge (else at the node).
    """

    start: int
    end: int
    from_top: bool
    to_bottom: bool


@dataclass(frozen=True)
class GraphRow:
    commit: str
    lane: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Graph:
    rows: tuple[GraphRow, ...]
    #: Lanes used at the widest row (at least 1).
    width: int


def layout(commits: Iterable[tuple[str, Sequence[str]]]) -> Graph:
    """Lay out ``(commit id, parent ids)`` pairs, newest first (children before parents).

    Parents not in the list (an older page) keep their lane to the bottom.
    Cost: O(rows x lanes).
    """
    lanes: list[str | None] = []
    rows: list[GraphRow] = []
    width = 1
    for cid, parents in commits:
        mine = [i for i, expected in enumerate(lanes) if expected == cid]
        col = mine[0] if mine else _free(lanes)
        segments = [Segment(i, col, True, False) for i in mine]
        segments += [
            Segment(i, i, True, True)
            for i, expected in enumerate(lanes)
            if expected is not None and expected != cid
        ]
        out = list(lanes)
        for i in mine:
            out[i] = None
        out[col] = None
        for k, parent in enumerate(dict.fromkeys(parents)):  # a parent once, in order
            if parent in out:
                target = out.index(parent)  # another child already leads to it: join that lane
            elif k == 0:
                target = col
            else:
                target = _free(out)
            out[target] = parent
            segments.append(Segment(col, target, False, True))
        while out and out[-1] is None:
            out.pop()
        width = max(width, len(lanes), len(out), col + 1)
        lanes = out
        rows.append(GraphRow(cid, col, tuple(segments)))
    return Graph(tuple(rows), width)


def _free(lanes: list[str | None]) -> int:
    """The first free lane, appending one when every lane is taken."""
    for i, expected in enumerate(lanes):
        if expected is None:
            return i
    lanes.append(None)
    return len(lanes) - 1
