"""The peers and the physical limits, on the same files and the same SeaweedFS.

- reference: ``cp -r`` of dataset A (local disk copy), and one 1 GiB object
  uploaded then downloaded with s5cmd (the loopback rate of a single large object).
- s5cmd: ``cp 'A/*'`` up into a bucket, then down into an empty folder.
- dvc: ``dvc add`` + ``dvc push`` in a fresh git+dvc project, then ``dvc pull``
  in a fresh clone with an empty cache (and an empty site cache).

The peers run from ``.bench-venv`` (``make bench`` installs them there), so their
pins never meet ours.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness import Bench, BenchError, check_copy, mb, record_cpu, remove, say, timed, warm

GIB = 1 << 30


def reference(bench: Bench) -> None:
    """Physical limits: a local ``cp -r`` of A, and a 1 GiB single-object GET."""
    a = bench.datasets["A"]
    say("reference: cp -r A (its files read once first: the copy times the writes)")
    dst = bench.work_dir / "cp-A"
    remove(dst)
    warm(a.path)
    run = timed(["cp", "-r", a.path, dst])
    check_copy(bench, dst, a, "cp -r")
    bench.record("ref.cp_r.s", run.seconds, "s", "cp -r A")
    bench.record("ref.cp_r.MBps", mb(a.bytes) / run.seconds, "MB/s", "cp -r A rate")

    say("reference: one 1 GiB object, s5cmd up and down")
    obj = _one_gib(bench.data_dir / "one-gib.bin")
    bench.create_bucket("bench-ref")
    s5 = _s5cmd(bench)
    url = "s3://bench-ref/one-gib.bin"
    up = timed([*s5, "cp", obj, url], env=bench.s3_env())
    bench.record("ref.put_1gib.MBps", mb(GIB) / up.seconds, "MB/s", "1 GiB PUT (s5cmd)")
    best = None
    for _ in range(2):  # best of two: a single large GET is noisy on a loaded machine
        dl = bench.scratch("one-gib-get")
        run = timed([*s5, "cp", url, dl / "one-gib.bin"], env=bench.s3_env())
        if (dl / "one-gib.bin").stat().st_size != GIB:
            raise BenchError("1 GiB GET: the downloaded object has the wrong size")
        best = run.seconds if best is None else min(best, run.seconds)
        remove(dl)
    assert best is not None
    bench.record("ref.get_1gib.MBps", mb(GIB) / best, "MB/s", "1 GiB GET (s5cmd, best of 2)")


def s5cmd(bench: Bench) -> None:
    """s5cmd upload of A into an empty bucket, and download into an empty folder."""
    a = bench.datasets["A"]
    s5 = _s5cmd(bench)
    env = bench.s3_env()
    bench.create_bucket("bench-s5cmd")
    say("s5cmd: upload A")
    up = timed(
        [*s5, "cp", f"{a.path}/*", "s3://bench-s5cmd/A/"],
        env=env,
        stdout_to=bench.work_dir / "s5cmd-upload.log",
    )
    bench.record("a.s5cmd.upload.s", up.seconds, "s", "s5cmd upload A")
    bench.record("a.s5cmd.upload.MBps", mb(a.bytes) / up.seconds, "MB/s", "s5cmd upload rate")
    bench.record("a.s5cmd.upload.peak_mib", up.peak_mib, "MiB", "s5cmd upload peak memory")

    say("s5cmd: download A into an empty folder")
    dst = bench.scratch("s5cmd-A")
    down = timed(
        [*s5, "cp", "s3://bench-s5cmd/A/*", f"{dst}/"],
        env=env,
        stdout_to=bench.work_dir / "s5cmd-download.log",
    )
    check_copy(bench, dst, a, "s5cmd download")
    bench.record("a.s5cmd.download.s", down.seconds, "s", "s5cmd download A")
    bench.record("a.s5cmd.download.MBps", mb(a.bytes) / down.seconds, "MB/s", "s5cmd download rate")
    record_cpu(bench, "a.s5cmd.download", down, a.bytes, "s5cmd download A")
    remove(dst)


def dvc(bench: Bench) -> None:
    """dvc add + push of A from a fresh project, then dvc pull in a fresh clone."""
    a = bench.datasets["A"]
    tool = str(bench.peers_bin / "dvc")
    env = {
        **bench.s3_env(),
        "DVC_NO_ANALYTICS": "1",
        # A fresh site cache, so the pull cannot lean on an index from an earlier run.
        "DVC_SITE_CACHE_DIR": str(bench.scratch("dvc-site-cache")),
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }
    bench.create_bucket("bench-dvc")
    project = bench.scratch("dvc-project")
    endpoint = bench.server.endpoint
    setup = [
        ["git", "init", "-q"],
        [tool, "init", "-q"],
        [tool, "config", "core.autostage", "false"],
        [tool, "remote", "add", "-d", "lake", "s3://bench-dvc/store"],
        [tool, "remote", "modify", "lake", "endpointurl", endpoint],
        [tool, "remote", "modify", "lake", "region", "us-east-1"],
        [tool, "remote", "modify", "--local", "lake", "access_key_id", bench.server.access_key],
        [
            *(tool, "remote", "modify", "--local", "lake"),
            *("secret_access_key", bench.server.secret_key),
        ],
    ]
    for argv in setup:
        timed(argv, env=env, cwd=project)
    # The data goes inside the project, outside the timing: reuse the cp -r copy if there.
    data = project / "data"
    copied = bench.work_dir / "cp-A"
    if copied.is_dir():
        os.rename(copied, data)
    else:
        shutil.copytree(a.path, data)

    say("dvc: add + push A")
    add = timed([tool, "add", "-q", "data"], env=env, cwd=project)
    bench.record("a.dvc.add.s", add.seconds, "s", "dvc add A")
    push = timed([tool, "push", "-q"], env=env, cwd=project)
    bench.record("a.dvc.push.s", push.seconds, "s", "dvc push A")
    bench.record("a.dvc.add_push.s", add.seconds + push.seconds, "s", "dvc add + push A")
    bench.record(
        "a.dvc.add_push.peak_mib", max(add.peak_mib, push.peak_mib), "MiB", "dvc peak memory"
    )
    timed(["git", "add", "data.dvc", ".gitignore", ".dvc/config"], env=env, cwd=project)
    timed(["git", "commit", "-qm", "dataset A"], env=env, cwd=project)

    say("dvc: pull A into a fresh clone")
    clone = bench.work_dir / "dvc-clone"
    remove(clone)
    timed(["git", "clone", "-q", project, clone], env=env)
    shutil.copy(project / ".dvc" / "config.local", clone / ".dvc" / "config.local")
    remove(project)  # its cache and workspace: 2x A that the pull must not see
    env["DVC_SITE_CACHE_DIR"] = str(bench.scratch("dvc-site-cache-clone"))
    pull = timed([tool, "pull", "-q"], env=env, cwd=clone)
    check_copy(bench, clone / "data", a, "dvc pull")
    bench.record("a.dvc.pull.s", pull.seconds, "s", "dvc pull A")
    bench.record("a.dvc.pull.MBps", mb(a.bytes) / pull.seconds, "MB/s", "dvc pull rate")
    remove(clone)


def _s5cmd(bench: Bench) -> list[str]:
    tool = bench.peers_bin / "s5cmd"
    if not tool.exists():
        raise BenchError(f"{tool} not found: run `make bench`, which installs the peers")
    return [str(tool), "--endpoint-url", bench.server.endpoint]


def _one_gib(path: Path) -> Path:
    """A 1 GiB file of random bytes, written once and kept between runs."""
    if path.exists() and path.stat().st_size == GIB:
        return path
    tmp = path.with_suffix(".tmp")
    chunk = 16 << 20
    with open(tmp, "wb") as f:
        for _ in range(GIB // chunk):
            f.write(os.urandom(chunk))
    os.replace(tmp, path)
    return path
