"""The dashboard's live updates show sizes and spans exactly as the server and CLI do."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lakecache.cli.output import human_bytes, human_duration
from lakecache.server.dashboard.render import STATIC_DIR
from lakecache.units import format_duration, format_size

SIZES = [0, 1, 999, 1000, 1234, 99_500, 123_456, 999_999, 49_800_000, 2_140_000_000, 7 * 10**15]
SPANS = [0, 59, 60, 3599, 3600, 3660, 86_399, 86_400, 90_000, 10**7]


def _js_function(name: str) -> str:
    source = (STATIC_DIR / "dashboard.js").read_text()
    m = re.search(rf"\n(\s*)function {name}\(.*?\n\1\}}", source, re.S)
    assert m, f"no function {name} in dashboard.js"
    return m.group(0)


def test_cli_and_server_share_one_rule() -> None:
    for n in SIZES:
        assert human_bytes(n) == format_size(n)
    for s in SPANS:
        assert human_duration(s) == format_duration(s)


@pytest.mark.parametrize(
    "name, python, values",
    [
        ("size", format_size, SIZES),
        ("duration", format_duration, SPANS),
    ],
)
def test_the_script_agrees_with_python(
    browser: Any, name: str, python: Any, values: list[int]
) -> None:
    page = browser.new_page()
    try:
        shown = page.evaluate(
            f"(values) => {{ {_js_function(name)}; return values.map({name}); }}", values
        )
    finally:
        page.close()
    assert shown == [python(v) for v in values]
