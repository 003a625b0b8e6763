"""The read path against its floor (issue 13): pull, fill and stream of A and of a PNG set.

The floor for a read into files is the slower of the store's GET rate (one
1 GiB object, from the ``reference`` section) and the disk's rate for writing
the same tree (``cp -r``, measured here for each set). Beside each figure: the
peer (s5cmd download of the same files) and the client's CPU seconds per GB
(user and system, from the child's rusage).

- A: pull, fill and s5cmd come from the ``lakecache-a``, ``caches`` and
  ``s5cmd`` sections when they ran; this section adds A's floor, A's streaming
  read, and the second fill of a 99%-shared commit by a warm agent (one
  long-lived process that filled the first commit, so its clients, catalog
  connection and manifest indexes are open), beside the new-process figure.
- P: real PNGs of 150 to 400 KB (median 227 KB, 5,000 at full scale; the NIH
  X-ray sizes), committed to dataset ``p``, then s5cmd upload and download,
  pull, cache fill on a fresh volume, and a streaming read, each in its own
  child process.

Streaming reads go through :class:`lakecache.integrations.reader.CommitReader`
with ``cached=False`` (what fsspec, torch and ``cached=False`` jobs use): every
file's bytes, verified, nothing written to disk.

Each child is ``python bench/read_ops.py OP CONFIG`` and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cache_ops
import lakecache_ops
import peers
from harness import (
    REPO,
    Bench,
    BenchError,
    GeneratedData,
    check_copy,
    mb,
    record_cpu,
    remove,
    say,
    timed,
    warm,
)

AGENT_SITE, AGENT_VOLUME = "agent", "agent-nvme"
PNG_SITE, PNG_VOLUME = "png", "png-nvme"
CAPACITY = 10**13


# --- the section (bench process) ---------------------------------------------------------


def reads(bench: Bench) -> None:
    """A's floor, stream and warm-agent 2nd fill; P's floor, s5cmd, pull, fill and stream."""
    a = bench.datasets["A"]
    if bench.value("ref.cp_r.MBps") is None:
        _cp_r(bench, a, "a")
    else:
        bench.record("a.ref.cp_r.MBps", bench.value("ref.cp_r.MBps") or 0, "MB/s", "cp -r A rate")
    _floor(bench, "a", "A")
    _cp_r_durable(bench, a, "a")
    a_first, a_second = cache_ops._a_commits(bench)

    say("reads: stream A from the lake (CommitReader, cached=False)")
    _stream(bench, "a", "A", a_first["id"], a.bytes)

    say("reads: a warm agent fills A's first commit, then the second (99% shared)")
    volume = bench.scratch("cache-agent")
    run, out = _child(
        bench,
        "agent",
        dataset="a",
        commits=[a_first["id"], a_second["id"]],
        site=AGENT_SITE,
        volume=AGENT_VOLUME,
        root=str(volume),
    )
    bench.record("a.agent.fill1.op_s", out["fills"][0], "s", "warm agent: 1st fill of A")
    bench.record("a.agent.fill2.op_s", out["fills"][1], "s", "warm agent: 2nd fill (99% shared)")
    user, system = out["cpu"][1]
    bench.record("a.agent.fill2.cpu_user_s", user, "s", "warm agent: 2nd fill, user CPU")
    bench.record("a.agent.fill2.cpu_sys_s", system, "s", "warm agent: 2nd fill, system CPU")
    first = bench.value("a.cache.fill.s")
    if first:
        print(
            f"    2nd fill speed-up: {first / out['fills'][1]:.1f}x warm agent, "
            f"{first / (bench.value('a.cache.fill2.s') or float('nan')):.1f}x new process "
            "(both against the 1st fill from a new process)",
            flush=True,
        )
    remove(volume)

    _vs_durable(bench, "a", "A")
    if "P" in bench.datasets:
        _png_set(bench, bench.datasets["P"])
    else:
        bench.notes.append("reads: the PNG set P was not generated: no P figures")


def _png_set(bench: Bench, p: GeneratedData) -> None:
    say(f"reads: the PNG set P ({p.files:,} files, {p.bytes / 1e9:.2f} GB): cp -r, s5cmd")
    _cp_r(bench, p, "p")
    _floor(bench, "p", "P")
    _cp_r_durable(bench, p, "p")
    s5 = peers._s5cmd(bench)
    env = bench.s3_env()
    bench.create_bucket("bench-s5cmd")
    timed(
        [*s5, "cp", f"{p.path}/*", "s3://bench-s5cmd/P/"],
        env=env,
        stdout_to=bench.work_dir / "s5cmd-upload-p.log",
    )
    dst = bench.scratch("s5cmd-P")
    down = timed(
        [*s5, "cp", "s3://bench-s5cmd/P/*", f"{dst}/"],
        env=env,
        stdout_to=bench.work_dir / "s5cmd-download-p.log",
    )
    check_copy(bench, dst, p, "s5cmd download of P")
    bench.record("p.s5cmd.download.s", down.seconds, "s", "s5cmd download P")
    bench.record("p.s5cmd.download.MBps", mb(p.bytes) / down.seconds, "MB/s", "s5cmd download P")
    record_cpu(bench, "p.s5cmd.download", down, p.bytes, "s5cmd download P")
    remove(dst)

    say("reads: lakecache commit P, then pull it into an empty folder")
    if not (bench.work_dir / "lc-home").exists():
        lakecache_ops._fresh_home(bench)
    _, out = lakecache_ops._child(bench, "commit", dataset="p", path=str(p.path), message="PNG set")
    if out.get("file_count") != p.files:
        raise BenchError(f"commit of P has {out.get('file_count')} files, not {p.files}")
    commit_id = out["id"]
    dst = bench.work_dir / "lc-pull-P"
    remove(dst)
    run, _ = lakecache_ops._child(bench, "pull", dataset="p", ref="latest", dest=str(dst))
    check_copy(bench, dst, p, "lakecache pull of P")
    bench.record("p.lc.pull.s", run.seconds, "s", "lakecache pull P")
    bench.record("p.lc.pull.MBps", mb(p.bytes) / run.seconds, "MB/s", "lakecache pull P rate")
    bench.record("p.lc.pull.peak_mib", run.peak_mib, "MiB", "lakecache pull P peak memory")
    record_cpu(bench, "p.lc.pull", run, p.bytes, "lakecache pull P")
    remove(dst)

    say("reads: cache fill of P on a fresh volume")
    volume = bench.scratch("cache-png")
    run, fill = _child(
        bench,
        "fill",
        dataset="p",
        commit=commit_id,
        site=PNG_SITE,
        volume=PNG_VOLUME,
        root=str(volume),
    )
    files, nbytes = fill["files"], fill["bytes"]
    if (files, nbytes) != (p.files, p.bytes):
        raise BenchError(f"fill of P holds {files} files / {nbytes} bytes, not {p.files}")
    bench.record("p.cache.fill.s", run.seconds, "s", "cache fill P (child process)")
    bench.record("p.cache.fill.MBps", mb(p.bytes) / run.seconds, "MB/s", "cache fill P rate")
    bench.record("p.cache.fill.peak_mib", run.peak_mib, "MiB", "cache fill P peak memory")
    record_cpu(bench, "p.cache.fill", run, p.bytes, "cache fill P")
    remove(volume)

    _vs_durable(bench, "p", "P")

    say("reads: stream P from the lake (CommitReader, cached=False)")
    _stream(bench, "p", "P", commit_id, p.bytes)


def _cp_r(bench: Bench, data: GeneratedData, key: str) -> None:
    dst = bench.work_dir / f"cp-{data.name}-floor"
    remove(dst)
    warm(data.path)
    run = timed(["cp", "-r", data.path, dst])
    check_copy(bench, dst, data, f"cp -r {data.name}")
    bench.record(f"{key}.ref.cp_r.MBps", mb(data.bytes) / run.seconds, "MB/s", f"cp -r {data.name}")
    remove(dst)


def _cp_r_durable(bench: Bench, data: GeneratedData, key: str) -> None:
    """``cp -r`` then ``sync -f``: the disk's rate for a tree on disk, as a fill leaves it.

    A fill makes its bytes durable before it publishes them (one syncfs); ``cp -r``
    returns with the bytes in the page cache. Printed beside the floor, not judged.
    """
    dst = bench.work_dir / f"cp-{data.name}-durable"
    remove(dst)
    warm(data.path)
    run = timed(["sh", "-c", 'cp -r "$1" "$2" && sync -f "$2"', "cp", data.path, dst])
    check_copy(bench, dst, data, f"cp -r + sync of {data.name}")
    rate = mb(data.bytes) / run.seconds
    bench.record(f"{key}.ref.cp_r_sync.MBps", rate, "MB/s", f"cp -r + sync -f {data.name}")
    remove(dst)


def _vs_durable(bench: Bench, key: str, name: str) -> None:
    fill, durable = bench.value(f"{key}.cache.fill.MBps"), bench.value(f"{key}.ref.cp_r_sync.MBps")
    if fill and durable:
        print(
            f"    cache fill of {name} vs cp -r + sync -f (both end with the bytes on disk): "
            f"{fill / durable:.2f}x ({fill:.0f} vs {durable:.0f} MB/s)",
            flush=True,
        )


def _floor(bench: Bench, key: str, name: str) -> None:
    get, cp = bench.value("ref.get_1gib.MBps"), bench.value(f"{key}.ref.cp_r.MBps")
    if get is None or cp is None:
        bench.notes.append(f"reads: no floor for {name} (the reference section did not run)")
        return
    bench.record(f"{key}.floor.MBps", min(get, cp), "MB/s", f"floor for {name}: min(GET, cp -r)")


def _stream(bench: Bench, key: str, name: str, commit: str, nbytes: int) -> None:
    dataset = key
    run, out = _child(bench, "stream", spec=f"{dataset}@{commit}")
    if out["bytes"] != nbytes:
        raise BenchError(f"streaming {name} read {out['bytes']} bytes, not {nbytes}")
    bench.record(f"{key}.stream.s", run.seconds, "s", f"stream {name} (child process)")
    bench.record(f"{key}.stream.MBps", mb(nbytes) / run.seconds, "MB/s", f"stream {name} rate")
    bench.record(
        f"{key}.stream.op_MBps",
        mb(nbytes) / out["op_seconds"],
        "MB/s",
        f"stream {name}, in-process",
    )
    bench.record(f"{key}.stream.peak_mib", run.peak_mib, "MiB", f"stream {name} peak memory")
    record_cpu(bench, f"{key}.stream", run, nbytes, f"stream {name}")


def _child(bench: Bench, op: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    config = json.dumps({"settings": lakecache_ops._settings_dict(bench), **args})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    run = timed([sys.executable, Path(__file__), op, config], env=env, cwd=REPO, check=False)
    if run.returncode != 0:
        raise BenchError(f"reads {op} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    lines = run.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"reads {op} printed no result; stderr:\n{run.stderr[-2000:]}")
    return run, json.loads(lines[-1])


# --- the child: one operation ------------------------------------------------------------


def _child_main(op: str, config_json: str) -> None:
    config = json.loads(config_json)
    s = config.pop("settings")
    from lakecache.data.hub import Hub
    from lakecache.settings import Settings

    hub = Hub(Settings(home=Path(s.pop("home")), **s))
    result: dict[str, Any]
    if op == "stream":
        from lakecache.integrations.reader import CommitReader

        t = time.perf_counter()
        total = files = 0
        with CommitReader(config["spec"], cached=False, hub=hub) as reader:
            for _, data in reader.read_many(reader.entries()):
                total += len(data)
                files += 1
        result = {"bytes": total, "files": files, "op_seconds": time.perf_counter() - t}
    elif op in ("fill", "agent"):
        from lakecache.cache.service import CacheService

        svc = CacheService(hub)
        _volume(svc, config["site"], config["volume"], config["root"])
        commits = config["commits"] if op == "agent" else [config["commit"]]
        fills, cpu, rec = [], [], None
        for commit in commits:
            t, c = time.perf_counter(), os.times()
            rec = svc.ensure_ready(svc.request(config["dataset"], commit, volume=config["volume"]))
            fills.append(time.perf_counter() - t)
            # The process's CPU over the fill: every thread's (links, GETs, heartbeats).
            after = os.times()
            cpu.append((after.user - c.user, after.system - c.system))
            if rec.state != "ready":
                raise SystemExit(f"the fill of {commit} ended {rec.state}: {rec.error}")
        assert rec is not None
        from harness import tree_stats

        files, nbytes = tree_stats(svc.cache_path(rec))
        result = {"fills": fills, "cpu": cpu, "files": files, "bytes": nbytes}
    else:
        raise SystemExit(f"unknown op {op!r}")
    hub.close()
    print(json.dumps(result))


def _volume(svc: Any, site: str, volume: str, root: str) -> None:
    """Make ``site`` and its ``volume`` at ``root`` (idempotent: a rerun reuses them)."""
    from datetime import UTC, datetime

    from lakecache.errors import AlreadyExistsError

    topo, now = svc.topology, datetime.now(UTC)
    try:
        topo.add_site(site, "bench", now)
    except AlreadyExistsError:
        pass
    try:
        topo.add_volume(volume, site, root, CAPACITY, 86_400, now)
    except AlreadyExistsError:
        pass
    Path(root).mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
