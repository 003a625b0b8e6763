"""The tracking pages: experiments, a table of runs, one run, and runs side by side.

::

    /experiments                     the experiments the viewer may see, with their run counts
    /experiments/{id}                the runs table of one experiment
    /runs?flow_run=ID | ?job=ID      the same table over a flow run's (or a job's) runs
    /runs/{id}                       a run: params, metric and system plots, logs with search,
                                     artifacts (download, image preview), datasets read,
                                     code version and diff, environment
    /runs/compare?id=1&id=2...       up to 20 runs: plots overlaid, param differences marked

The runs table is paged, sorted and filtered by the database
(:meth:`~lakecache.tracking.store.TrackingStore.list_runs`): a page of 50 runs
costs the same whether the experiment holds 50 runs or 100,000. Sorting,
filtering and the choice of columns are plain query parameters, so every view
of the table is a link, and the table works without JavaScript.

Plots are drawn in the browser by uPlot (:mod:`lakecache.server.dashboard.assets`)
from the tracking API's series, which the server downsamples (min and max per
bucket of steps); each plot links to the full data as CSV. Who may see a run
is decided by the tracking API's own checks (``visible_run``, ``visible_experiment``
of :mod:`lakecache.server.routes.tracking`): a run the viewer may not see is the
same 404 as a run that does not exist.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lakecache.errors import LakecacheError, NotFoundError, UserError
from lakecache.server.auth import Plane, User, visible_datasets
from lakecache.server.dashboard import assets
from lakecache.server.dashboard.pages import Viewer, _render
from lakecache.server.dashboard.render import static_url
from lakecache.server.routes.tracking import (
    store_of,
    visible_experiment,
    visible_run,
    visible_runs,
)
from lakecache.tracking.model import RunFilter, RunRecord, RunSummary
from lakecache.tracking.objects import read_artifact, read_log, read_object
from lakecache.tracking.store import TrackingStore
from lakecache.tracking.tables import KEY_MAX

router = APIRouter(include_in_schema=False)

#: Runs per page of the runs table.
RUNS_PAGE = 50
#: Columns shown when none are chosen: this many metrics, then this many params.
DEFAULT_METRIC_COLUMNS = 6
DEFAULT_PARAM_COLUMNS = 6
#: The most runs one compare page takes.
COMPARE_MAX = 20
#: Plots drawn on one page (a run can log 100,000 keys): the rest are one click away.
PLOTS_MAX = 24
#: Rows of latest metric values listed on a run page before "show more".
METRICS_LISTED = 200
#: What a run page shows of a log: its tail, up to this many bytes.
LOG_TAIL = 256 * 1024
#: A log search reads at most this much of the log, and lists at most this many lines.
LOG_SEARCH_BYTES = 64 * 1024 * 1024
LOG_SEARCH_LINES = 500
#: The longest code diff shown inline (the rest: download).
DIFF_SHOWN = 1024 * 1024
#: Buckets of a plotted series: about one per pixel of a wide plot.
PLOT_BUCKETS = 1000
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


RunId = Annotated[int, Path(ge=1, le=2**62)]
_FILTER_PART = re.compile(r"\s+and\s+|\s*;\s*|\n", re.IGNORECASE)
_FILTER = re.compile(r"^\s*(?P<field>.+?)\s*(?P<op><=|>=|!=|=|<|>|~)\s*(?P<value>.*?)\s*$")


# --- plumbing -------------------------------------------------------------------------------


def _store(v: Viewer) -> TrackingStore:
    return store_of(v.plane)


def _visible_to(v: Viewer) -> str | None:
    """The user whose runs a listing is limited to; None for an org admin (all runs)."""
    return None if v.principal.org_admin else v.principal.user.name


def _run(v: Viewer, run_id: int) -> RunRecord:
    """The run, or the same NotFoundError whether it is missing or not the viewer's."""
    return visible_run(v.plane, v.principal, run_id)


