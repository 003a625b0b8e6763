"""The tracking pages in real headless Chromium: runs logged through the SDK, then looked at.

Runs are logged with ``lakecache.tracking.start`` through the live server of
``conftest.dash`` with an API token, as a user's training script does: three
runs of a small sweep, with a loss long enough to be downsampled, a metric
that ends in NaN, real system metrics from the 1 s sampler, an image and a
text artifact, and a read of a dataset commit; a log and a diff are added as
a job's runner adds them, and 120 more runs for paging. The plots are uPlot's
canvases, served by the server itself under the strict CSP (the ``page``
fixture fails a test on any CSP violation or script error).
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard.drive import ADMIN_PASSWORD, DATASET, PASSWORD, Dash, image_loaded, log_in, shot
from lakecache import tracking
from lakecache.fsspec import LakecacheFileSystem
from lakecache.server.dashboard import assets
from lakecache.settings import Settings
from lakecache.tracking.model import Batch
from lakecache.tracking.objects import append_log, put_bytes
from lakecache.tracking.store import TrackingStore

pytestmark = pytest.mark.usefixtures("browser")

EXPERIMENT = "resnet-sweep"
PAGING_EXPERIMENT = "many-runs"
STEPS = 3000  # past the 1,000 buckets a plot asks for: the server downsamples
NAN_STEP = 1234
DIFF = b"--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n-lr = 0.1\n+lr = args.lr\n"
LOG = b"epoch 1 loss 0.91\nepoch 2 loss 0.52\nwarning: <b>slow</b> data\nepoch 3 loss 0.33\n"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


@dataclass
class Tracked:
    runs: dict[str, int]
    experiment_id: int
    paging_id: int
    png: bytes


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 60, 40)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tracked(dash: Dash, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    if not assets.installed(assets.UPLOT):
        assets.fetch(assets.UPLOT)  # what `make venv` does; a no-op once it is there
    hub = dash.plane.hub
    store = TrackingStore(hub.catalog)
    # The SDK as a user runs it: through the server, with an API token (`lakecache login`).
    with httpx.Client(base_url=dash.url, timeout=30) as http:
        created = http.post(
            "/api/v1/auth/token", json={"name": "admin", "password": ADMIN_PASSWORD}
        )
        created.raise_for_status()
    client = Settings(
        home=tmp_path_factory.mktemp("client-home"),
        server_url=dash.url,
        token=created.json()["token"],
        workers=2,
    )
    folder = tmp_path_factory.mktemp("artifacts")
    png = _png()
    (folder / "confusion.png").write_bytes(png)
    (folder / "notes.txt").write_text("best epoch: 3\n")
    runs: dict[str, int] = {}
    sweep = [("lr-0.1", "0.1", "50"), ("lr-0.01", "0.01", "50"), ("deep", "0.01", "101")]
    for i, (name, lr, depth) in enumerate(sweep):
        first = i == 0
        with tracking.start(
            EXPERIMENT,
            name,
            params={"lr": lr, "depth": depth, "optimizer": "sgd"},
            system_metrics=first,
            settings=client,
        ) as run:
            started = time.monotonic()
            for step in range(STEPS):
                loss = (1 + i) / (1 + step / 100)
                run.log_metric("loss", math.nan if first and step == NAN_STEP else loss, step=step)
                if step % 100 == 0:
                    run.log_metric("accuracy", 1 - loss / 3, step=step)
                    # Few enough points to be drawn one by one: a NaN among them is a gap.
                    bad = first and step == 1500
                    run.log_metric("val_loss", math.nan if bad else loss * 1.1, step=step)
            run.log_metric("grad_norm", math.nan if first else 1.5, step=STEPS)
            if first:
                run.log_artifact(folder / "confusion.png", "plots/confusion.png")
                run.log_artifact(folder / "notes.txt")
                # A real read of a dataset commit (streamed): the run records it.
                fs = LakecacheFileSystem(
                    settings=hub.settings, cached=False, skip_instance_cache=True
                )
                assert fs.ls(f"{DATASET}@v2/", detail=False)
                fs.invalidate_cache()
                # The 1 s sampler takes a few samples of the machine.
                time.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
        runs[name] = run.id
    # What a job's runner adds: the log and the diff of the checkout (as on a dirty tree).
    first_id = runs["lr-0.1"]
    append_log(store, hub.lake, first_id, "stdout", LOG)
    code = dict(store.get_run(first_id).code)
    code.update(kind="git", commit="0" * 40, branch="main", dirty=True)
    code["diff_digest"] = put_bytes(hub.lake, DIFF)
    store.update_run(first_id, code=code)
    # A larger experiment for paging and sorting: 120 runs, logged in batches.
    for n in range(120):
        record = store.create_run(PAGING_EXPERIMENT, user="tester", name=f"trial-{n:03d}")
        store.log_batch(
            record.id,
            Batch.of(params={"seed": str(n)}, metrics=[("score", float(n % 17), 0, 0)]),
        )
        store.end_run(record.id)
    # Two tasks of a flow run, in the flow's experiment: the flow run's own runs table.
    for task in ("prepare", "train"):
        record = store.create_run("flows", user="admin", name=task, flow_run="77", flow_task=task)
        store.end_run(record.id)
    experiment_id = store.get_experiment(EXPERIMENT).id
    paging_id = store.get_experiment(PAGING_EXPERIMENT).id
    yield Tracked(runs, experiment_id, paging_id, png)


@contextmanager
def _client(
    dash: Dash, name: str = "admin", password: str = ADMIN_PASSWORD
) -> Iterator[httpx.Client]:
    """An HTTP client with a session of ``name`` (as the browser has)."""
    with httpx.Client(base_url=dash.url, timeout=30) as client:
        client.post("/api/v1/auth/login", json={"name": name, "password": password})
        yield client


def _row_names(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#runs-table tbody th a").all_inner_texts()]


def test_runs_table_sorts_filters_pages_and_chooses_columns(
    page: Any, dash: Dash, tracked: Tracked, artifacts: Path
) -> None:
    log_in(page)
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    page.get_by_role("link", name=EXPERIMENT, exact=True).click()
    expect(page.locator("#runs-count")).to_have_text("Runs 1–3 of 3")
    # Default columns: the metrics, then the params of the page's runs.
    headers = page.locator("#runs-table thead th[data-column]")
    expect(headers).to_have_count(7)
    expect(page.locator('th[data-column="metric:grad_norm"]')).to_be_visible()
    # NaN is shown as such, in red.
    nan_cell = page.locator(
        f'tr[data-run="{tracked.runs["lr-0.1"]}"] td[data-column="metric:grad_norm"]'
    )
    expect(nan_cell).to_have_text("NaN")

    # Sort by the latest loss, ascending, then descending (the header flips the order).
    page.locator('th[data-column="metric:loss"] a').click()
    expect(page.locator('th[data-column="metric:loss"]')).to_have_attribute(
        "aria-sort", "descending"
    )
    assert _row_names(page) == ["deep", "lr-0.01", "lr-0.1"]
    page.locator('th[data-column="metric:loss"] a').click()
    expect(page.locator('th[data-column="metric:loss"]')).to_have_attribute(
        "aria-sort", "ascending"
    )
    assert _row_names(page) == ["lr-0.1", "lr-0.01", "deep"]

    # Filter by a param and a metric.
    page.get_by_label("Filter runs").fill("param:lr = 0.01 and metric:loss < 0.08")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#runs-count")).to_have_text("Runs 1–1 of 1 matching the filter")
    assert _row_names(page) == ["lr-0.01"]
    # A filter it cannot read says why, and what to write.
    page.get_by_label("Filter runs").fill("metric:loss < fast")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#filter-error")).to_contain_text("not a number")
    expect(page.locator("#filter-error")).to_contain_text("FIELD OP VALUE")

    # Choose columns: only the depth param.
    page.get_by_role("link", name="Reset").click()
    page.locator("#columns summary").click()
    for box in page.locator("#columns input[type=checkbox]").all():
        if box.is_checked():
            box.uncheck()
    page.get_by_label(re.compile(r"param\s+depth")).check()
    page.get_by_role("button", name="Apply").click()
    expect(headers).to_have_count(1)
    expect(headers).to_have_text(re.compile(r"depth"))
    assert sorted(page.locator('td[data-column="param:depth"]').all_inner_texts()) == [
        "101",
        "50",
        "50",
    ]
    shot(page, artifacts, "tracking-01-runs")

    # Server-side paging: 120 runs, 50 a page, sorted by a param (text order).
    page.goto(f"/experiments/{tracked.paging_id}?sort=param:seed&order=asc")
    expect(page.locator("#runs-count")).to_have_text("Runs 1–50 of 120")
    expect(page.locator("#runs-table tbody tr")).to_have_count(50)
    assert _row_names(page)[:3] == ["trial-000", "trial-001", "trial-010"]
    page.get_by_role("link", name="Next 50").click()
    expect(page.locator("#runs-count")).to_have_text("Runs 51–100 of 120")
    page.get_by_role("link", name="Next 50").click()
    expect(page.locator("#runs-count")).to_have_text("Runs 101–120 of 120")
    expect(page.get_by_role("link", name="Next 50")).to_have_count(0)
    page.get_by_role("link", name="Previous 50").click()
    expect(page.locator("#runs-count")).to_have_text("Runs 51–100 of 120")


def _drawn(page: Any, selector: str) -> Any:
    figure = page.locator(selector)
    figure.scroll_into_view_if_needed()
    expect(figure).to_have_attribute("data-state", "drawn", timeout=20_000)
    return figure


def test_run_page_plots_zoom_csv_logs_artifacts_inputs_and_code(
    page: Any, dash: Dash, tracked: Tracked, artifacts: Path
) -> None:
    run_id = tracked.runs["lr-0.1"]
    log_in(page)
    page.goto(f"/runs/{run_id}")
    expect(page.get_by_role("heading", name=re.compile("lr-0.1"), level=1)).to_be_visible()
    expect(page.locator("#params")).to_contain_text("optimizer")

    # The loss plot: uPlot's canvas, downsampled by the server (3,000 points in buckets).
    loss = _drawn(page, 'figure.chart[data-title="loss"]')
    expect(loss.locator("canvas")).to_have_count(1)
    assert loss.locator("canvas").bounding_box()["width"] > 200
    assert loss.get_attribute("data-points") == str(STEPS)
    expect(loss.locator('[data-field="chart-note"]')).to_contain_text("drawn as 1,000 buckets")
    val_loss = _drawn(page, 'figure.chart[data-title="val_loss"]')
    expect(val_loss.locator('[data-field="chart-note"]')).to_contain_text(
        "30 points; 1 value NaN or infinite, not drawn"
    )
    assert val_loss.get_attribute("data-not-finite") == "1"
    # The canvas holds drawn pixels, not a blank rectangle.
    inked = page.evaluate(
        """sel => { const c = document.querySelector(sel + ' canvas');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                    return n; }""",
        'figure.chart[data-title="loss"]',
    )
    assert inked > 500
    # NaN is shown as such in the latest values.
    expect(page.locator('tr[data-metric="grad_norm"] [data-field="latest"]')).to_have_text("NaN")

    # Zoom: drag across the middle of the plot; the x range shrinks, "Reset zoom" brings it back.
    full = (float(loss.get_attribute("data-x-min")), float(loss.get_attribute("data-x-max")))
    assert full[0] == 0 and full[1] > STEPS * 0.9
    over = loss.locator(".u-over").bounding_box()
    y = over["y"] + over["height"] / 2
    page.mouse.move(over["x"] + over["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.5, y, steps=8)
    page.mouse.up()
    expect(loss).to_have_attribute("data-zoomed", "1")
    zoomed = (float(loss.get_attribute("data-x-min")), float(loss.get_attribute("data-x-max")))
    assert full[0] < zoomed[0] < zoomed[1] < full[1]
    assert zoomed[1] - zoomed[0] < (full[1] - full[0]) * 0.3
    # The zoomed range comes back from the server in full detail: every step, not buckets.
    expect(loss).to_have_attribute("data-detail", "range")
    shown = page.evaluate(
        """sel => { const u = document.querySelector(sel)._chart;
                    const xs = u.data[0], lo = u.scales.x.min, hi = u.scales.x.max;
                    return xs.filter(x => x >= lo && x <= hi); }""",
        'figure.chart[data-title="loss"]',
    )
    assert len(shown) > 100
    assert all(b - a == 1 for a, b in zip(shown, shown[1:], strict=False))
    shot(page, artifacts, "tracking-02-run-zoomed")
    loss.get_by_role("button", name="Reset zoom").click()
    expect(loss).to_have_attribute("data-zoomed", "0")
    assert float(loss.get_attribute("data-x-max")) == full[1]
    expect(loss).to_have_attribute("data-detail", "")
    buckets = page.evaluate(
        "sel => document.querySelector(sel)._chart.data[0].length",
        'figure.chart[data-title="loss"]',
    )
    assert buckets == 1000

    # The full data as CSV: every point, NaN included.
    with page.expect_download() as info:
        loss.get_by_role("link", name="CSV").click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0] == ["step", "timestamp_ms", "value"]
    assert len(rows) == STEPS + 1
    assert rows[1 + NAN_STEP][0] == str(NAN_STEP) and rows[1 + NAN_STEP][2] == "NaN"
    assert float(rows[2][2]) == pytest.approx(1 / 1.01)

    # System metrics from the sampler, plotted over time.
    system = page.locator("#system-charts figure.chart")
    assert system.count() >= 2
    first_system = _drawn(page, "#system-charts figure.chart >> nth=0")
    expect(first_system.locator("canvas")).to_have_count(1)

    # Logs: the tail, then a search that marks what it found; markup stays text.
    expect(page.locator("#log")).to_contain_text("warning: <b>slow</b> data")
    page.get_by_label("Search the log").fill("LOSS")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#log-matches")).to_contain_text("3 lines hold")
    expect(page.locator("#log mark")).to_have_count(3)
    expect(page.locator("#log .line-no").first).to_have_text("1")

    # Artifacts: the image previews, both download with their bytes.
    expect(page.locator("#artifacts tbody tr")).to_have_count(2)
    assert image_loaded(page, "img.artifact-preview")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download plots/confusion.png").click()
    assert Path(info.value.path()).read_bytes() == tracked.png

    # The dataset commit read, linked to its commit page.
    commit = dash.commits["v2"]
    link = page.locator("#inputs").get_by_role("link", name=commit[:12])
    expect(link).to_have_attribute("href", f"/datasets/{DATASET}/tree/{commit}")
    expect(page.locator("#inputs")).to_contain_text("stream")

    # Code version and its diff, coloured by line.
    expect(page.locator("#code")).to_contain_text("main")
    expect(page.locator("#code-diff .diff-add")).to_have_text(["+lr = args.lr"])
    expect(page.locator("#code-diff .diff-del")).to_have_text(["-lr = 0.1"])
    shot(page, artifacts, "tracking-03-run")
    link.click()
    expect(page).to_have_url(re.compile(f"/datasets/{DATASET}/tree/{commit}$"))


def test_compare_overlays_plots_and_marks_param_differences(
    page: Any, dash: Dash, tracked: Tracked, artifacts: Path
) -> None:
    log_in(page)
    page.goto(f"/experiments/{tracked.experiment_id}")
    button = page.locator('[data-field="compare-button"]')
    expect(button).to_be_disabled()
    for name in ("lr-0.1", "lr-0.01", "deep"):
        page.get_by_label(f"Select {name} to compare").check()
    expect(page.locator('[data-field="compare-count"]')).to_have_text("3 runs ticked.")
    button.click()
    expect(page.get_by_role("heading", name="Compare 3 runs")).to_be_visible()

    rows = page.locator("#compare-params tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#compare-params tr.differs")).to_have_count(2)
    expect(page.locator('#compare-params tr[data-key="lr"]')).to_have_class("differs")
    expect(page.locator('#compare-params tr[data-key="depth"]')).to_have_class("differs")
    expect(page.locator('#compare-params tr[data-key="optimizer"]')).to_have_class("same")
    expect(page.locator('#compare-params tr[data-key="depth"] .differs-mark')).to_be_visible()
    # Marked so that it shows: the row's background differs from an unmarked row's.
    backgrounds = page.evaluate(
        """() => ['lr', 'optimizer'].map(k => getComputedStyle(
            document.querySelector(`#compare-params tr[data-key="${k}"] td`)).backgroundColor)"""
    )
    assert backgrounds[0] != backgrounds[1]
    nan = page.locator('#compare-metrics tr[data-key="grad_norm"] td.not-finite')
    expect(nan).to_have_text("NaN")

    # One plot per metric, the three runs overlaid on one canvas.
    loss = _drawn(page, 'figure.chart[data-title="loss"]')
    expect(loss.locator("canvas")).to_have_count(1)
    labels = page.evaluate(
        """() => document.querySelector('figure.chart[data-title="loss"]')
                     ._chart.series.slice(1).map(s => s.label)"""
    )
    assert sorted(labels) == ["deep", "lr-0.01", "lr-0.1"]
    assert loss.get_attribute("data-points") == str(3 * STEPS)
    shot(page, artifacts, "tracking-04-compare")

    page.get_by_role("link", name="Show only differences").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#param-differences")).to_contain_text("2 params differ")


def test_compare_takes_two_to_twenty_runs(
    page: Any, dash: Dash, tracked: Tracked, console: list[str]
) -> None:
    log_in(page)
    response = page.goto(f"/runs/compare?id={tracked.runs['deep']}")
    assert response is not None and response.status == 400
    expect(page.locator("main")).to_contain_text("compare takes 2 to 20 runs, not 1")
    expect(page.locator("main")).to_contain_text("Tick between 2 and 20 runs")
    console.clear()  # Chromium logs the page's own 400


def test_runs_are_hidden_from_who_may_not_see_them(
    page: Any, dash: Dash, tracked: Tracked, console: list[str]
) -> None:
    run_id = tracked.runs["lr-0.1"]
    # rita reads the dataset, but the runs are admin's, in admin's experiment.
    with _client(dash, "rita", PASSWORD) as rita:
        for path in (
            f"/runs/{run_id}/series?key=loss",
            f"/runs/{run_id}/series.csv?key=loss",
            f"/runs/{run_id}/artifacts/notes.txt",
            f"/runs/{run_id}/logs/stdout",
            f"/runs/{run_id}/code.diff",
        ):
            r = rita.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found"
        # The same answer as for a run that does not exist.
        missing = rita.get("/runs/999999/series?key=loss")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert EXPERIMENT not in rita.get("/experiments").text
    with httpx.Client(base_url=dash.url, timeout=30) as anonymous:
        assert anonymous.get(f"/runs/{run_id}/series?key=loss").status_code == 401
    # In the browser: the same page as for a run that does not exist.
    log_in(page, "rita", PASSWORD)
    response = page.goto(f"/runs/{run_id}")
    assert response is not None and response.status == 404
    expect(page.locator("main")).to_contain_text(f"no run {run_id}")
    console.clear()  # the 404 of the page itself is logged by Chromium
    with _client(dash) as admin:
        assert admin.get(f"/runs/{run_id}/series?key=loss").status_code == 200
        served = admin.get(f"/runs/{run_id}/artifacts/notes.txt")
        assert served.headers["content-disposition"].startswith("attachment")
        assert served.headers["x-content-type-options"] == "nosniff"


def test_the_chart_library_is_served_by_the_server(dash: Dash, tracked: Tracked) -> None:
    with _client(dash) as admin:
        html = admin.get(f"/runs/{tracked.runs['deep']}").text
        script = re.search(
            r'<script src="(/static/vendor/uplot/uPlot\.iife\.min\.js\?v=\w+)"', html
        )
        assert script is not None, "the run page loads uPlot from this server"
        served = admin.get(script.group(1))
        assert served.status_code == 200 and "uPlot" in served.text[:2000]
        assert "javascript" in served.headers["content-type"]
        assert admin.get("/static/vendor/uplot/LICENSE").text.startswith("The MIT License")
    assert "cdn" not in html.lower()


def test_a_flow_runs_table_lists_its_tasks_runs(dash: Dash, tracked: Tracked) -> None:
    with _client(dash) as admin:
        html = admin.get("/runs?flow_run=77").text
        assert "Runs of flow run 77" in html and "Runs 1–2 of 2" in html
        assert html.count('<span class="sub"> · train</span>') == 1
        sorted_page = admin.get("/runs?flow_run=77&sort=name&order=asc").text
        assert sorted_page.index(">prepare</a>") < sorted_page.index(">train</a>")
        assert "Runs 1–" not in admin.get("/runs?flow_run=78").text
