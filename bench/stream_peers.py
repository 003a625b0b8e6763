"""Streaming reads from the lake beside what users of other tools do (the AI library's
targets): ``StreamingDataset`` on an S3 lake with no cache, against

- reading the same files through a FUSE mount of the bucket (``weed mount``, SeaweedFS's
  own FUSE client: the peer for Mountpoint-for-S3 and Alluxio-FUSE users), in the
  commit's order; target: streaming at least 2x;
- ``s5cmd`` download of the files, then reading them; target: at least 1.5x.

One synthetic NIH-layout set of PNGs (``BENCH_STREAM_IMAGES``, default 1,500 of 512 px,
scaled by ``BENCH_SCALE``) is committed to a bucket of the bench's SeaweedFS and copied
next to it as plain objects for the peers. Every reader is served by the same SeaweedFS,
so the files' bytes are equally warm in its volume files for all three. Streaming and
s5cmd each run twice, alternated, and the best of each counts.

When the run has dataset A (``--only stream-peers`` loads it), the same three-way
comparison is made on A too, in the same lake and bucket (keys ``stream.a.*``). That
adds 33 s at 2,000 files of A (216 MB, load average 3 to 4) and, extrapolated, about
5 minutes at full A (2.14 GB): A committed to the lake and copied to the bucket, then
two rounds of streaming and s5cmd download+read and one pass through the FUSE mount.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import peers
from harness import Bench, BenchError, mb, say

TARGET_X_FUSE = 2.0
TARGET_X_S5CMD = 1.5
#: Timed passes of each side (best of them).
ROUNDS = 2
BUCKET = "bench-stream"


def stream_peers(bench: Bench) -> None:
    """StreamingDataset (no cache) vs a FUSE mount of the bucket and s5cmd download+read."""
    from lakecache import synth
    from lakecache.settings import Settings

    scale = float(os.environ.get("BENCH_SCALE", "1"))
    images = max(200, int(int(os.environ.get("BENCH_STREAM_IMAGES", "1500")) * scale))
    work = bench.scratch("stream-peers")
    src = work / "src"
    say(f"stream peers: {images:,} PNGs of 512 px, committed and copied to s3://{BUCKET}")
    synth.generate_nih(src, images, size=512, seed=5)
    bench.create_bucket(BUCKET)
    server = bench.server
    settings = Settings(
        home=work / "home",
        lake_url=f"s3://{BUCKET}/lake",
        s3_endpoint=server.endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        author="bench",
    )
    _compare(bench, settings, work, src, "stream", "stream.", "the PNG set")
    a = bench.datasets.get("A")
    if a is not None:
        say(f"stream peers: A ({a.files:,} files), committed and copied to s3://{BUCKET}")
        t0 = time.perf_counter()
        _compare(bench, settings, work / "a", a.path, "stream-a", "stream.a.", "A")
        print(f"    A's figures added {time.perf_counter() - t0:.0f} s to the section", flush=True)


def _compare(
    bench: Bench, settings: Any, work: Path, src: Path, name: str, key: str, label: str
) -> None:
    """Commit ``src`` as dataset ``name`` to the S3 lake, copy it to ``s3://BUCKET/name/``
    as plain objects, and record the three-way comparison under keys starting ``key``."""
    from lakecache.data.dataset import Dataset
    from lakecache.data.hub import Hub

    work.mkdir(exist_ok=True)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    nbytes = sum(p.stat().st_size for p in files)
    hub = Hub(settings)
    try:
        commit = Dataset.create(name, hub=hub, exist_ok=True).commit(src, "bench")
    finally:
        hub.close()
    s5 = peers._s5cmd(bench)
    prefix = f"{BUCKET}/{name}"
    _run([*s5, "cp", f"{src}/", f"s3://{prefix}/"], bench)
    print(f"    {len(files):,} files, {mb(nbytes):.0f} MB", flush=True)

    # Each side ROUNDS times, alternated, best of each: one pass is a few seconds, and
    # a shared machine's noise then hits both sides alike.
    stream_s = s5_s = math.inf
    download = work / "download"
    for _ in range(ROUNDS):
        stream_s = min(stream_s, _stream(f"{name}@{commit.id}", settings, nbytes))
        s5_s = min(s5_s, _s5cmd_read(s5, prefix, download, nbytes, bench))
    shutil.rmtree(download, ignore_errors=True)  # full A is 2 GB more on the disk
    bench.record(
        f"{key}lakecache.MBps", mb(nbytes) / stream_s, "MB/s", f"StreamingDataset, S3, {label}"
    )
    bench.record(
        f"{key}s5cmd_read.MBps", mb(nbytes) / s5_s, "MB/s", f"s5cmd download, then read, {label}"
    )

    fuse_s = _fuse_read(bench, work, prefix, key, label, src, files, nbytes)
    for x_key, seconds, target, peer in (
        ("x_s5cmd_read", s5_s, TARGET_X_S5CMD, "s5cmd download, then read"),
        ("x_fuse", fuse_s, TARGET_X_FUSE, "a FUSE mount of the bucket (weed mount)"),
    ):
        if seconds is None:
            continue
        x = seconds / stream_s
        bench.record(f"{key}{x_key}", x, "x", f"StreamingDataset speed over {peer}, {label}")
        bench.notes.append(
            f"stream peers: StreamingDataset {x:.1f}x {peer} on {label} (target >= "
            f"{target:.1f}x: {'PASS' if x >= target else 'FAIL'})"
        )


def _stream(ref: str, settings: Any, nbytes: int) -> float:
    """Seconds to stream the commit from the lake (no cache anywhere), every byte verified,
    from making the dataset to its last file."""
    from lakecache.torch import StreamingDataset

    t0 = time.perf_counter()
    stream = StreamingDataset(ref, settings=settings)
    got = 0
    try:
        for item in stream:
            got += len(item)
        source = stream.source
    finally:
        stream.close()
    seconds = time.perf_counter() - t0
    if got != nbytes or source != "stream":
        raise BenchError(f"streamed {got} bytes from {source}, expected {nbytes} from the lake")
    return seconds


def _s5cmd_read(s5: list[str], prefix: str, dl: Path, nbytes: int, bench: Bench) -> float:
    """Seconds to download every file under ``s3://prefix/`` with s5cmd into a fresh
    folder, then read each one."""
    shutil.rmtree(dl, ignore_errors=True)
    t0 = time.perf_counter()
    _run([*s5, "cp", f"s3://{prefix}/*", f"{dl}/"], bench)
    read = sum(len(p.read_bytes()) for p in sorted(q for q in dl.rglob("*") if q.is_file()))
    seconds = time.perf_counter() - t0
    if read != nbytes:
        raise BenchError(f"s5cmd download read {read} bytes, expected {nbytes}")
    return seconds


def _fuse_read(
    bench: Bench,
    work: Path,
    prefix: str,
    key: str,
    label: str,
    src: Path,
    files: list[Path],
    nbytes: int,
) -> float | None:
    """Seconds to read every file through ``weed mount`` of the objects copied under
    ``s3://prefix/``, in order; None (with a note saying why) where FUSE cannot be used
    on this machine."""
    unmount = shutil.which("fusermount3") or shutil.which("fusermount")
    weed = Path(sys.executable).parent / "weed"
    if not os.path.exists("/dev/fuse") or unmount is None or not weed.exists():
        bench.notes.append(
            f"stream peers, {label}: no FUSE here (/dev/fuse, fusermount or weed missing)"
        )
        return None
    mnt = work / "mnt"
    mnt.mkdir()
    ports = bench.server.ports
    log = open(work / "weed-mount.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(weed),
            "mount",
            f"-filer=127.0.0.1:{ports['filer.port']}.{ports['filer.port.grpc']}",
            f"-dir={mnt}",
            f"-filer.path=/buckets/{prefix}",
            "-cacheCapacityMB=0",  # no local chunk cache: every read goes to the store
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                bench.notes.append(
                    f"stream peers, {label}: weed mount did not mount "
                    f"(see {work / 'weed-mount.log'})"
                )
                return None
            time.sleep(0.1)
        t0 = time.perf_counter()
        read = sum(len((mnt / p.relative_to(src)).read_bytes()) for p in files)
        seconds = time.perf_counter() - t0
        if read != nbytes:
            raise BenchError(f"the FUSE mount gave {read} bytes, expected {nbytes}")
        bench.record(
            f"{key}fuse.MBps", mb(nbytes) / seconds, "MB/s", f"read through weed mount, {label}"
        )
        return seconds
    finally:
        subprocess.run([unmount, "-u", str(mnt)], capture_output=True, check=False)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _run(argv: list[str], bench: Bench) -> None:
    r = subprocess.run(argv, env=bench.s3_env(), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise BenchError(f"{argv[0]} {argv[3]} failed: {r.stderr[-2000:]}")