def metric_text(value: float | None) -> str:
    """A metric value for people: 6 significant digits; NaN and infinities by name."""
    if value is None:
        return "–"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.6g}"


def series_url(run_id: int, key: str, *, system: bool = False, csv: bool = False) -> str:
    """Where a plot gets a series (JSON, downsampled) or all its points (CSV)."""
    query = urlencode({"key": key, "kind": "system" if system else "metric"})
    return f"/runs/{run_id}/series{'.csv' if csv else ''}?{query}"


def chart_assets() -> dict[str, str] | None:
    """The chart library's URLs, or None when it was not fetched (the plots then say so)."""
    if not assets.installed(assets.UPLOT):
        return None
    return {
        "script": static_url("vendor/uplot/uPlot.iife.min.js"),
        "style": static_url("vendor/uplot/uPlot.min.css"),
    }


def _base(section_title: str, v: Viewer) -> dict[str, Any]:
    return {
        "title": section_title,
        "section": "runs",
        "charts": chart_assets(),
        "charts_fetch": assets.FETCH_COMMAND,
        "metric_text": metric_text,
    }


# --- filters, sorting, columns -----------------------------------------------------------------


def parse_filters(text: str) -> list[RunFilter]:
    """Conditions of the runs table's filter box, joined by ``and``, ``;`` or new lines.

    Each is ``FIELD OP VALUE``: ``metric:loss < 0.5``, ``param:lr = 0.01``,
    ``status = finished``, ``name ~ resnet`` (contains). MLflow's spelling
    (``metrics.loss``, ``params.lr``, ``tags.x``) is taken too; quotes around a
    value are dropped. Raises a UserError naming every condition it cannot read.
    """
    out: list[RunFilter] = []
    bad: list[str] = []
    for part in _FILTER_PART.split(text.strip()):
        if not part.strip():
            continue
        match = _FILTER.match(part)
        if match is None or not match["field"]:
            bad.append(part.strip())
            continue
        field, op, value = match["field"], match["op"], match["value"]
        for mlflow, ours in (("metrics.", "metric:"), ("params.", "param:"), ("tags.", "tag:")):
            if field.startswith(mlflow):
                field = ours + field[len(mlflow) :]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        try:
            out.append(RunFilter.parse(f"{field}{op}{value}"))
        except UserError as exc:
            bad.append(f"{part.strip()} ({exc.message})")
    if bad:
        raise UserError(
            "cannot read the filter: " + "; ".join(bad),
            hint="Write FIELD OP VALUE joined by 'and', e.g. "
            "metric:loss < 0.5 and param:lr = 0.01 and status = finished "
            "(operators = != < <= > >= and ~ for 'contains').",
        )
    return out


@dataclass(frozen=True)
class Column:
    """A column of the runs table: ``param:KEY`` or ``metric:KEY``."""

    kind: str
    key: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.key}"

    def cell(self, row: RunSummary) -> str:
        if self.kind == "param":
            return row.params.get(self.key, "–")
        return metric_text(row.metrics.get(self.key))

    def missing(self, row: RunSummary) -> bool:
        source: dict[str, Any] = row.params if self.kind == "param" else row.metrics
        return self.key not in source


def parse_columns(values: Iterable[str]) -> list[Column]:
    out: list[Column] = []
    for value in values:
        kind, sep, key = value.partition(":")
        if not sep or kind not in ("param", "metric") or not key:
            raise UserError(
                f"unknown column {value!r}",
                hint="Choose columns as param:KEY or metric:KEY.",
            )
        column = Column(kind, key)
        if column not in out:
            out.append(column)
    return out


SORTS = {
    "start_time": "Started",
    "end_time": "Ended",
    "name": "Run",
    "status": "Status",
    "user": "User",
}


