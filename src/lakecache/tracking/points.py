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


def bucket_bounds(lo: int, hi: int, parts: int) -> list[int]:
    """The first step of each of ``parts`` equal parts of the steps ``lo..hi`` (exact
    integers: steps can be as large as int64 allows)."""
    span = hi - lo + 1
    return [lo + -(-b * span // parts) for b in range(parts)]


def _stats(part: Sequence[float]) -> tuple[float, float, float]:
    """Mean, min and max of a bucket's values: NaN ignored (a bucket of NaN only is NaN);
    +inf and -inf together make the mean NaN."""
    total = sum(part)
    if math.isfinite(total):
        return total / len(part), min(part), max(part)
    real = [v for v in part if v == v]
    if not real:
        return math.nan, math.nan, math.nan
    low, high = min(real), max(real)
    if all(map(math.isfinite, real)):
        return math.fsum(real) / len(real), low, high
    if low == -math.inf and high == math.inf:
        return math.nan, low, high
    return sum(real) / len(real), low, high


def downsample(steps: list[int], times: list[int], vals: list[float], buckets: int) -> Buckets:
    """At most ``buckets`` rows for a plot of a long series; ``steps`` must be sorted.

    The first and the last point are kept as they are (a plot starts and ends where the
    series does); the points between them are split into ``buckets - 2`` equal parts of
    their step range, and each non-empty part gives its first step and time, and the
    mean, min and max of its values (:func:`_stats`). Every point is in exactly one row,
    so the min and max of every part, spikes included, are kept."""
    out = Buckets([], [], [], [], [])
    n = len(steps)
    if n == 0:
        return out
    if n <= buckets:
        return Buckets(list(steps), list(times), list(vals), list(vals), list(vals))

    def keep(i: int, mean: float, low: float, high: float) -> None:
        out.steps.append(steps[i])
        out.times.append(times[i])
        out.means.append(mean)
        out.mins.append(low)
        out.maxs.append(high)

    keep(0, vals[0], vals[0], vals[0])
    starts: list[int] = []
    at = 1
    for bound in bucket_bounds(steps[1], steps[n - 2], max(1, buckets - 2)):
        at = bisect_left(steps, bound, at, n - 1)
        if not starts or at > starts[-1]:
            starts.append(at)
    for k, begin in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else n - 1
        if end > begin:
            keep(begin, *_stats(vals[begin:end]))
    keep(n - 1, vals[n - 1], vals[n - 1], vals[n - 1])
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


def series(
    chunks: Sequence[tuple[bytes, bytes, bytes]],
    buckets: int | None,
    within: tuple[float, float, str] | None = None,
) -> SeriesData:
    """The series of ``chunks``: all points if ``buckets`` is None or not exceeded, else
    :func:`downsample`'s rows. With numpy installed the points never become Python
    objects: the bucket edges are found by binary search in the sorted steps (``buckets``
    searches, not a pass over every point), and a series without NaN is reduced in
    three passes; a million points take milliseconds. Without numpy, the pure-Python path
    gives the same rows.

    ``within`` (low, high, ``"step"`` or ``"time"`` in epoch seconds): only the points
    in that closed range count (a zoomed plot); ``total`` is then their number."""
    try:
        import numpy as np
    except ImportError:
        np = None  # type: ignore[assignment]
    if np is None:
        steps, times, vals = unpack(chunks)
        if within is not None:
            low, high, axis = within
            xs: Sequence[float] = steps if axis == "step" else [t / 1000 for t in times]
            keep = [i for i, x in enumerate(xs) if low <= x <= high]
            steps = [steps[i] for i in keep]
            times = [times[i] for i in keep]
            vals = [vals[i] for i in keep]
        if buckets is None or len(steps) <= buckets:
            return SeriesData(len(steps), False, steps, times, vals, vals, vals)
        b = downsample(steps, times, vals, buckets)
        return SeriesData(len(steps), True, b.steps, b.times, b.means, b.mins, b.maxs)
    if not chunks:
        return SeriesData(0, False, [], [], [], [], [])
    if len(chunks) == 1:  # read in place: no copy of a large chunk
        ((sb, tb, vb),) = chunks
        s, t, v = np.frombuffer(sb, "<i8"), np.frombuffer(tb, "<i8"), np.frombuffer(vb, "<f8")
    else:
        s = np.concatenate([np.frombuffer(c[0], "<i8") for c in chunks])
        t = np.concatenate([np.frombuffer(c[1], "<i8") for c in chunks])
        v = np.concatenate([np.frombuffer(c[2], "<f8") for c in chunks])
    if len(s) > 1 and bool((s[1:] < s[:-1]).any()):
        order = np.lexsort((t, s))
        s, t, v = s[order], t[order], v[order]
    if within is not None:
        low, high, axis = within
        x = s if axis == "step" else t / 1000
        mask = (x >= low) & (x <= high)
        s, t, v = s[mask], t[mask], v[mask]
    n = len(s)
    if buckets is None or n <= buckets:
        values = v.tolist()
        return SeriesData(n, False, s.tolist(), t.tolist(), values, values, values)
    bounds = bucket_bounds(int(s[1]), int(s[n - 2]), max(1, buckets - 2))
    inner = s[1 : n - 1]
    starts = np.unique(np.searchsorted(inner, np.array(bounds, dtype=np.int64))) + 1
    starts = starts[starts < n - 1]
    middle = v[1 : n - 1]
    at = starts - 1  # positions in ``middle``
    sizes = np.diff(np.append(at, len(middle)))
    nan = np.isnan(middle)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if not bool(nan.any()):
            means = np.add.reduceat(middle, at) / sizes
            mins = np.minimum.reduceat(middle, at)
            maxs = np.maximum.reduceat(middle, at)
        else:
            counts = np.add.reduceat((~nan).astype(np.int64), at)
            sums = np.add.reduceat(np.where(nan, 0.0, middle), at)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            mins = np.fmin.reduceat(middle, at)
            maxs = np.fmax.reduceat(middle, at)
    first, last = float(v[0]), float(v[n - 1])
    return SeriesData(
        n,
        True,
        [int(s[0]), *s[starts].tolist(), int(s[n - 1])],
        [int(t[0]), *t[starts].tolist(), int(t[n - 1])],
        [first, *means.tolist(), last],
        [first, *mins.tolist(), last],
        [first, *maxs.tolist(), last],
    )
