"""``make bench``: lakecache beside its peers and the physical limits, in one run.

Generates the datasets (kept in ``bench-data/`` between runs, with a stamp of the
parameters), starts one SeaweedFS, runs each section on the same files, then
prints every figure and every speed target (bench/targets.py) as PASS/FAIL, and
writes the same to ``bench-data/results.json``.

Sections are registered in :data:`SECTIONS` in the order they run; a later
issue adds its own with one line. A failing section is reported and the others
still run.

    python bench/run.py                  # A (20,000 files, ~2 GB) and B (627,615 files)
    python bench/run.py --small          # A with 2,000 files, no B: a quick look
    python bench/run.py --only s5cmd,dvc --no-b
    BENCH_SCALE=0.25 python bench/run.py # every dataset at a quarter of its size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cache_ops
import compute_ops
import dashboard
import deploy_ops
import flow_ops
import gc_ops
import lakecache_ops
import library_ops
import peers
import read_ops
import server_ops
import stream_peers
import tracking_ops
import tracking_pages
from harness import REPO, Bench, BenchError, GeneratedData, fmt, load_stamp, remove, say
from targets import TARGETS

#: name -> (run, needs): every section, in the order it runs.
SECTIONS: dict[str, tuple[Callable[[Bench], None], tuple[str, ...]]] = {
    "reference": (peers.reference, ("A",)),
    "s5cmd": (peers.s5cmd, ("A",)),
    "dvc": (peers.dvc, ("A",)),
    "lakecache-a": (lakecache_ops.dataset_a, ("A",)),
    "lakecache-b": (lakecache_ops.dataset_b, ("B",)),
    # After lakecache-a and -b: their lake and catalog, A's two commits and B's (issue 3).
    "caches": (cache_ops.caches, ("A",)),
    "cli": (lakecache_ops.cli_startup, ("A",)),
    # Issue 4: commit and pull of A through a server, beside lakecache-a's direct figures.
    "server-a": (server_ops.server_a, ("A",)),
    # Issue 4: `lakecache server` on the embedded default, from the command to /healthz.
    "server-start": (server_ops.server_start, ()),
    # Issue 4: the server under 50 clients, and B's commit page in Chromium (B's lake).
    "dashboard": (dashboard.dashboard, ("B",)),
    # Issue 13: the read path beside its floor, on A and on the PNG set P (after caches).
    "reads": (read_ops.reads, ("A",)),
    # Lake gc of A's and B's lake plus 3 deleted datasets (B when it is there).
    "lake-gc": (gc_ops.lake_gc, ("A",)),
    # Jobs through queues over 3 sites, run by real site agents (local and Podman).
    "compute": (compute_ops.compute, ()),
    # Flows: a 10,000-task flow checked and planned; a 1,000-task fan-out dispatched.
    "flows": (flow_ops.flows, ()),
    # The AI library: prepared 256 px images into tensors, CPU training data-wait (own
    # data), raw reads and streaming first batch on its PNGs and on A.
    "library": (library_ops.library, ()),
    # The AI library: StreamingDataset from S3 vs a FUSE mount and s5cmd download+read.
    "stream-peers": (stream_peers.stream_peers, ()),
    # Tracking pages: runs table of 10,000 runs x 100 params, a 1,000,000-point plot, compare.
    "tracking-pages": (tracking_pages.tracking_pages, ()),
    # Tracking: log_metric latency, 100,000 points stored, the 1 s sampler's overhead.
    "tracking": (tracking_ops.tracking, ()),
    # Deploy: two replicas on PostgreSQL under 100 paced clients, 1 vs 2 at saturation, image.
    "deploy": (deploy_ops.deploy, ()),
}

#: name -> datasets a section also uses when they are there (loaded, never required).
OPTIONAL: dict[str, tuple[str, ...]] = {
    "caches": ("B",),
    "lake-gc": ("B",),
    "reads": ("P",),
    "library": ("A",),
    "stream-peers": ("A",),
}

A_FILES = 20_000
B_FILES = 627_615  # the NIH ChestX-ray14 sample's file count
P_FILES = 5_000  # real PNG chest X-rays at 512 px: 150 to 400 KB each
#: name -> generator parameters (besides the file count).
DATASETS: dict[str, dict[str, Any]] = {
    "A": {"median_size": 90_000, "sigma": 0.6, "seed": 1},
    "B": {"median_size": 2_000, "sigma": 0.25, "seed": 2},
    "P": {"median_size": 227_000, "sigma": 0.25, "seed": 3},
}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    data_dir = args.data_dir.resolve()
    bench = Bench(
        data_dir=data_dir,
        work_dir=data_dir / "work",
        peers_bin=REPO / ".bench-venv" / "bin",
        args=args,
    )
    selected = [name for name in SECTIONS if _wanted(name, args)]
    needs = {d for name in selected for d in (*SECTIONS[name][1], *OPTIONAL.get(name, ()))}
    if not args.with_b:
        needs.discard("B")
    started = time.time()

    say("datasets")
    data_dir.mkdir(parents=True, exist_ok=True)
    counts = {"A": args.files, "B": args.b_files, "P": args.p_files}
    for name in sorted(needs):
        bench.datasets[name] = _dataset(data_dir, name, counts[name])

    for name, full in (("A", A_FILES), ("B", B_FILES), ("P", P_FILES)):
        data = bench.datasets.get(name)
        if data is not None and data.files != full:
            bench.notes.append(
                f"{name} at {data.files:,} files, not {full:,} (--small, --files, --b-files, "
                "--p-files or BENCH_SCALE): its figures, peak memory included, are at that count"
            )
    remove(bench.work_dir)
    bench.work_dir.mkdir(parents=True)
    # Byte-code for every module, as an installed package has it: where
    # PYTHONDONTWRITEBYTECODE is set, each timed child would otherwise compile
    # every module edited since the last compile (~0.1 s of CPU per command).
    import compileall

    compileall.compile_dir(REPO / "src" / "lakecache", quiet=1)
    from lakecache.services.seaweed import start_seaweed

    say("starting SeaweedFS")
    bench.server = start_seaweed(bench.work_dir / "seaweed")
    print(f"  S3 gateway at {bench.server.endpoint}")
    try:
        for name in selected:
            run, wanted = SECTIONS[name]
            missing = [d for d in wanted if d not in bench.datasets]
            if missing:
                print(f"\n== {name}: skipped (no dataset {', '.join(missing)})")
                continue
            try:
                run(bench)
            except (BenchError, subprocess.CalledProcessError, OSError, ImportError) as exc:
                bench.errors[name] = str(exc)
                print(f"\n!! {name} failed: {exc}", file=sys.stderr, flush=True)
            except Exception as exc:  # noqa: BLE001 - a bench reports a broken section, goes on
                bench.errors[name] = "".join(traceback.format_exception(exc))
                print(f"\n!! {name} failed:\n{bench.errors[name]}", file=sys.stderr, flush=True)
    finally:
        bench.server.stop()
        if not args.keep_work:
            remove(bench.work_dir)

    rows = _report(bench)
    out = data_dir / "results.json"
    out.write_text(json.dumps(_results(bench, rows, started), indent=2) + "\n")
    print(f"\nresults: {out}")
    return 1 if bench.errors else 0


# --- datasets ---------------------------------------------------------------------------


def _dataset(data_dir: Path, name: str, files: int) -> GeneratedData:
    """Dataset ``name`` with ``files`` files: reused if its stamp matches, else generated."""
    from lakecache import synth

    params = {"files": files, **DATASETS[name], "generator": _generator_version()}
    path = data_dir / name
    stamp_path = data_dir / f"{name}.stamp.json"
    stamp = load_stamp(stamp_path)
    if stamp and stamp.get("params") == params and path.is_dir():
        print(f"  {name}: reusing {path} ({stamp['files']:,} files, {stamp['bytes'] / 1e9:.2f} GB)")
        return GeneratedData(name, path, stamp["files"], stamp["bytes"])
    remove(stamp_path)
    remove(path)
    print(f"  {name}: generating {files:,} files in {path}")
    gen = {k: v for k, v in params.items() if k not in ("files", "generator")}
    n, nbytes = synth.generate(path, files, progress=True, **gen)
    stamp_path.write_text(json.dumps({"params": params, "files": n, "bytes": nbytes}))
    return GeneratedData(name, path, n, nbytes)


def _generator_version() -> str:
    """A digest of the generator's source: change it and the datasets are made again."""
    import hashlib

    from lakecache import synth

    return hashlib.sha256(Path(synth.__file__).read_bytes()).hexdigest()[:16]


