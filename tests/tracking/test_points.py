"""Downsampling for plots: every point in exactly one row, the min and max of every bucket
kept, the first and last points kept as they are, numpy and pure Python alike."""

from __future__ import annotations

import math
import random

import pytest

from lakecache.tracking import points
from lakecache.tracking.store import TrackingStore


def _series(n: int, seed: int) -> tuple[list[int], list[int], list[float]]:
    """Sorted steps with gaps and repeats; values with spikes, NaN and infinities."""
    rng = random.Random(seed)
    steps, step = [], 0
    for _ in range(n):
        step += rng.choice((0, 1, 1, 1, 2, 7, 50))
        steps.append(step)
    vals = [math.sin(i / 40) + rng.random() * 0.1 for i in range(n)]
    for i in rng.sample(range(n), 20):
        vals[i] = rng.choice((1e9, -1e9, math.nan, math.inf, -math.inf))
    times = [1_700_000_000_000 + 10 * i for i in range(n)]
    return steps, times, vals


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def _check(rows: points.Buckets | points.SeriesData, steps: list[int], vals: list[float]) -> None:
    n, out = len(steps), len(rows.steps)
    # The first and last points, as they are.
    assert rows.steps[0] == steps[0] and rows.steps[-1] == steps[-1]
    for col in (rows.means, rows.mins, rows.maxs):
        assert _same(col[0], vals[0]) and _same(col[-1], vals[-1])
    # Between them, each row covers the points from its first step to the next row's.
    cut = [1]
    for k in range(1, out - 1):
        begin = cut[-1]
        end = n - 1 if k == out - 2 else steps.index(rows.steps[k + 1], begin)
        part = vals[begin:end]
        assert part, f"row {k} is empty"
        assert steps[begin] == rows.steps[k]
        real = [v for v in part if not math.isnan(v)]
        assert _same(rows.mins[k], min(real) if real else math.nan)
        assert _same(rows.maxs[k], max(real) if real else math.nan)
        cut.append(end)
    assert cut[-1] == n - 1  # every point is in exactly one row


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("buckets", [10, 100, 1000])
def test_every_bucket_keeps_its_min_and_max_and_the_ends_are_kept(seed: int, buckets: int) -> None:
    steps, times, vals = _series(20_000, seed)
    slow = points.downsample(steps, times, vals, buckets)
    assert len(slow.steps) <= buckets
    _check(slow, steps, vals)
    (chunk,) = points.pack({"k": (steps, times, vals)})
    fast = points.series([(chunk.steps, chunk.times, chunk.vals)], buckets)
    assert fast.downsampled and fast.total == len(steps)
    assert fast.steps == slow.steps and fast.times == slow.times
    _check(fast, steps, vals)
    for a, b in ((fast.mins, slow.mins), (fast.maxs, slow.maxs), (fast.means, slow.means)):
        assert all(_same(x, y) for x, y in zip(a, b, strict=True))


def test_chunks_out_of_order_are_merged_by_step() -> None:
    steps, times, vals = _series(5_000, 7)
    halves = [
        points.pack({"k": (steps[2500:], times[2500:], vals[2500:])})[0],
        points.pack({"k": (steps[:2500], times[:2500], vals[:2500])})[0],
    ]
    data = points.series([(c.steps, c.times, c.vals) for c in halves], 50)
    _check(data, steps, vals)
    assert len(data.steps) <= 50


def test_a_short_series_comes_back_whole() -> None:
    steps, times, vals = _series(100, 4)
    (chunk,) = points.pack({"k": (steps, times, vals)})
    data = points.series([(chunk.steps, chunk.times, chunk.vals)], 100)
    assert not data.downsampled and data.steps == steps
    assert all(_same(a, b) for a, b in zip(data.means, vals, strict=True))
    whole = points.downsample(steps, times, vals, 100)
    assert whole.steps == steps


def test_steps_near_the_int64_limits_split_exactly() -> None:
    big = 2**62
    steps = [-big, -big + 1, 0, big - 1, big]
    vals = [1.0, 2.0, 3.0, 4.0, 5.0]
    (chunk,) = points.pack({"k": (steps, steps, vals)})
    data = points.series([(chunk.steps, chunk.times, chunk.vals)], 4)
    assert data.steps[0] == -big and data.steps[-1] == big
    assert min(data.mins) == 1.0 and max(data.maxs) == 5.0
    _check(data, steps, vals)


def test_small_batches_of_a_key_are_appended_to_its_newest_chunk(store: TrackingStore) -> None:
    """A run logging slowly (a few points per flush) keeps few rows per metric, in order;
    a large batch is a chunk of its own, and points logged back in time start a new one."""
    from sqlalchemy import func, select

    from lakecache.tracking import tables as tt
    from lakecache.tracking.model import Batch
    from lakecache.tracking.store import MERGE_BELOW

    run = store.create_run("slow", user="alice")
    logged: list[tuple[int, float]] = []
    for flush in range(300):  # 300 flushes of 5 points: 1,500 points
        batch = [("loss", 1 / (1 + flush * 5 + i), flush * 5 + i, flush) for i in range(5)]
        logged += [(step, value) for _, value, step, _ in batch]
        store.log_batch(run.id, Batch.of(metrics=batch))
    big = [("loss", float(s), s, 0) for s in range(1500, 1500 + MERGE_BELOW)]
    store.log_batch(run.id, Batch.of(metrics=big))
    store.log_batch(run.id, Batch.of(metrics=[("loss", -1.0, 3, 0)]))  # back in time

    def rows() -> list[tuple[int, int]]:
        m = tt.tracking_metrics
        with store._c._read() as conn:
            return [
                (int(first), int(n))
                for first, n in conn.execute(
                    select(m.c.first_step, m.c.count).where(m.c.run_id == run.id).order_by(m.c.id)
                )
            ]

    chunks = rows()
    assert sum(n for _, n in chunks) == 1500 + MERGE_BELOW + 1
    assert len(chunks) <= 1500 // MERGE_BELOW + 3  # not one row per flush
    assert all(n >= MERGE_BELOW for _, n in chunks[:-3])
    series = store.metric_series(run.id, "loss", buckets=None)
    assert series.points_total == 1500 + MERGE_BELOW + 1
    assert series.steps == sorted(series.steps)
    expected = logged + [(s, float(s)) for s in range(1500, 1500 + MERGE_BELOW)] + [(3, -1.0)]
    assert sorted(zip(series.steps, series.values, strict=True)) == sorted(expected)
    with store._c._read() as conn:
        latest = conn.scalar(
            select(func.max(tt.tracking_latest_metrics.c.step)).where(
                tt.tracking_latest_metrics.c.run_id == run.id
            )
        )
    assert latest == 1500 + MERGE_BELOW - 1
