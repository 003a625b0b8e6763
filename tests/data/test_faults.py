"""Bad input and faults: nothing is lost, nothing half-visible, errors name the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import tree, write

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import (
    ConflictError,
    IntegrityError,
    InvalidPathError,
    ObjectNotFoundError,
    SourceError,
)
from lakecache.lake.objects import (
    Commit,
    hash_bytes,
    manifest_key,
    normalize_path,
)
from lakecache.settings import Settings


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/path", "a/../../b", "nul\x00byte", "a\\b"])
def test_bad_paths_refused(bad: str) -> None:
    with pytest.raises(InvalidPathError, match="path"):
        normalize_path(bad)


def test_paths_normalised() -> None:
    assert normalize_path("./a//b/./c") == "a/b/c"
    assert normalize_path("sp ace/new\nline/ünï.png") == "sp ace/new\nline/ünï.png"


def test_backslash_name_refused_by_name(ds: Dataset, tmp_path: Path) -> None:
    write(tmp_path / "src", "ok.txt", b"1")
    write(tmp_path / "src", "bad\\name.txt", b"2")
    with pytest.raises(InvalidPathError, match=r"bad\\\\name.txt"):
        ds.commit(tmp_path / "src")
    assert ds.hub.catalog.head("xray") is None


def test_symlinks(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "real/data.bin", b"payload")
    (src / "link.bin").symlink_to("real/data.bin")
    (src / "linkdir").symlink_to("real", target_is_directory=True)
    c = ds.commit(src)
    assert c.file_count == 3
    ds.pull(None, tmp_path / "out")
    got = tree(tmp_path / "out")
    assert got == {
        "real/data.bin": b"payload",
        "link.bin": b"payload",
        "linkdir/data.bin": b"payload",
    }
    assert not (tmp_path / "out" / "link.bin").is_symlink()

    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (src / "escape").symlink_to(outside)
    with pytest.raises(SourceError, match="'escape' points outside"):
        ds.commit(src)
    (src / "escape").unlink()
    (src / "dangling").symlink_to(src / "nowhere")
    with pytest.raises(SourceError, match="dangling"):
        ds.commit(src)


def test_unreadable_file_stops_commit(
    ds: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, which reads any file whatever its mode, so the failing
    # open is simulated for one file; the rest of the pipeline is real.
    import builtins

    import lakecache.data.commit as commit_mod

    src = tmp_path / "src"
    for i in range(20):
        write(src, f"f{i}.bin", os.urandom(1000))
    real_open = builtins.open

    def guarded(path, *a, **k):  # type: ignore[no-untyped-def]
        if str(path).endswith("f7.bin"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(commit_mod, "open", guarded, raising=False)
    with pytest.raises(SourceError, match="cannot read 'f7.bin'.*nothing was committed"):
        ds.commit(src)
    assert ds.hub.catalog.head("xray") is None


def test_file_that_keeps_changing_is_reported(
    ds: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lakecache.data.commit as commit_mod

    src = tmp_path / "src"
    write(src, "stable.bin", b"s")
    write(src, "hot.bin", b"h" * 100)
    real_fstat = os.fstat
    calls = {"n": 0}

    class _St:
        def __init__(self, st: os.stat_result, bump: int) -> None:
            self._st, self._bump = st, bump

        def __getattr__(self, name: str) -> object:
            v = getattr(self._st, name)
            return v + self._bump if name == "st_mtime_ns" else v

    def fstat(fd: int) -> object:
        st = real_fstat(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("hot.bin"):
            calls["n"] += 1
            return _St(st, calls["n"])  # a writer touches it between every two looks
        return st

    monkeypatch.setattr(commit_mod.os, "fstat", fstat)
    with pytest.raises(SourceError, match="'hot.bin' kept changing"):
        ds.commit(src)
    assert ds.hub.catalog.head("xray") is None


def test_concurrent_writer_never_yields_a_wrong_manifest(ds: Dataset, tmp_path: Path) -> None:
    """A real writer rewrites files during the commit; whatever is committed must verify."""
    src = tmp_path / "src"
    for i in range(200):
        write(src, f"f{i:03d}.bin", os.urandom(20_000))
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            (src / f"f{n % 200:03d}.bin").write_bytes(os.urandom(10_000 + n % 5000))

    t = threading.Thread(target=writer)
    t.start()
    try:
        try:
            ds.commit(src)
        except SourceError as exc:
            assert "kept changing" in exc.message
            return
    finally:
        stop.set()
        t.join()
    # Pull verifies every blob against the manifest's digest and size.
    ds.pull(None, tmp_path / "out")
    for e in ds.files(None):
        assert hash_bytes((tmp_path / "out" / e.path).read_bytes()) == e.digest


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, json
    from pathlib import Path
    from lakecache import Dataset, Settings
    s = Settings(**json.loads(sys.argv[1]))
    ds = Dataset(sys.argv[2], settings=s)
    lake = ds.hub.lake
    real_put = lake.put
    def slow_put(key, data):
        if key.startswith("packs/") and key.endswith(".pack"):
            time.sleep(0.1)  # give the test time to kill us midway
        real_put(key, data)
    lake.put = slow_put
    ds.commit(sys.argv[3], message="killed")
    print("FINISHED")
    """
)


def _settings_json(s: Settings) -> str:
    import json

    keys = ("lake_url", "catalog_url", "s3_endpoint", "s3_access_key", "s3_secret_key", "author")
    d = {k: getattr(s, k) for k in keys}
    d.update(home=str(s.home), workers=2, pack_target=256 * 1024, pack_threshold=64 * 1024)
    return json.dumps(d)


