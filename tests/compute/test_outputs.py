"""Job outputs: collected into the lake when the attempt ends, listed on the job, downloaded
verified; what a job writes outside its outputs folder (``..``, links out of it, special
files) is never collected. Real processes, a real lake folder and catalog."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import World

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.compute.model import JobRecord, OutputFile, Resources
from lakecache.compute.outputs import safe_target, scan_outputs, unpack_tar, write_verified
from lakecache.compute.runner import JobRunner
from lakecache.compute.sdk import Job
from lakecache.compute.store import ComputeStore
from lakecache.data.hub import Hub
from lakecache.errors import IntegrityError, InvalidPathError
from lakecache.lake.objects import decode_manifest, hash_bytes, manifest_key

ONE_CPU = Resources(1000, 10**9)


@pytest.fixture
def onprem(hub: Hub, world: World, tmp_path: Path) -> Iterator[JobRunner]:
    caches = CacheService(hub, clock=SystemClock(), poll_every=0.05)
    runner = JobRunner(
        caches, "onprem", interval=0.05, heartbeat_every=0.2, jobs_root=tmp_path / "jobs"
    )
    yield runner
    runner.close()


def _run(store: ComputeStore, runner: JobRunner, script: str, **kw: object) -> JobRecord:
    job = store.submit(
        "burst",
        ["sh", "-c", script],
        request=ONE_CPU,
        submitted_by="tester",
        now=SystemClock().now(),
        **kw,  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runner.run_once()
        rec = store.get_job(job.id)
        if rec.done:
            return rec
        time.sleep(0.02)
    raise AssertionError(f"job {job.id} is still {store.get_job(job.id).state}")


def test_outputs_are_collected_into_the_lake_and_downloaded_verified(
    hub: Hub, store: ComputeStore, onprem: JobRunner, tmp_path: Path
) -> None:
    job = _run(
        store,
        onprem,
        'cd "$LAKECACHE_OUTPUTS" && mkdir -p model && printf weights > model/w.bin'
        " && printf '{\"loss\": 0.1}' > metrics.json && printf '#!/bin/sh\\n' > run.sh"
        " && chmod +x run.sh",
    )
    assert job.state == "succeeded", job.reason
    files = {f.path: f for f in store.outputs(job.id)}
    assert sorted(files) == ["metrics.json", "model/w.bin", "run.sh"]
    assert files["model/w.bin"] == OutputFile("model/w.bin", hash_bytes(b"weights"), 7, 0o644)
    assert files["run.sh"].mode == 0o755
    assert (job.outputs_files, job.outputs_bytes) == (3, 7 + 13 + 10)
    # The list is a manifest in the lake too, content-addressed like a commit's.
    assert job.outputs_manifest is not None
    entries = decode_manifest(hub.lake.get(manifest_key(job.outputs_manifest)))
    assert [e.path for e in entries] == ["metrics.json", "model/w.bin", "run.sh"]
    # The attempt's folder can go: the bytes are in the lake.
    assert job.workdir is not None
    for f in (Path(job.workdir) / "outputs").rglob("*"):
        if f.is_file():
            f.unlink()
    with Job(job.id, hub=hub) as handle:
        written = handle.download_outputs(tmp_path / "got")
    assert len(written) == 3
    assert (tmp_path / "got" / "model" / "w.bin").read_bytes() == b"weights"
    assert (tmp_path / "got" / "metrics.json").read_text() == '{"loss": 0.1}'
    assert os.access(tmp_path / "got" / "run.sh", os.X_OK)


def test_a_job_writing_outside_its_outputs_gets_none_of_it_collected(
    hub: Hub, store: ComputeStore, onprem: JobRunner, tmp_path: Path
) -> None:
    secret = tmp_path / "agent-secret.txt"
    secret.write_text("the agent's own file")
    secret_dir = tmp_path / "agent-dir"
    secret_dir.mkdir()
    (secret_dir / "key").write_text("private")
    job = _run(
        store,
        onprem,
        'cd "$LAKECACHE_OUTPUTS" && echo kept > kept.txt'
        ' && echo escaped > "$LAKECACHE_OUTPUTS/../escaped.txt"'
        f" && ln -s {secret} stolen.txt && ln -s {secret_dir} stolen-dir"
        " && ln -s kept.txt alias.txt && mkfifo pipe",
    )
    assert job.state == "succeeded", job.reason
    assert [f.path for f in store.outputs(job.id)] == ["kept.txt"]
    (event,) = [e for e in store.timeline(job.id) if e.kind == "outputs"]
    assert "1 file(s)" in event.detail
    for name in ("stolen.txt (a symbolic link", "stolen-dir (a symbolic link", "pipe (not a"):
        assert name in event.detail
    # The bytes of the files it pointed at are nowhere in the lake's blob index.
    for data in (b"the agent's own file", b"private", b"escaped\n"):
        assert hub.catalog.known_blobs([hash_bytes(data)]) == set()


def test_scan_leaves_out_links_and_special_files(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "deep.txt").write_text("x")
    (out / "link").symlink_to(out / "a" / "b" / "deep.txt")
    (out / "a" / "up").symlink_to(tmp_path)
    os.mkfifo(out / "fifo")
    scan = scan_outputs(out)
    assert [f.path for f in scan.files] == ["a/b/deep.txt"]
    assert [p for p, _ in scan.left_out] == ["a/up", "fifo", "link"]
    assert scan_outputs(tmp_path / "missing").files == []


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def test_an_unpacked_tar_keeps_regular_files_under_normalised_names_only(tmp_path: Path) -> None:
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "ok/file.txt"
    stream = _tar(
        (tarfile.TarInfo("ok/file.txt"), b"fine"),
        (tarfile.TarInfo("./ok//dotted.txt"), b"also fine"),
        (tarfile.TarInfo("../escape.txt"), b"no"),
        (tarfile.TarInfo("/abs.txt"), b"no"),
        (tarfile.TarInfo("ok/../../up.txt"), b"no"),
        (link, None),
        (hard, None),
        (tarfile.TarInfo("ok/file.txt"), b"twice"),
        (tarfile.TarInfo("ok/file.txt/under"), b"under a file"),
    )
    dest = tmp_path / "spool" / "outputs"
    scan = unpack_tar(stream, dest)
    assert [f.path for f in scan.files] == ["ok/dotted.txt", "ok/file.txt"]
    assert sorted(p for p, _ in scan.left_out) == sorted(
        [
            "../escape.txt",
            "/abs.txt",
            "ok/../../up.txt",
            "link",
            "hard",
            "ok/file.txt",
            "ok/file.txt/under",
        ]
    )
    assert (dest / "ok" / "file.txt").read_bytes() == b"fine"  # the first one given
    assert not (tmp_path / "spool" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "up.txt").exists()


def test_a_download_never_writes_outside_its_folder(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidPathError):
        safe_target(dest, "../x")
    with pytest.raises(InvalidPathError):
        safe_target(dest, "/etc/x")
    (dest / "sub").symlink_to(tmp_path)
    with pytest.raises(InvalidPathError, match="symlink"):
        safe_target(dest, "sub/x")
    good = OutputFile("a.txt", hash_bytes(b"abc"), 3)
    write_verified(safe_target(dest, "a.txt"), iter([b"ab", b"c"]), good)
    assert (dest / "a.txt").read_bytes() == b"abc"
    bad = OutputFile("b.txt", hash_bytes(b"abc"), 3)
    with pytest.raises(IntegrityError):
        write_verified(safe_target(dest, "b.txt"), iter([b"abd"]), bad)
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "sub"]  # no temp left


def test_a_failed_job_keeps_what_it_wrote_and_a_job_writing_nothing_lists_nothing(
    store: ComputeStore, onprem: JobRunner
) -> None:
    failed = _run(store, onprem, 'echo partial > "$LAKECACHE_OUTPUTS/checkpoint"; exit 3')
    assert (failed.state, failed.exit_code) == ("failed", 3)
    assert [f.path for f in store.outputs(failed.id)] == ["checkpoint"]
    quiet = _run(store, onprem, "true")
    assert quiet.state == "succeeded"
    assert store.outputs(quiet.id) == [] and quiet.outputs_manifest is None
    assert "outputs" not in [e.kind for e in store.timeline(quiet.id)]


def test_lake_garbage_collection_keeps_job_outputs(
    hub: Hub, store: ComputeStore, onprem: JobRunner, tmp_path: Path
) -> None:
    from datetime import timedelta

    from lakecache.compute.outputs import upload_outputs
    from lakecache.data.gc import collect

    job = _run(store, onprem, 'printf kept-by-gc > "$LAKECACHE_OUTPUTS/result.txt"')
    assert job.state == "succeeded", job.reason
    # Bytes uploaded the same way but listed on no job are garbage.
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "x.txt").write_bytes(b"nobody keeps this")
    upload_outputs(scan_outputs(orphan), lake=hub.lake, catalog=hub.catalog, settings=hub.settings)
    for _ in range(2):  # condemn, then delete what stayed unreachable
        collect(hub.lake, hub.catalog, grace=timedelta(0))
    assert hub.catalog.known_blobs([hash_bytes(b"nobody keeps this")]) == set()
    assert hub.catalog.known_blobs([hash_bytes(b"kept-by-gc")]) == {hash_bytes(b"kept-by-gc")}
    with Job(job.id, hub=hub) as handle:
        handle.download_outputs(tmp_path / "after-gc")
    assert (tmp_path / "after-gc" / "result.txt").read_bytes() == b"kept-by-gc"
