"""lakecache's side of the benchmark, through the Python SDK.

Each write or pull runs in its own child process (``python bench/lakecache_ops.py
OP CONFIG``), so its wall time includes interpreter start-up, as the peers' does,
and its peak memory is its own. The read calls (ls, diff, log) are timed inside
one child as SDK calls: the first call (cold: a fresh process, indexes not yet
opened) is the figure judged; the median of the next calls is shown beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (
    REPO,
    Bench,
    BenchError,
    check_copy,
    link_tree,
    mb,
    record_cpu,
    remove,
    say,
    timed,
    tree_stats,
)

BUCKET = "bench-lakecache"
WARM_REPEATS = 5
#: Items in one page of a folder listing, as the dashboard and an SDK caller page through.
PAGE = 1000


# --- sections (run in the bench process) ------------------------------------------------


def dataset_a(bench: Bench) -> None:
    """Commit A from cold, pull it into an empty folder, change 1% + add 1%, commit again."""
    from lakecache import synth

    a = bench.datasets["A"]
    _fresh_home(bench)
    work = bench.work_dir / "lc-A"
    link_tree(a.path, work)

    say("lakecache: commit A (cold: empty lake, empty local state)")
    run, out = _child(bench, "commit", dataset="a", path=str(work), message="first import")
    bench.record("a.lc.commit.s", run.seconds, "s", "lakecache commit A")
    bench.record("a.lc.commit.MBps", mb(a.bytes) / run.seconds, "MB/s", "lakecache commit rate")
    bench.record("a.lc.commit.peak_mib", run.peak_mib, "MiB", "lakecache commit peak memory")
    _check_count(out, a.files, "commit A")

    say("lakecache: pull A into an empty folder")
    dst = bench.scratch("lc-pull-A")
    remove(dst)  # pull creates it
    run, _ = _child(bench, "pull", dataset="a", ref="latest", dest=str(dst))
    check_copy(bench, dst, a, "lakecache pull")
    bench.record("a.lc.pull.s", run.seconds, "s", "lakecache pull A")
    bench.record("a.lc.pull.MBps", mb(a.bytes) / run.seconds, "MB/s", "lakecache pull rate")
    bench.record("a.lc.pull.peak_mib", run.peak_mib, "MiB", "lakecache pull peak memory")
    record_cpu(bench, "a.lc.pull", run, a.bytes, "lakecache pull A")
    remove(dst)

    say("lakecache: change 1% of A, add 1%, commit again")
    changed, added = synth.mutate(work, fraction_changed=0.01, fraction_added=0.01, seed=11)
    bench.notes.append(f"re-commit of A after {changed} files changed and {added} added")
    run, out = _child(bench, "commit", dataset="a", path=str(work), message="1% changed")
    _check_count(out, a.files + added, "re-commit A")
    bench.record("a.lc.recommit.s", run.seconds, "s", "lakecache re-commit A (1%+1%)")
    bench.record("a.lc.recommit.op_s", out["op_seconds"], "s", "re-commit A, in-process")
    bench.record(
        "a.lc.recommit.startup_s",
        run.seconds - out["op_seconds"],
        "s",
        "re-commit A: process start-up, imports and exit",
    )
    bench.record("a.lc.recommit.peak_mib", run.peak_mib, "MiB", "lakecache re-commit peak memory")
    bench.record("a.lc.recommit.cpu_user_s", run.user_s, "s", "re-commit A: user CPU")
    bench.record("a.lc.recommit.cpu_sys_s", run.system_s, "s", "re-commit A: system CPU")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in sorted(out.get("phases", {}).items()))
    print(
        f"    re-commit: read {out.get('hashed_files', 0):,} files, "
        f"CPU user {run.user_s:.2f} s, system {run.system_s:.2f} s; phases (s): {phases}",
        flush=True,
    )
    if "B" not in bench.datasets:
        _sdk_reads(bench, "a", "A")


def dataset_b(bench: Bench) -> None:
    """B: 627,615 small files. Commit (peak memory), change 1% + add 1%, commit, then reads."""
    from lakecache import synth

    b = bench.datasets["B"]
    if not (bench.work_dir / "lc-home").exists():
        _fresh_home(bench)
    work = bench.work_dir / "lc-B"
    say(f"lakecache: hard-linked working copy of B ({b.files:,} files)")
    link_tree(b.path, work)

    say("lakecache: commit B")
    run, out = _child(bench, "commit", dataset="b", path=str(work), message="first import")
    _check_count(out, b.files, "commit B")
    bench.record("b.lc.commit.s", run.seconds, "s", "lakecache commit B")
    bench.record("b.lc.commit.files_per_s", b.files / run.seconds, "files/s", "commit B rate")
    bench.record("b.lc.commit.peak_mib", run.peak_mib, "MiB", "lakecache commit B peak memory")

    say("lakecache: change 1% of B, add 1%, commit again")
    changed, added = synth.mutate(work, fraction_changed=0.01, fraction_added=0.01, seed=12)
    bench.notes.append(f"B's second commit: {changed} files changed and {added} added")
    run, out = _child(bench, "commit", dataset="b", path=str(work), message="1% changed")
    _check_count(out, b.files + added, "re-commit B")
    bench.record("b.lc.recommit.s", run.seconds, "s", "lakecache re-commit B (1%+1%)")
    bench.record("b.lc.recommit.peak_mib", run.peak_mib, "MiB", "lakecache re-commit B peak")

    say("lakecache: pull B into an empty folder")
    dst = bench.scratch("lc-pull-B")
    remove(dst)  # pull creates it
    run, _ = _child(bench, "pull", dataset="b", ref="latest", dest=str(dst))
    files, _nbytes = tree_stats(dst)
    if files != b.files + added:
        raise BenchError(f"pull of B wrote {files} files, not {b.files + added}")
    bench.record("b.lc.pull.s", run.seconds, "s", "lakecache pull B")
    bench.record("b.lc.pull.files_per_s", files / run.seconds, "files/s", "pull B rate")
    bench.record("b.lc.pull.peak_mib", run.peak_mib, "MiB", "lakecache pull B peak memory")
    remove(dst)
    _sdk_reads(bench, "b", "B")


def cli_startup(bench: Bench) -> None:
    """Wall time of `lakecache --help` and `lakecache data log NAME`, median of 5."""
    name = "b" if "B" in bench.datasets else "a"
    say("lakecache: CLI start-up")
    script = Path(sys.executable).parent / "lakecache"
    argv0 = [str(script)] if script.exists() else [sys.executable, "-m", "lakecache.cli"]
    env = {**os.environ, **_cli_env(bench)}
    for key, args in (("cli.help.s", ["--help"]), ("cli.log.s", ["data", "log", name])):
        times = [timed([*argv0, *args], env=env).seconds for _ in range(5)]
        label = f"lakecache {' '.join(args)} (median of 5)"
        bench.record(key, statistics.median(times), "s", label)
    # What a commit or a fill imports before it does anything (python -X importtime).
    for key, modules, what in (
        ("cli.commit_imports.ms", _COMMIT_MODULES, "data commit"),
        ("cli.fill_imports.ms", _FILL_MODULES, "cache fill"),
    ):
        totals, tops = [], {}
        for _ in range(5):
            total, top = _import_time(modules)
            totals.append(total)
            tops = top
        bench.record(key, statistics.median(totals), "ms", f"imports of a {what} (median of 5)")
        heaviest = ", ".join(f"{m} {ms:.0f}" for m, ms in tops.items())
        print(f"    heaviest imports of a {what} (ms, last run): {heaviest}", flush=True)


#: The modules a `lakecache data commit` to an S3 lake loads, and a cache fill from it.
_COMMIT_MODULES = ("lakecache.cli.data", "lakecache.data.commit", "lakecache.catalog", "boto3")
_FILL_MODULES = ("lakecache.cli.cache", "lakecache.cache.service", "lakecache.catalog", "boto3")


def _import_time(modules: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    """(total ms, the five heaviest top-level imports in ms) of importing ``modules``."""
    import subprocess

    code = "import " + ", ".join(modules)
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stderr
    top: dict[str, float] = {}
    for line in err.splitlines():
        # "import time: self [us] | cumulative | imported package"; top level: one space.
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            try:
                top[parts[2].strip()] = int(parts[1]) / 1000
            except ValueError:
                continue  # the header line
    heaviest = dict(sorted(top.items(), key=lambda kv: -kv[1])[:5])
    return sum(top.values()), heaviest


# --- helpers (bench process) ------------------------------------------------------------


def _sdk_reads(bench: Bench, name: str, data: str) -> None:
    say(f"lakecache: SDK ls, diff, log on {data}")
    _, out = _child(bench, "reads", dataset=name)
    folder = out["largest_folder"]
    for op, label in (
        ("ls_root", "ls of the root folder"),
        ("ls_largest", f"ls of {folder}/ ({out['largest_files']:,} files)"),
        ("ls_page", f"ls of {folder}/, first page of {PAGE:,} (limit={PAGE:,})"),
        ("diff", "diff of two commits 1%+1% apart"),
        ("log", "log"),
    ):
        bench.record(f"{name}.sdk.{op}.ms", out[op]["cold_ms"], "ms", f"SDK {label}, cold")
        bench.record(
            f"{name}.sdk.{op}.warm_ms",
            out[op]["warm_ms"],
            "ms",
            f"SDK {label}, warm (median of {WARM_REPEATS})",
        )


def _fresh_home(bench: Bench) -> None:
    remove(bench.work_dir / "lc-home")
    bench.create_bucket(BUCKET)


def _settings_dict(bench: Bench) -> dict[str, Any]:
    return {
        "home": str(bench.work_dir / "lc-home"),
        "lake_url": f"s3://{BUCKET}/lake",
        "s3_endpoint": bench.server.endpoint,
        "s3_region": "us-east-1",
        "s3_access_key": bench.server.access_key,
        "s3_secret_key": bench.server.secret_key,
    }


def _cli_env(bench: Bench) -> dict[str, str]:
    s = _settings_dict(bench)
    return {
        "LAKECACHE_HOME": s["home"],
        "LAKECACHE_LAKE": s["lake_url"],
        "LAKECACHE_S3_ENDPOINT": s["s3_endpoint"],
        "LAKECACHE_S3_REGION": s["s3_region"],
        "LAKECACHE_S3_ACCESS_KEY": s["s3_access_key"],
        "LAKECACHE_S3_SECRET_KEY": s["s3_secret_key"],
    }


def _child(bench: Bench, op: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    config = json.dumps({"settings": _settings_dict(bench), **args})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    run = timed([sys.executable, Path(__file__), op, config], env=env, cwd=REPO, check=False)
    if run.returncode != 0:
        raise BenchError(f"lakecache {op} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    lines = run.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"lakecache {op} printed no result; stderr:\n{run.stderr[-2000:]}")
    return run, json.loads(lines[-1])


def _check_count(out: dict[str, Any], want: int, what: str) -> None:
    if out.get("file_count") != want:
        raise BenchError(f"{what}: the commit has {out.get('file_count')} files, not {want}")


# --- the child: one SDK operation -------------------------------------------------------


def _child_main(op: str, config_json: str) -> None:
    config = json.loads(config_json)
    from lakecache import Dataset, Settings

    s = config["settings"]
    settings = Settings(home=Path(s.pop("home")), **s)
    name = config["dataset"]
    result: dict[str, Any]
    if op == "commit":
        ds = Dataset.create(name, settings=settings, exist_ok=True)
        t = time.perf_counter()
        commit = ds.commit(config["path"], message=config["message"])
        result = {"id": commit.id, "file_count": commit.file_count, "bytes": commit.bytes}
        stats = ds.last_commit_stats
        if stats is not None:
            result["hashed_files"] = stats.hashed_files
            result["phases"] = stats.extra
    elif op == "pull":
        ds = Dataset(name, settings=settings)
        t = time.perf_counter()
        ds.pull(config["ref"], config["dest"])
        result = {}
    elif op == "reads":
        t = time.perf_counter()
        result = _reads(Dataset(name, settings=settings))
    else:
        raise SystemExit(f"unknown op {op!r}")
    result["op_seconds"] = time.perf_counter() - t
    print(json.dumps(result))


def _reads(ds: Any) -> dict[str, Any]:
    log = ds.log()
    if len(log) < 2:
        raise SystemExit(f"dataset {ds.name} needs two commits for a diff, has {len(log)}")
    first, last = log[-1].id, log[0].id
    root = ds.ls("latest", "")
    folders = [item for item in root if item.is_dir] or root
    largest = max(folders, key=lambda item: item.files)
    folder = largest.path.rstrip("/")

    def measure(call: Callable[[Any], object]) -> dict[str, float]:
        # A fresh Dataset per op, so that each op's first call is cold in this process.
        fresh = type(ds)(ds.name, settings=ds.hub.settings)
        times = []
        for _ in range(1 + WARM_REPEATS):
            t = time.perf_counter()
            call(fresh)
            times.append((time.perf_counter() - t) * 1000)
        return {"cold_ms": times[0], "warm_ms": statistics.median(times[1:])}

    return {
        "largest_folder": folder,
        "largest_files": largest.files,
        "ls_root": measure(lambda d: d.ls("latest", "")),
        "ls_largest": measure(lambda d: d.ls("latest", folder)),
        "ls_page": measure(lambda d: d.ls("latest", folder, limit=PAGE)),
        "diff": measure(lambda d: d.diff(first, last)),
        "log": measure(lambda d: d.log()),
    }


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