def test_commit_killed_midway_leaves_no_commit_and_resumes(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(240):
        write(src, f"c{i % 3}/f{i:04d}.bin", os.urandom(30_000), age=10)
    s = ds.hub.settings
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, _settings_json(s), "xray", str(src)],
        stdout=subprocess.PIPE,
    )
    lake = ds.hub.lake
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Kill it once 4 packs are recorded in the catalog, not merely uploaded: a pack
        # whose record the kill cut off is rightly uploaded again by the resumed commit.
        packs = [o.key for o in lake.list("packs/") if o.key.endswith(".pack")]
        ids = [k.removeprefix("packs/").removesuffix(".pack") for k in packs]
        if len(ds.hub.catalog.pack_sizes(ids)) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert b"FINISHED" not in out, "the commit finished before it could be killed"
    assert ds.hub.catalog.head("xray") is None
    assert not list(lake.list("commits/"))

    again = Dataset("xray", settings=s.with_(pack_target=256 * 1024, pack_threshold=64 * 1024))
    c = again.commit(src, message="resumed")
    st = again.last_commit_stats
    assert st is not None
    total = 240 * 30_000
    assert c.bytes == total
    assert st.uploaded_bytes < total - 3 * 200_000, "packs uploaded before the kill were not reused"
    again.pull(None, tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


def test_racing_commits_one_wins_none_lost(hub: Hub, tmp_path: Path) -> None:
    Dataset.create("race", hub=hub)
    base = tmp_path / "base"
    write(base, "a.txt", b"base")
    Dataset("race", hub=hub).commit(base, message="base")
    head0 = hub.catalog.head("race")

    barrier = threading.Barrier(2)
    results: dict[str, object] = {}
    hubs = [Hub(hub.settings), Hub(hub.settings)]

    def run(i: int) -> None:
        h = hubs[i]
        real = h.catalog.add_commit

        def add_commit(commit: Commit, **kw: object) -> str:
            barrier.wait(timeout=30)  # both have read the same parent by now
            return real(commit, **kw)  # type: ignore[arg-type]

        h.catalog.add_commit = add_commit  # type: ignore[method-assign]
        src = tmp_path / f"src{i}"
        write(src, "a.txt", f"writer {i}".encode())
        try:
            results[f"w{i}"] = Dataset("race", hub=h).commit(src, message=f"writer {i}")
        except ConflictError as exc:
            results[f"w{i}"] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [v for v in results.values() if isinstance(v, ConflictError)]
    wins = [v for v in results.values() if isinstance(v, Commit)]
    assert len(errors) == 1 and len(wins) == 1
    assert "run the same commit again" in errors[0].hint
    winner = wins[0]
    assert winner.parents == (head0,)
    assert hub.catalog.head("race") == winner.id
    # The loser re-runs: its commit lands on top of the winner's; nothing is lost.
    loser = 0 if isinstance(results["w0"], ConflictError) else 1
    c = Dataset("race", hub=hub).commit(tmp_path / f"src{loser}", message="retry")
    assert c.parents == (winner.id,)
    assert [e.commit.message for e in Dataset("race", hub=hub).log()][:2] == [
        "retry",
        winner.message,
    ]
    for h in hubs:
        h.close()


def _first_pack(ds: Dataset) -> str:
    return next(o.key for o in ds.hub.lake.list("packs/") if o.key.endswith(".pack"))


def test_corrupted_pack_fails_pull_naming_file_and_object(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "only/file.png", os.urandom(5000))
    ds.commit(src)
    key = _first_pack(ds)
    data = bytearray(ds.hub.lake.get(key))
    data[100] ^= 0xFF
    ds.hub.lake.put(key, bytes(data))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError) as err:
        ds.pull(None, out)
    assert "'only/file.png'" in err.value.message and key in err.value.message
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_missing_pack_fails_pull_naming_file_and_object(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "only/file.png", os.urandom(5000))
    ds.commit(src)
    key = _first_pack(ds)
    ds.hub.lake.delete([key])
    out = tmp_path / "out"
    with pytest.raises(ObjectNotFoundError) as err:
        ds.pull(None, out)
    assert "'only/file.png'" in err.value.message and key in err.value.message
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_manifest_that_escapes_is_refused(ds: Dataset, tmp_path: Path) -> None:
    """A crafted manifest in the lake with '../' never writes outside the destination."""
    ds.commit(_one_file(tmp_path), message="ok")
    good = ds.files(None)[0]
    # encode_manifest would refuse this path, so the forged manifest is packed by hand.
    import msgpack
    import zstandard

    body = msgpack.packb({"format": "lakecache-manifest/1", "count": 1}) + msgpack.packb(
        ("../evil.txt", bytes.fromhex(good.digest), good.size, 0o644), use_bin_type=True
    )
    raw = zstandard.ZstdCompressor().compress(body)
    digest = hash_bytes(raw)
    ds.hub.lake.put(manifest_key(digest), raw)
    head = ds.hub.catalog.head("xray")
    evil = Commit(
        "xray",
        digest,
        (head,) if head else (),
        "x",
        "evil",
        "2026-01-01T00:00:00+00:00",
        1,
        good.size,
    )
    ds.hub.catalog.add_commit(evil, expected_head=head)
    with pytest.raises(InvalidPathError, match=r"\.\."):
        ds.pull(None, tmp_path / "out" / "inner")
    assert not (tmp_path / "out" / "evil.txt").exists()


def _one_file(tmp_path: Path) -> Path:
    src = tmp_path / "one"
    write(src, "f.txt", b"hello")
    return src
