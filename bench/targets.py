"""Speed targets of the issues (hub, caches, server, reads, AI library), over a run's figures.

A target is a ratio or a bound over figure keys. Each evaluates to PASS, FAIL,
or n/a when a figure it needs was not measured (a section skipped or failed).
Later issues add their targets to :data:`TARGETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Figures = Callable[[str], float | None]


@dataclass(frozen=True)
class Target:
    name: str
    #: How the measured value is computed, for the table ("s5cmd upload / commit").
    formula: str
    measure: Callable[[Figures], float | None]
    op: str  # ">=", "<=" or "=="
    limit: float
    unit: str  # "x", "s", "ms", "MiB", ""

    def check(self, fig: Figures) -> tuple[float | None, str]:
        value = self.measure(fig)
        if value is None:
            return None, "n/a"
        if self.op == "==":
            ok = value == self.limit
        else:
            ok = value >= self.limit if self.op == ">=" else value <= self.limit
        return value, "PASS" if ok else "FAIL"


def ratio(num: str, den: str) -> Callable[[Figures], float | None]:
    def measure(fig: Figures) -> float | None:
        a, b = fig(num), fig(den)
        return None if a is None or not b else a / b

    return measure


def ratio_of_first(nums: tuple[str, ...], den: str) -> Callable[[Figures], float | None]:
    """``ratio`` with the first of ``nums`` that was measured as the numerator."""

    def measure(fig: Figures) -> float | None:
        b = fig(den)
        for num in nums:
            a = fig(num)
            if a is not None and b:
                return a / b
        return None

    return measure


def value(*keys: str) -> Callable[[Figures], float | None]:
    """The first of ``keys`` that was measured (B's figure, else A's)."""

    def measure(fig: Figures) -> float | None:
        for key in keys:
            v = fig(key)
            if v is not None:
                return v
        return None

    return measure


def most(*keys: str) -> Callable[[Figures], float | None]:
    """The largest of the measured ``keys`` (for 'every CLI command')."""

    def measure(fig: Figures) -> float | None:
        vals = [v for v in (fig(k) for k in keys) if v is not None]
        return max(vals) if vals else None

    return measure


TARGETS: list[Target] = [
    Target(
        "commit A vs s5cmd upload",
        "s5cmd upload s / commit s",
        ratio("a.s5cmd.upload.s", "a.lc.commit.s"),
        ">=",
        2.0,
        "x",
    ),
    Target(
        "commit A vs dvc add+push",
        "dvc add+push s / commit s",
        ratio("a.dvc.add_push.s", "a.lc.commit.s"),
        ">=",
        5.0,
        "x",
    ),
    Target(
        "pull A vs s5cmd download",
        "s5cmd download s / pull s",
        ratio("a.s5cmd.download.s", "a.lc.pull.s"),
        ">=",
        2.0,
        "x",
    ),
    Target(
        "pull A vs dvc pull",
        "dvc pull s / pull s",
        ratio("a.dvc.pull.s", "a.lc.pull.s"),
        ">=",
        5.0,
        "x",
    ),
    Target(
        "pull A vs 1 GiB GET rate",
        "pull MB/s / 1 GiB GET MB/s",
        ratio("a.lc.pull.MBps", "ref.get_1gib.MBps"),
        ">=",
        0.5,
        "x",
    ),
    Target(
        "re-commit A (1% changed, 1% added)",
        "re-commit s / commit s",
        ratio("a.lc.recommit.s", "a.lc.commit.s"),
        "<=",
        0.05,
        "x",
    ),
    Target("commit A peak memory", "peak RSS", value("a.lc.commit.peak_mib"), "<=", 500, "MiB"),
    Target("pull A peak memory", "peak RSS", value("a.lc.pull.peak_mib"), "<=", 500, "MiB"),
    Target("commit B peak memory", "peak RSS", value("b.lc.commit.peak_mib"), "<=", 1024, "MiB"),
    Target("pull B peak memory", "peak RSS", value("b.lc.pull.peak_mib"), "<=", 500, "MiB"),
    Target(
        "SDK ls of one folder",
        "largest folder, every item, cold",
        value("b.sdk.ls_largest.ms", "a.sdk.ls_largest.ms"),
        "<=",
        100,
        "ms",
    ),
    Target(
        "SDK ls of one folder, a page",
        "largest folder, first 1,000 items, cold",
        value("b.sdk.ls_page.ms", "a.sdk.ls_page.ms"),
        "<=",
        100,
        "ms",
    ),
    Target(
        "SDK ls of the root",
        "cold",
        value("b.sdk.ls_root.ms", "a.sdk.ls_root.ms"),
        "<=",
        100,
        "ms",
    ),
    Target(
        "SDK diff (1% apart)",
        "cold",
        value("b.sdk.diff.ms", "a.sdk.diff.ms"),
        "<=",
        2000,
        "ms",
    ),
    Target("SDK log", "cold", value("b.sdk.log.ms", "a.sdk.log.ms"), "<=", 100, "ms"),
    Target(
        "CLI start-up",
        "slowest of --help, data log",
        most("cli.help.s", "cli.log.s"),
        "<=",
        0.5,
        "s",
    ),
    # --- issue 3: caches -------------------------------------------------------------
    Target(
        "cache fill A vs s5cmd download",
        "s5cmd download s / fill s",
        ratio("a.s5cmd.download.s", "a.cache.fill.s"),
        ">=",
        2.0,
        "x",
    ),
    Target(
        "cache fill A vs dvc pull",
        "dvc pull s / fill s",
        ratio("a.dvc.pull.s", "a.cache.fill.s"),
        ">=",
        5.0,
        "x",
    ),
    Target(
        "cache fill A vs 1 GiB GET rate",
        "fill MB/s / 1 GiB GET MB/s",
        ratio("a.cache.fill.MBps", "ref.get_1gib.MBps"),
        ">=",
        0.5,
        "x",
    ),
    Target(
        "use() warm hit on A",
        "first call, imports done",
        value("a.cache.use.first_ms"),
        "<=",
        200,
        "ms",
    ),
    Target(
        "use() warm hit on B",
        "first call, imports done",
        value("b.cache.use.first_ms"),
        "<=",
        200,
        "ms",
    ),
    Target(
        "8 concurrent use(): fills",
        "processes that read the lake",
        value("a.cache.race.fillers"),
        "==",
        1,
        "",
    ),
    Target(
        "8 concurrent use(): lake bytes",
        "bytes read (sum of 8) / commit",
        ratio("a.cache.race.lake_MB", "a.cache.race.commit_MB"),
        "<=",
        1.05,
        "x",
    ),
    Target(
        "2nd commit (99% shared) fill",
        "1st fill s / 2nd fill s",
        ratio("a.cache.fill.op_s", "a.cache.fill2.op_s"),
        ">=",
        20.0,
        "x",
    ),
    # --- issue 4: the server and its dashboard ----------------------------------------
    Target(
        "50 clients: p99 latency",
        "0.5-1.5 s between requests",
        value("dash.paced.p99_ms"),
        "<=",
        100,
        "ms",
    ),
    Target(
        "50 clients: errors",
        "non-200 or failed, both phases",
        most("dash.paced.errors", "dash.saturation.errors"),
        "==",
        0,
        "",
    ),
    Target(
        "B's commit page renders",
        "Chromium: root, largest folder",
        most("b.dash.render.root_ms", "b.dash.render.folder_ms"),
        "<=",
        1000,
        "ms",
    ),
    # --- issue 4: the server starts, on the embedded default ----------------------------
    Target(
        "server start (embedded default)",
        "command to first /healthz, empty home",
        value("srv.start.first.s"),
        "<=",
        3,
        "s",
    ),
    # --- issue 4: commit and pull through a server (presigned URLs) ---------------------
    Target(
        "commit A through a server",
        "server commit s / direct commit s",
        ratio("a.srv.commit.s", "a.lc.commit.s"),
        "<=",
        1.2,
        "x",
    ),
    Target(
        "pull A through a server",
        "server pull s / direct pull s",
        ratio("a.srv.pull.s", "a.lc.pull.s"),
        "<=",
        1.2,
        "x",
    ),
    # --- issue 13: the read path at the floor that the store and the disk set -----------
    # floor = min(1 GiB GET rate, cp -r rate of the same tree); P: real PNGs of 150-400 KB.
    *(
        Target(
            f"{what} {data} vs floor",
            f"{what} MB/s / min(GET, cp -r) MB/s",
            ratio(f"{key}.MBps", f"{data.lower()}.floor.MBps"),
            ">=",
            0.8,
            "x",
        )
        for data in ("A", "P")
        for what, key in (
            ("pull", f"{data.lower()}.lc.pull"),
            ("cache fill", f"{data.lower()}.cache.fill"),
        )
    ),
    *(
        Target(
            f"{what} P vs s5cmd download",
            f"s5cmd download s / {what} s",
            ratio("p.s5cmd.download.s", f"{key}.s"),
            ">=",
            2.0,
            "x",
        )
        for what, key in (("pull", "p.lc.pull"), ("cache fill", "p.cache.fill"))
    ),
    # Half of the measure on the PNG set: 2.8 s user, 4.5 s system for 1.08 GB.
    *(
        Target(
            f"{what} P: {kind} CPU per GB",
            f"child's {kind} CPU s / GB",
            value(f"{key}.cpu_{short}_s_per_GB"),
            "<=",
            limit,
            "s/GB",
        )
        for what, key in (("pull", "p.lc.pull"), ("cache fill", "p.cache.fill"))
        for kind, short, limit in (("user", "user", 1.3), ("system", "sys", 2.1))
    ),
    Target(
        "2nd fill (99% shared), new process",
        "1st fill s / 2nd fill s, start-up included",
        ratio("a.cache.fill.s", "a.cache.fill2.s"),
        ">=",
        20.0,
        "x",
    ),
    Target(
        "2nd fill (99% shared), warm agent",
        "1st fill s (new process) / agent's 2nd s",
        # Without the caches section, the agent's own first fill (no start-up: a lower ratio).
        ratio_of_first(("a.cache.fill.s", "a.agent.fill1.op_s"), "a.agent.fill2.op_s"),
        ">=",
        40.0,
        "x",
    ),
    Target("fill B peak memory", "peak RSS", value("b.cache.fill.peak_mib"), "<=", 500, "MiB"),
    # --- trust and durability: lake gc of A and B plus 3 deleted datasets -----------------
    Target("lake gc time", "gc s", value("gc.s"), "<=", 60, "s"),
    Target("lake gc peak memory", "gc peak MiB", value("gc.peak_mib"), "<=", 1024, "MiB"),
    # --- compute: jobs through queues, run by real site agents --------------------------
    Target(
        "submit to running, local (p50)",
        "job's first act - submit",
        value("compute.local.start_p50_ms"),
        "<=",
        200,
        "ms",
    ),
    Target(
        "submit to running, container (p50)",
        "job's first act - submit",
        value("compute.container.start_p50_ms"),
        "<=",
        1000,
        "ms",
    ),
    Target(
        "dispatch, 1,000 jobs over 3 sites",
        "jobs / (last end - first agent)",
        value("compute.dispatch.jobs_per_s"),
        ">=",
        50,
        "jobs/s",
    ),
    Target(
        "fallback to the next site (slowest)",
        "job's first act - submit",
        value("compute.fallback.max_s"),
        "<=",
        1.0,
        "s",
    ),
    Target(
        "cached jobs at the warm site",
        "share placed there",
        value("compute.cached.share_pct"),
        ">=",
        99,
        "%",
    ),
    Target(
        "cached jobs: bytes from the lake",
        "caches' fetched bytes",
        value("compute.cached.lake_bytes"),
        "==",
        0,
        "B",
    ),
    Target(
        "agent killed: jobs run twice at once",
        "flock conflicts",
        value("compute.kill.twice"),
        "==",
        0,
        "jobs",
    ),
    Target(
        "agent killed: jobs stuck",
        "not ended, or failed without reason",
        value("compute.kill.stuck"),
        "==",
        0,
        "jobs",
    ),
    # --- flows: planning and dispatch ------------------------------------------------------
    Target(
        "1,000-task fan-out planned + dispatched",
        "start to last job submitted",
        value("flows.dispatch_1k.s"),
        "<=",
        2.0,
        "s",
    ),
    Target(
        "flow orchestration per task (p50)",
        "memo check + job submit + task move",
        value("flows.dispatch_1k.p50_ms"),
        "<=",
        10,
        "ms",
    ),
    Target(
        "10,000-task flow checked + planned",
        "plan s (slower of fan-out, distinct)",
        lambda fig: _slower(fig, "flows.plan_fanout.s", "flows.plan_distinct.s"),
        "<=",
        1.0,
        "s",
    ),
    Target(
        "10,000-task flow plan memory",
        "peak RSS (larger of the two)",
        lambda fig: _slower(fig, "flows.plan_fanout.peak_mib", "flows.plan_distinct.peak_mib"),
        "<=",
        200,
        "MiB",
    ),
    # --- tracking pages -----------------------------------------------------------------
    Target(
        "runs table, first page",
        "10,000 runs x 100 params, over HTTP",
        value("trk.runs_page_ms"),
        "<=",
        300,
        "ms",
    ),
    Target(
        "1,000,000-point metric served",
        "downsampled to 1,000 buckets",
        value("trk.series_big_ms"),
        "<=",
        200,
        "ms",
    ),
    Target(
        "compare of 20 runs",
        "page + its 20 series",
        value("trk.compare_ms"),
        "<=",
        1000,
        "ms",
    ),
    # --- tracking: logging from the training loop ---------------------------------------
    Target(
        "log_metric in the loop (p50)",
        "each call timed, 100,000 calls",
        value("trk.log_metric.p50_us"),
        "<=",
        5,
        "us",
    ),
    Target(
        "log_metric in the loop (p99)",
        "each call timed, 100,000 calls",
        value("trk.log_metric.p99_us"),
        "<=",
        50,
        "us",
    ),
    Target(
        "100,000 points logged + stored",
        "100 keys x 1,000 steps, first call to committed",
        value("trk.durable_100k.s"),
        "<=",
        1.0,
        "s",
    ),
    Target(
        "1 s system sampler overhead",
        "sampler thread CPU / wall, CPU loop running",
        value("trk.sampler.overhead_pct"),
        "<=",
        1.0,
        "%",
    ),
    # --- the AI library (issue 11): on the PNG set, and on A when the run has it --------
    Target(
        "CommitDataset raw in order (PNG set)",
        "% of open().read(), from the cache",
        value("library_raw_in_order_pct_of_open"),
        ">=",
        90,
        "%",
    ),
    Target(
        "CommitDataset raw shuffled (PNG set)",
        "% of open().read(), same order",
        value("library_raw_shuffled_pct_of_open"),
        ">=",
        70,
        "%",
    ),
    Target(
        "Streaming 1st batch (PNG set)",
        "dataset made -> 128 items, no cache",
        value("library_stream_first_batch_s"),
        "<=",
        2.0,
        "s",
    ),
    Target(
        "CommitDataset raw in order (A)",
        "% of open().read(), from the cache",
        value("library_raw_in_order_pct_of_open_a"),
        ">=",
        90,
        "%",
    ),
    Target(
        "CommitDataset raw shuffled (A)",
        "% of open().read(), same order",
        value("library_raw_shuffled_pct_of_open_a"),
        ">=",
        70,
        "%",
    ),
    Target(
        "Streaming 1st batch (A)",
        "dataset made -> 128 items, no cache",
        value("library_stream_first_batch_s_a"),
        "<=",
        2.0,
        "s",
    ),
    Target(
        "Streaming vs weed mount (PNG set)",
        "FUSE read s / StreamingDataset s, same files",
        value("stream.x_fuse"),
        ">=",
        2.0,
        "x",
    ),
    Target(
        "Streaming vs s5cmd+read (PNG set)",
        "s5cmd download + read s / StreamingDataset s",
        value("stream.x_s5cmd_read"),
        ">=",
        1.5,
        "x",
    ),
    Target(
        "Streaming vs weed mount (A)",
        "FUSE read s / StreamingDataset s, same files",
        value("stream.a.x_fuse"),
        ">=",
        2.0,
        "x",
    ),
    Target(
        "Streaming vs s5cmd+read (A)",
        "s5cmd download + read s / StreamingDataset s",
        value("stream.a.x_s5cmd_read"),
        ">=",
        1.5,
        "x",
    ),
]


def _slower(fig: Figures, *keys: str) -> float | None:
    """The largest of the figures that were measured (None if none was)."""
    values = [v for v in (fig(k) for k in keys) if v is not None]
    return max(values) if values else None