# --- report -----------------------------------------------------------------------------


def _report(bench: Bench) -> list[dict[str, object]]:
    say("figures")
    width = max((len(f.label) for f in bench.figures.values()), default=10)
    for f in bench.figures.values():
        print(f"  {f.label:<{width}}  {fmt(f.value, f.unit):>14}")

    say("targets")
    rows: list[dict[str, object]] = []
    print(f"  {'target':<36} {'measured':>10} {'needed':>11}  {'how':<30} result")
    for t in TARGETS:
        measured, status = t.check(bench.value)
        shown = "-" if measured is None else _num(measured, t.unit)
        needed = f"{t.op} {_num(t.limit, t.unit)}"
        print(f"  {t.name:<36} {shown:>10} {needed:>11}  {t.formula:<30} {status}")
        rows.append(
            {
                "target": t.name,
                "formula": t.formula,
                "measured": measured,
                "op": t.op,
                "limit": t.limit,
                "unit": t.unit,
                "status": status,
            }
        )
    for note in bench.notes:
        print(f"  note: {note}")
    for name, err in bench.errors.items():
        first = err.strip().splitlines()[0] if err.strip() else "?"
        print(f"  ERROR in {name}: {first}")
    return rows


def _num(v: float, unit: str) -> str:
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "ms":
        return f"{v:.0f} ms"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "s/GB":
        return f"{v:.2f} s/GB"
    return f"{v:.0f} {unit}"


