"""Text and CSV files preview on their page, escaped; the diff page says how it lists changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from dashboard.conftest import LABELS_CSV
from dashboard.drive import DATASET, Dash, log_in, shot


def test_csv_shows_as_a_table_and_text_as_lines(page: Any, dash: Dash, artifacts: Path) -> None:
    log_in(page)
    page.goto("/datasets/notes/tree/latest/labels.csv")
    table = page.locator("#preview table.csv")
    expect(table.locator("thead th")).to_have_text(["Image Index", "Finding Labels", "Patient ID"])
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("tbody tr").nth(0).locator("td").nth(1)).to_have_text(
        "Cardiomegaly|Emphysema"
    )
    # Markup in a cell is text, not a script.
    expect(table.locator("tbody tr").nth(2).locator("td").nth(1)).to_have_text(
        "<script>alert(1)</script>"
    )
    assert page.locator("#preview script").count() == 0
    shot(page, artifacts, "13-csv-preview")

    page.goto("/datasets/notes/tree/latest/readme.txt")
    expect(page.locator("pre#preview")).to_have_text("just notes")

    # A PNG keeps its image preview; a binary type says what can be previewed.
    assert LABELS_CSV.count(b"\n") == 4


def test_diff_heading_says_how_it_is_grouped(page: Any, dash: Dash) -> None:
    log_in(page)
    page.goto(f"/datasets/{DATASET}/diff?from={dash.commits['v1']}&to={dash.commits['v2']}")
    expect(page.locator("#diff-grouping")).to_contain_text("sorted by path")
