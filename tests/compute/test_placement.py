"""The placement rule on its own: a pure function of sizes, free room and warm sites."""

from __future__ import annotations

from lakecache.compute.model import Resources, TemplateRecord
from lakecache.compute.placement import plan_placement

ONE = Resources(1000, 10**9)


def _tpl(tid: int, site: str, size: Resources = ONE) -> TemplateRecord:
    return TemplateRecord(tid, f"{site}-small", f"{site}-pool", tid, site, "local", size, None)


TEMPLATES = [_tpl(1, "onprem"), _tpl(2, "cloud"), _tpl(3, "edge")]


def test_order_takes_the_first_with_room_and_says_why_not_the_others() -> None:
    free = {1: Resources(), 2: ONE, 3: ONE}
    chosen, verdicts = plan_placement(ONE, TEMPLATES, free, policy="order", warm_sites=None)
    assert chosen is not None and chosen.site == "cloud"
    assert [v.verdict for v in verdicts] == ["full", "chosen", "lower in order"]
    assert "onprem-pool has cpu 0" in verdicts[0].detail


def test_a_job_larger_than_a_template_is_too_small_there() -> None:
    big = Resources(2000, 10**9)
    tpls = [_tpl(1, "onprem"), _tpl(2, "cloud", Resources(4000, 10**10))]
    chosen, verdicts = plan_placement(
        big,
        tpls,
        {1: Resources(8000, 10**11), 2: Resources(8000, 10**11)},
        policy="order",
        warm_sites=None,
    )
    assert chosen is not None and chosen.site == "cloud"
    assert verdicts[0].verdict == "too small" and "cpu 2" in verdicts[0].detail


def test_data_policy_prefers_the_warm_site_and_marks_the_cold_ones() -> None:
    free = {1: ONE, 2: ONE, 3: ONE}
    chosen, verdicts = plan_placement(
        ONE, TEMPLATES, free, policy="data", warm_sites=frozenset({"edge"})
    )
    assert chosen is not None and chosen.site == "edge"
    assert [v.verdict for v in verdicts] == ["no cache", "no cache", "chosen"]


def test_order_policy_passes_over_a_warm_cache_and_says_it_was_the_policy() -> None:
    free = {1: ONE, 2: ONE, 3: ONE}
    chosen, verdicts = plan_placement(
        ONE, TEMPLATES, free, policy="order", warm_sites=frozenset({"cloud"})
    )
    assert chosen is not None and chosen.site == "onprem"
    assert [v.verdict for v in verdicts] == ["chosen", "policy", "lower in order"]


def test_data_policy_without_a_warm_site_with_room_takes_the_first_and_fills_there() -> None:
    free = {1: ONE, 2: ONE, 3: Resources()}
    chosen, verdicts = plan_placement(
        ONE, TEMPLATES, free, policy="data", warm_sites=frozenset({"edge"})
    )
    assert chosen is not None and chosen.site == "onprem"
    assert verdicts[0].verdict == "chosen" and "filled" in verdicts[0].detail
    assert [v.verdict for v in verdicts[1:]] == ["no cache", "full"]


def test_nothing_with_room_chooses_nothing() -> None:
    chosen, verdicts = plan_placement(ONE, TEMPLATES, {}, policy="order", warm_sites=None)
    assert chosen is None and {v.verdict for v in verdicts} == {"full"}


def test_named_resources_count() -> None:
    ssd = Resources(1000, 10**9, 0, {"ssd": 1})
    tpls = [_tpl(1, "onprem", ssd)]
    chosen, _ = plan_placement(
        ssd, tpls, {1: Resources(8000, 10**11, 0, {})}, policy="order", warm_sites=None
    )
    assert chosen is None
    chosen, _ = plan_placement(
        ssd, tpls, {1: Resources(8000, 10**11, 0, {"ssd": 1})}, policy="order", warm_sites=None
    )
    assert chosen is not None