@dataclass(frozen=True)
class RunsQuery:
    """One view of a runs table, as its query parameters (every view is a link)."""

    base: str
    scope: dict[str, str]
    sort: str
    descending: bool
    filter_text: str
    columns: tuple[str, ...]
    offset: int

    def href(self, **changes: Any) -> str:
        fields = {
            "sort": self.sort,
            "order": "desc" if self.descending else "asc",
            "filter": self.filter_text,
            "col": list(self.columns),
            "offset": self.offset,
            **changes,
        }
        query: list[tuple[str, str]] = list(self.scope.items())
        for name in ("sort", "order", "filter", "offset"):
            value = fields[name]
            if value not in ("", None, 0):
                query.append((name, str(value)))
        query.extend(("col", c) for c in fields["col"])
        return self.base + ("?" + urlencode(query) if query else "")

    def reset_href(self) -> str:
        """The table as first opened: no filter, the default columns and order."""
        return self.href(sort="start_time", order="desc", filter="", col=[], offset=0)

    def sort_href(self, field: str) -> str:
        """Sort by ``field``; the same field again flips the order."""
        descending = not self.descending if field == self.sort else field != "name"
        return self.href(sort=field, order="desc" if descending else "asc", offset=0)

    def aria_sort(self, field: str) -> str:
        if field != self.sort:
            return "none"
        return "descending" if self.descending else "ascending"


# --- pages --------------------------------------------------------------------------------------


@router.get("/experiments")
def experiments_page(request: Request, plane: Plane) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        experiments = _store(v).list_experiments(visible_to=_visible_to(v))
        return "experiments.html", {
            **_base("Experiments", v),
            "experiments": experiments,
        }

    return _render(request, plane, view)


