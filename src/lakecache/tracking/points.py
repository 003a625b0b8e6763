"""Metric points packed into chunks, and series downsampled for plots (pure functions).

A chunk holds the points one batch logged for one key: steps and epoch
milliseconds as little-endian int64 arrays and values as float64, so NaN
and infinities survive bit for bit. Unpacking is ``array.frombytes``: a
million points decode in milliseconds.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SWAP = sys.byteorder != "little"


@dataclass(frozen=True)
class Chunk:
    key: str
    first_step: int
    last_step: int
    count: int
    steps: bytes
    times: bytes
    vals: bytes


def _packed(typecode: str, values: Iterable[float] | Iterable[int]) -> bytes:
    arr = array(typecode, values)  # type: ignore[arg-type]
    if _SWAP:
        arr.byteswap()
    return arr.tobytes()


def _unpacked(typecode: str, data: bytes) -> array:  # type: ignore[type-arg]
    arr = array(typecode)
    arr.frombytes(data)
    if _SWAP:
        arr.byteswap()
    return arr


def pack(metrics: dict[str, tuple[list[int], list[int], list[float]]]) -> list[Chunk]:
    """One chunk per key, from its columns (steps, times, values)."""
    return [
        Chunk(
            key,
            min(steps),
            max(steps),
            len(steps),
            _packed("q", steps),
            _packed("q", times),
            _packed("d", vals),
        )
        for key, (steps, times, vals) in metrics.items()
        if steps
    ]


def unpack(
    chunks: Iterable[tuple[bytes, bytes, bytes]],
) -> tuple[list[int], list[int], list[float]]:
    """Concatenate chunks (steps, times, values), sorted by step then time."""
    steps: array = array("q")  # type: ignore[type-arg]
    times: array = array("q")  # type: ignore[type-arg]
    vals: array = array("d")  # type: ignore[type-arg]
    for s, t, v in chunks:
        steps.extend(_unpacked("q", s))
        times.extend(_unpacked("q", t))
        vals.extend(_unpacked("d", v))
    s_list, t_list, v_list = steps.tolist(), times.tolist(), vals.tolist()
    # Sorting an already sorted list is one linear pass in C (timsort): the usual case.
    if s_list != sorted(s_list):
        order = sorted(range(len(s_list)), key=lambda i: (s_list[i], t_list[i]))
        s_list = [s_list[i] for i in order]
        t_list = [t_list[i] for i in order]
        v_list = [v_list[i] for i in order]
    return s_list, t_list, v_list


@dataclass(frozen=True)
class Buckets:
    steps: list[int]
    times: list[int]
    means: list[float]
    mins: list[float]
    maxs: list[float]


def downsample(steps: list[int], times: list[int], vals: list[float], buckets: int) -> Buckets:
    """Split the step range into ``buckets`` equal parts; per non-empty part its first
    step and time, and the mean, min and max of its values (NaN ignored; a part of
    NaN only is NaN). ``steps`` must be sorted."""
    out = Buckets([], [], [], [], [])
    if not steps:
        return out
    lo, hi = steps[0], steps[-1]
    span = hi - lo + 1
    start = 0
    n = len(steps)
    for b in range(1, buckets + 1):
        bound = lo + -(-b * span // buckets)  # first step of the next bucket
        end = n if b == buckets else bisect_left(steps, bound, start)
        if end > start:
            part = vals[start:end]
            total = sum(part)
            if math.isfinite(total):
                mean, low, high = total / len(part), min(part), max(part)
            else:
                real = [v for v in part if v == v]
                if real:
                    low, high = min(real), max(real)
                    mean = (
                        math.fsum(real) / len(real)
                        if all(map(math.isfinite, real))
                        else (
                            math.nan
                            if (low == -math.inf and high == math.inf)
                            else sum(real) / len(real)
                        )
                    )
                else:
                    mean = low = high = math.nan
            out.steps.append(steps[start])
            out.times.append(times[start])
            out.means.append(mean)
            out.mins.append(low)
            out.maxs.append(high)
        start = end
        if start >= n:
            break
    return out


@dataclass(frozen=True)
class SeriesData:
    """A series as read for a plot: every point, or one row per bucket."""

    total: int
    downsampled: bool
    steps: list[int]
    times: list[int]
    means: list[float]
    mins: list[float]
    maxs: list[float]


def series(chunks: Sequence[tuple[bytes, bytes, bytes]], buckets: int | None) -> SeriesData:
    """The series of ``chunks``: all points if ``buckets`` is None or not exceeded, else
    :func:`downsample`'s buckets. With numpy installed the arrays never become Python
    objects (a million points in milliseconds); without it, the pure-Python path."""
    try:
        import numpy as np
    except ImportError:
        np = None  # type: ignore[assignment]
    if np is None:
        steps, times, vals = unpack(chunks)
        if buckets is None or len(steps) <= buckets:
            return SeriesData(len(steps), False, steps, times, vals, vals, vals)
        b = downsample(steps, times, vals, buckets)
        return SeriesData(len(steps), True, b.steps, b.times, b.means, b.mins, b.maxs)
    if not chunks:
        return SeriesData(0, False, [], [], [], [], [])
    s = np.concatenate([np.frombuffer(c[0], "<i8") for c in chunks])
    t = np.concatenate([np.frombuffer(c[1], "<i8") for c in chunks])
    v = np.concatenate([np.frombuffer(c[2], "<f8") for c in chunks])
    if len(s) > 1 and bool((s[1:] < s[:-1]).any()):
        order = np.lexsort((t, s))
        s, t, v = s[order], t[order], v[order]
    n = len(s)
    if buckets is None or n <= buckets:
        values = v.tolist()
        return SeriesData(n, False, s.tolist(), t.tolist(), values, values, values)
    lo, hi = int(s[0]), int(s[-1])
    span = hi - lo + 1
    index = ((s - lo).astype(np.float64) * (buckets / span)).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
    real = ~np.isnan(v)
    counts = np.add.reduceat(real.astype(np.int64), starts)
    sums = np.add.reduceat(np.where(real, v, 0.0), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        mins = np.fmin.reduceat(v, starts)
        maxs = np.fmax.reduceat(v, starts)
    return SeriesData(
        n,
        True,
        s[starts].tolist(),
        t[starts].tolist(),
        means.tolist(),
        mins.tolist(),
        maxs.tolist(),
    )