def _results(bench: Bench, rows: list[dict[str, object]], started: float) -> dict[str, object]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version(),
            "lakecache_commit": _git_head(),
            "peers": _peer_versions(bench),
        },
        "datasets": {
            d.name: {"files": d.files, "bytes": d.bytes, "path": str(d.path)}
            for d in bench.datasets.values()
        },
        "figures": {
            f.key: {"value": f.value, "unit": f.unit, "label": f.label}
            for f in bench.figures.values()
        },
        "targets": rows,
        "notes": bench.notes,
        "errors": bench.errors,
    }


def _git_head() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True)
    return r.stdout.decode().strip() if r.returncode == 0 else "unknown"


def _peer_versions(bench: Bench) -> dict[str, str]:
    versions = {}
    for tool, args in (("s5cmd", ["version"]), ("dvc", ["--version"])):
        exe = bench.peers_bin / tool
        if exe.exists():
            r = subprocess.run([str(exe), *args], capture_output=True, text=True)
            versions[tool] = r.stdout.strip()
    return versions


# --- command line -----------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    scale = float(os.environ.get("BENCH_SCALE", "1") or 1)
    p.add_argument("--files", type=int, default=None, help=f"files in A (default {A_FILES:,})")
    p.add_argument("--b-files", type=int, default=None, help=f"files in B (default {B_FILES:,})")
    p.add_argument("--p-files", type=int, default=None, help=f"PNGs in P (default {P_FILES:,})")
    p.add_argument("--small", action="store_true", help="A with 2,000 files, P with 500, no B")
    p.add_argument("--with-b", dest="with_b", action="store_true", default=None)
    p.add_argument("--no-b", dest="with_b", action="store_false", help="skip dataset B")
    p.add_argument("--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--data-dir", type=Path, default=REPO / "bench-data")
    p.add_argument("--keep-work", action="store_true", help="keep bench-data/work for a look")
    args = p.parse_args(argv)
    if args.files is None:
        args.files = 2_000 if args.small else max(1, round(A_FILES * scale))
    if args.p_files is None:
        args.p_files = 500 if args.small else max(1, round(P_FILES * scale))
    if args.b_files is None:
        args.b_files = max(1, round(B_FILES * scale))
    if args.with_b is None:
        args.with_b = not args.small
    for opt in ("only", "skip"):
        names = [n for n in getattr(args, opt).split(",") if n]
        unknown = [n for n in names if n not in SECTIONS]
        if unknown:
            p.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
        setattr(args, opt, names)
    return args


def _wanted(name: str, args: argparse.Namespace) -> bool:
    return (not args.only or name in args.only) and name not in args.skip


if __name__ == "__main__":
    sys.exit(main())
