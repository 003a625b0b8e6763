"""The lineage graph's layout: lanes for branches and merges, lines that join row to row."""

from __future__ import annotations

from lakecache.server.dashboard.lineage import Graph, Segment, layout


def _check_joins(g: Graph) -> None:
    """Every line leaving a row's bottom in lane i enters the next row's top in lane i."""
    for upper, lower in zip(g.rows, g.rows[1:], strict=False):
        down = sorted({s.end for s in upper.segments if s.to_bottom})
        up = sorted({s.start for s in lower.segments if s.from_top})
        assert down == up, (upper.commit, lower.commit, down, up)


def test_a_straight_history_is_one_lane() -> None:
    g = layout([("c", ["b"]), ("b", ["a"]), ("a", [])])
    assert g.width == 1
    assert [r.lane for r in g.rows] == [0, 0, 0]
    assert g.rows[0].segments == (Segment(0, 0, False, True),)
    assert g.rows[1].segments == (Segment(0, 0, True, False), Segment(0, 0, False, True))
    assert g.rows[2].segments == (Segment(0, 0, True, False),)
    _check_joins(g)


def test_a_merge_opens_a_lane_for_its_second_parent_and_closes_it_at_the_fork() -> None:
    #   m         merge of b and x
    #   |\
    #   b |
    #   | x
    #   |/
    #   a
    g = layout([("m", ["b", "x"]), ("b", ["a"]), ("x", ["a"]), ("a", [])])
    assert [r.lane for r in g.rows] == [0, 0, 1, 0]
    assert g.width == 2
    assert Segment(0, 1, False, True) in g.rows[0].segments  # m -> x, diagonal to lane 1
    assert Segment(1, 1, True, True) in g.rows[1].segments  # x's lane passes b
    assert Segment(1, 0, False, True) in g.rows[2].segments  # x -> a joins lane 0
    assert g.rows[3].segments == (Segment(0, 0, True, False),)
    _check_joins(g)


def test_two_heads_and_a_parent_outside_the_list() -> None:
    # Two branch tips (t1, t2) over one base; the base's parent is on an older page.
    g = layout([("t1", ["base"]), ("t2", ["base"]), ("base", ["older"])])
    assert [r.lane for r in g.rows] == [0, 1, 0]
    # t2's line joins the lane already reserved for base by t1
    assert Segment(1, 0, False, True) in g.rows[1].segments
    assert g.rows[2].segments[-1] == Segment(0, 0, False, True)  # on to the older page
    _check_joins(g)


def test_a_freed_lane_is_reused() -> None:
    g = layout(
        [
            ("m2", ["m1", "y"]),
            ("y", ["m1"]),
            ("m1", ["p", "x"]),
            ("x", ["p"]),
            ("p", []),
        ]
    )
    assert g.width == 2
    assert [r.lane for r in g.rows] == [0, 1, 0, 1, 0]
    _check_joins(g)


def test_empty_history() -> None:
    assert layout([]) == Graph((), 1)