@router.get("/experiments/{experiment_id}")
def experiment_runs_page(
    request: Request,
    plane: Plane,
    experiment_id: Annotated[int, Path(ge=1, le=2**62)],
    sort: Annotated[str, Query(max_length=300)] = "start_time",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    filter_: Annotated[str, Query(alias="filter", max_length=4000)] = "",
    col: Annotated[list[str] | None, Query(max_length=300)] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        store = _store(v)
        experiment = visible_experiment(v.plane, v.principal, str(experiment_id))
        query = RunsQuery(
            f"/experiments/{experiment.id}",
            {},
            sort,
            order == "desc",
            filter_,
            tuple(col or ()),
            offset,
        )
        return _runs_view(v, store, query, experiment=str(experiment.id), title=experiment.name)

    return _render(request, plane, view)


@router.get("/runs")
def runs_page(
    request: Request,
    plane: Plane,
    flow_run: Annotated[str | None, Query(max_length=64)] = None,
    job: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    sort: Annotated[str, Query(max_length=300)] = "start_time",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    filter_: Annotated[str, Query(alias="filter", max_length=4000)] = "",
    col: Annotated[list[str] | None, Query(max_length=300)] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """The runs of a flow run or of a job, across experiments (the flow and job pages link
    here with :func:`runs_url`)."""

    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        scope: dict[str, str] = {}
        title = "Runs"
        if flow_run:
            scope["flow_run"] = flow_run
            title = f"Runs of flow run {flow_run}"
        elif job is not None:
            scope["job"] = str(job)
            title = f"Runs of job {job}"
        query = RunsQuery("/runs", scope, sort, order == "desc", filter_, tuple(col or ()), offset)
        return _runs_view(v, _store(v), query, flow_run=flow_run or None, job_id=job, title=title)

    return _render(request, plane, view)


def runs_url(*, flow_run: str | None = None, job: int | None = None) -> str:
    """The runs table of a flow run or a job: what their pages link to."""
    if flow_run is not None:
        return "/runs?" + urlencode({"flow_run": flow_run})
    if job is not None:
        return "/runs?" + urlencode({"job": job})
    return "/experiments"


def _runs_view(
    v: Viewer,
    store: TrackingStore,
    query: RunsQuery,
    *,
    title: str,
    experiment: str | None = None,
    flow_run: str | None = None,
    job_id: int | None = None,
) -> tuple[str, dict[str, Any]]:
    context = _base(title, v)
    context.update(experiment_title=title, query=query, sorts=SORTS, page_size=RUNS_PAGE)
    chosen = parse_columns(query.columns)
    try:
        filters = parse_filters(query.filter_text)
    except UserError as exc:
        filters, context["filter_error"] = [], exc
    if query.sort not in SORTS:
        parse_columns([query.sort])  # param:KEY or metric:KEY, else a clear error
    scope: dict[str, Any] = {
        "visible_to": _visible_to(v),
        "order_by": query.sort,
        "descending": query.descending,
        "filters": filters,
        "offset": query.offset,
        "flow_run": flow_run,
        "job_id": job_id,
    }
    # The page is read with every param and metric of its runs, by run (the primary key):
    # on SQLite that is cheaper than asking for the few keys shown, which walks the key's
    # index across every run of the experiment. The column chooser offers the page's keys.
    page = store.list_runs(experiment, limit=RUNS_PAGE, params=None, metrics=None, **scope)
    param_keys = sorted({k for row in page.items for k in row.params})
    metric_keys = sorted({k for row in page.items for k in row.metrics})
    columns = chosen or (
        [Column("metric", k) for k in metric_keys[:DEFAULT_METRIC_COLUMNS]]
        + [Column("param", k) for k in param_keys[:DEFAULT_PARAM_COLUMNS]]
    )
    offered = [Column("metric", k) for k in metric_keys] + [Column("param", k) for k in param_keys]
    offered += [c for c in columns if c not in offered]
    start = min(query.offset, page.total)
    context.update(
        runs=page.items,
        total=page.total,
        first=start + 1 if page.items else 0,
        last=start + len(page.items),
        columns=columns,
        offered=offered,
        shown={c.id for c in columns},
        prev=query.href(offset=max(0, query.offset - RUNS_PAGE)) if query.offset > 0 else None,
        next=query.href(offset=query.offset + RUNS_PAGE)
        if query.offset + RUNS_PAGE < page.total
        else None,
        fields=[c.id for c in offered] + ["status", "name", "user"],
        compare_max=COMPARE_MAX,
    )
    return "runs.html", context


@router.get("/runs/compare")
def compare_page(
    request: Request,
    plane: Plane,
    id_: Annotated[list[int] | None, Query(alias="id")] = None,
    only_differences: Annotated[bool, Query(alias="diff")] = False,
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        ids = list(dict.fromkeys(id_ or []))
        if len(ids) < 2 or len(ids) > COMPARE_MAX:
            raise UserError(
                f"compare takes 2 to {COMPARE_MAX} runs, not {len(ids)}",
                hint="Tick between 2 and 20 runs in a runs table, then press Compare.",
            )
        store = _store(v)
        # Three queries for the runs, their params and their latest metrics, whatever
        # their number (a query per run and kind cost more than the page).
        runs = visible_runs(v.plane, v.principal, ids)
        param_map, latest_map = store.params_and_latest(ids)
        params = [param_map.get(r.id, {}) for r in runs]
        latest = [latest_map.get(r.id, {}) for r in runs]
        param_rows = _compare_rows(params, lambda value: value)
        metric_rows = _compare_rows(latest, metric_text)
        differing = sum(1 for row in param_rows if row["differs"])
        keys = sorted({k for m in latest for k in m})
        context = _base(f"Compare {len(runs)} runs", v)
        context.update(
            runs=runs,
            param_rows=[r for r in param_rows if r["differs"]] if only_differences else param_rows,
            differing=differing,
            metric_rows=metric_rows,
            only_differences=only_differences,
            plots=[
                {
                    "key": key,
                    "series": [
                        {"label": r.name, "run": r.id, "url": series_url(r.id, key)}
                        for r, m in zip(runs, latest, strict=True)
                        if key in m
                    ],
                }
                for key in keys[:PLOTS_MAX]
            ],
            more_plots=max(0, len(keys) - PLOTS_MAX),
            ids=ids,
            buckets=PLOT_BUCKETS,
        )
        return "compare.html", context

    return _render(request, plane, view)


def _compare_rows(values: Sequence[dict[str, Any]], show: Any) -> list[dict[str, Any]]:
    """One row per key across runs; ``differs`` when not every run has the same value."""
    keys = sorted({k for run in values for k in run})
    rows = []
    for key in keys:
        cells = [run.get(key) for run in values]
        seen = {_same(c) for c in cells}
        rows.append(
            {
                "key": key,
                "cells": ["–" if c is None else show(c) for c in cells],
                "differs": len(seen) > 1,
            }
        )
    return rows


def _same(value: Any) -> Any:
    """A value as compared: NaN equals NaN here (two runs that both diverged agree)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


@router.get("/runs/{run_id}")
def run_page(
    request: Request,
    plane: Plane,
    run_id: RunId,
    log: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str, Query(max_length=200)] = "",
    metric: Annotated[list[str] | None, Query(max_length=300)] = None,
    keys: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        store = _store(v)
        run = _run(v, run_id)
        lake = v.plane.hub.lake
        latest = store.latest_metrics(run.id)
        listed = [p for k, p in latest.items() if keys.lower() in k.lower()]
        chosen = [k for k in (metric or []) if k in latest]
        plotted = chosen or [p.key for p in listed[:PLOTS_MAX]]
        system_keys = store.system_metric_keys(run.id)
        logs = store.list_logs(run.id)
        stream = log if log in logs else next(iter(logs), None)
        roles = visible_datasets(v.plane, v.principal)
        context = _base(f"{run.name} · {run.experiment}", v)
        context.update(
            run=run,
            command=shlex.join(run.command) if run.command else "",
            params=store.run_params(run.id),
            tags=store.run_tags(run.id),
            latest=listed[:METRICS_LISTED],
            latest_total=len(latest),
            listed_total=len(listed),
            keys=keys,
            plots=[
                {"key": k, "url": series_url(run.id, k), "csv": series_url(run.id, k, csv=True)}
                for k in plotted
            ],
            more_plots=max(0, len(listed) - len(plotted)) if not chosen else 0,
            system_plots=[
                {
                    "key": k,
                    "url": series_url(run.id, k, system=True),
                    "csv": series_url(run.id, k, system=True, csv=True),
                }
                for k in system_keys[:PLOTS_MAX]
            ],
            buckets=PLOT_BUCKETS,
            inputs=[
                {"input": i, "readable": roles is None or i.dataset in roles}
                for i in store.run_inputs(run.id)
            ],
            artifacts=[
                {
                    "artifact": a,
                    "url": f"/runs/{run.id}/artifacts/{_path_url(a.path)}",
                    "image": a.path.lower().endswith(IMAGE_TYPES),
                }
                for a in store.list_artifacts(run.id)
            ],
            logs=logs,
            stream=stream,
            log_view=_log_view(store, lake, run.id, stream, logs.get(stream or "", 0), q)
            if stream
            else None,
            q=q,
            diff=_diff(lake, run.code),
            env=run.env,
            code=run.code,
        )
        return "run.html", context

    return _render(request, plane, view)


def _path_url(path: str) -> str:
    return "/".join(quote(seg, safe="") for seg in path.split("/"))


@dataclass(frozen=True)
class LogLine:
    number: int | None
    parts: list[tuple[str, bool]]  # (text, matched)


def _log_view(
    store: TrackingStore, lake: Any, run_id: int, stream: str, size: int, q: str
) -> dict[str, Any]:
    """The tail of a log, or the lines that hold ``q`` (case-insensitive), numbered."""
    if not q:
        start = max(0, size - LOG_TAIL)
        data = read_log(store, lake, run_id, stream, start, LOG_TAIL)
        text = data.decode("utf-8", errors="replace")
        if start > 0:  # drop the partial first line
            text = text.partition("\n")[2]
        return {"text": text, "truncated": start > 0, "size": size, "matches": None}
    needle = q.lower()
    matches: list[LogLine] = []
    number = 0
    carry = b""
    offset = 0
    limit = min(size, LOG_SEARCH_BYTES)
    more = False
    while offset < limit and not more:
        chunk = read_log(store, lake, run_id, stream, offset, min(4 << 20, limit - offset))
        if not chunk:
            break
        offset += len(chunk)
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop() if offset < limit else b""
        if offset >= limit and carry == b"" and lines and lines[-1] == b"":
            lines.pop()
        for raw in lines:
            number += 1
            line = raw.decode("utf-8", errors="replace")
            if needle in line.lower():
                if len(matches) >= LOG_SEARCH_LINES:
                    more = True
                    break
                matches.append(LogLine(number, _highlight(line, needle)))
    return {
        "text": None,
        "truncated": size > LOG_SEARCH_BYTES,
        "size": size,
        "matches": matches,
        "more": more,
    }


def _highlight(line: str, needle: str) -> list[tuple[str, bool]]:
    parts: list[tuple[str, bool]] = []
    lower = line.lower()
    at = 0
    while True:
        hit = lower.find(needle, at)
        if hit < 0:
            parts.append((line[at:], False))
            return parts
        if hit > at:
            parts.append((line[at:hit], False))
        parts.append((line[hit : hit + len(needle)], True))
        at = hit + len(needle)


def _diff(lake: Any, code: dict[str, Any]) -> dict[str, Any] | None:
    """The uncommitted diff of the run's git checkout, as classed lines (shown escaped)."""
    digest = code.get("diff_digest")
    if not digest:
        return None
    try:
        data = read_object(lake, str(digest))  # a ranged read must not pass the object's end
    except LakecacheError as exc:
        return {"error": exc.message, "lines": [], "truncated": False}
    truncated = len(data) > DIFF_SHOWN
    lines = []
    for line in data[:DIFF_SHOWN].decode("utf-8", errors="replace").splitlines():
        kind = ""
        if line.startswith(("+++", "---", "diff ", "index ")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        lines.append((kind, line))
    return {"error": None, "lines": lines, "truncated": truncated, "digest": digest}


# --- data for the pages: series, CSV, artifacts, logs, diff ----------------------------------
#
# Same session, same visibility rule as the pages; errors are the API's JSON errors (401
# without a session, 404 for a run the caller may not see).


@router.get("/runs/{run_id}/series")
def series_data(
    run_id: RunId,
    principal: User,
    plane: Plane,
    key: Annotated[str, Query(min_length=1, max_length=KEY_MAX)],
    kind: Annotated[str, Query(pattern="^(metric|system)$")] = "metric",
    buckets: Annotated[int, Query(ge=10, le=10_000)] = PLOT_BUCKETS,
    start: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    end: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    axis: Annotated[str, Query(pattern="^(step|time)$")] = "step",
) -> Response:
    """A series for a plot: at most ``buckets`` points, each bucket's first step (or time),
    mean, min and max; NaN and infinities as the strings "NaN", "Infinity", "-Infinity".

    ``start``/``end`` (steps, or epoch seconds with ``axis=time``): only that range, in as
    much detail as ``buckets`` allows; what a plot asks for when it is zoomed into.
    """
    store = store_of(plane)
    visible_run(plane, principal, run_id)
    series = store.metric_series(
        run_id, key, buckets=buckets, system=kind == "system", start=start, end=end, axis=axis
    )
    if series.points_total == 0 and start is None and end is None:
        raise NotFoundError(f"run {run_id} has no {kind} {key!r}", hint="Pick a metric it logged.")
    encoded = series.encoded()
    body: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "points_total": series.points_total,
        "downsampled": series.downsampled,
        "steps": series.steps,
        "times": [t / 1000 for t in series.timestamps],
        "values": encoded["values"],
    }
    if series.downsampled:
        body["mins"] = encoded["mins"]
        body["maxs"] = encoded["maxs"]
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/runs/{run_id}/series.csv")
def series_csv(
    run_id: RunId,
    principal: User,
    plane: Plane,
    key: Annotated[str, Query(min_length=1, max_length=KEY_MAX)],
    kind: Annotated[str, Query(pattern="^(metric|system)$")] = "metric",
) -> Response:
    """Every point of a series, by step, as CSV (``step,timestamp_ms,value``), streamed:
    the API's CSV (:meth:`~lakecache.tracking.store.TrackingStore.metric_csv`) with a
    file name for the browser."""
    run = visible_run(plane, principal, run_id)
    rows = store_of(plane).metric_csv(run_id, key, system=kind == "system")
    name = _filename(f"{run.name}-{key}.csv")
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "Cache-Control": "no-store",
        },
    )


@router.get("/runs/{run_id}/artifacts/{path:path}")
def artifact_file(
    run_id: RunId,
    principal: User,
    plane: Plane,
    path: Annotated[str, Path(min_length=1, max_length=1024)],
    download: Annotated[bool, Query()] = False,
) -> Response:
    """An artifact's bytes. Raster images are shown inline (the run page's previews);
    everything else, and any file asked with ``?download=1``, is an attachment, so no
    artifact ever runs as a page of this site."""
    store = store_of(plane)
    visible_run(plane, principal, run_id)
    data = read_artifact(store, plane.hub.lake, run_id, path)
    name = path.rsplit("/", 1)[-1]
    image = _IMAGE_MEDIA.get(name.rsplit(".", 1)[-1].lower()) if "." in name else None
    disposition = "inline" if image and not download else "attachment"
    return Response(
        data,
        media_type=image or "application/octet-stream",
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(_filename(name))}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/runs/{run_id}/logs/{stream}")
def log_file(
    run_id: RunId,
    principal: User,
    plane: Plane,
    stream: Annotated[str, Path(min_length=1, max_length=32)],
) -> Response:
    """A whole log stream, as a text download (streamed, in 1 MiB reads)."""
    store = store_of(plane)
    run = visible_run(plane, principal, run_id)
    size = store.list_logs(run_id).get(stream)
    if size is None:
        raise NotFoundError(f"run {run_id} has no log {stream!r}", hint="Pick a listed stream.")
    lake = plane.hub.lake

    def chunks() -> Iterator[bytes]:
        offset = 0
        while offset < size:
            data = read_log(store, lake, run_id, stream, offset, 1 << 20)
            if not data:
                return
            offset += len(data)
            yield data

    return StreamingResponse(
        chunks(),
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Disposition": "attachment; "
            f"filename*=UTF-8''{quote(_filename(f'{run.name}-{stream}.log'))}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


@router.get("/runs/{run_id}/code.diff")
def code_diff(run_id: RunId, principal: User, plane: Plane) -> Response:
    """The uncommitted diff of the run's checkout, whole, as a download."""
    run = visible_run(plane, principal, run_id)
    digest = run.code.get("diff_digest")
    if not digest:
        raise NotFoundError(f"run {run_id} recorded no diff", hint="Its checkout was clean.")
    return Response(
        read_object(plane.hub.lake, str(digest)),
        media_type="text/x-diff; charset=utf-8",
        headers={
            "Content-Disposition": "attachment; "
            f"filename*=UTF-8''{quote(_filename(run.name + '.diff'))}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


_IMAGE_MEDIA = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _filename(name: str) -> str:
    """A download's file name: letters, digits, '.', '_' and '-' only."""
    return _UNSAFE_NAME.sub("_", name).strip("._") or "download"
