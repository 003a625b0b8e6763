"""Commit, pull and read datasets through a live server, as its users, with no lake credentials.

Each test runs against a server on a folder lake (bytes streamed by the server)
and one on a real SeaweedFS bucket (bytes moved by the client with presigned
URLs); see ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures.seaweed import drop_bucket, new_bucket
from helpers import make_files, tree, write
from server.live import build_world

from client.world import LakeWorld, MiB, Recorder
from lakecache.client import AccessDeniedError, RemoteCatalog, RemoteLake
from lakecache.data.dataset import Dataset
from lakecache.errors import ConflictError, DatasetNotFoundError, ObjectNotFoundError, UserError
from lakecache.lake.objects import commit_key
from lakecache.services.seaweed import SeaweedServer
from lakecache.settings import Settings


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _source(root: Path) -> Path:
    """Small files (packed), a 6 MiB file (alone, one PUT) and an 11 MiB one (multipart)."""
    make_files(root, n=40, size=5000)
    write(root, "big/six.bin", os.urandom(6 * MiB), age=10)
    write(root, "big/eleven.bin", os.urandom(11 * MiB + 123), age=10)
    write(root, "empty.txt", b"", age=10)
    return root


def test_sdk_commit_log_ls_diff_tag_pull_round_trip(lake_world: LakeWorld, tmp_path: Path) -> None:
    hub = lake_world.hub("wendy", tmp_path / "client")
    try:
        assert isinstance(hub.lake, RemoteLake) and isinstance(hub.catalog, RemoteCatalog)
        name = _name("sdk")
        ds = Dataset.create(name, hub=hub, description="made through the server")
        src = _source(tmp_path / "src")
        first = ds.commit(src, "first")
        stats = ds.last_commit_stats
        # 43 files; the empty one's blob is in the lake already (xray has one).
        assert stats is not None and stats.uploaded_blobs == 42 and stats.packs >= 1
        assert ds.tag("v1") == first.id

        write(src, "Edema/00000.png", b"changed", age=5)
        write(src, "added/new.txt", b"new\n", age=5)
        second = ds.commit(src, "second")
        stats = ds.last_commit_stats
        assert stats is not None and stats.uploaded_blobs == 2  # only what changed moved

        log = ds.log()
        assert [e.id for e in log] == [second.id, first.id] and log[1].tags == ("v1",)
        assert [i.name for i in ds.ls("v1")] == ["Edema", "Hernia", "Mass", "big", "empty.txt"]
        diff = ds.diff("v1")
        assert diff.counts == {"added": 1, "removed": 0, "modified": 1}

        pulled = ds.pull("latest", tmp_path / "pulled")
        assert pulled.files == 44 and tree(tmp_path / "pulled") == tree(src)
        ds.pull("v1", tmp_path / "old", ["big"])
        assert tree(tmp_path / "old") == {k: v for k, v in tree(src).items() if k.startswith("big")}

        # What the server holds is what the client sent: the server's own view agrees.
        direct = Dataset(name, hub=lake_world.world.plane.hub)
        assert direct.resolve("v1") == first.id and direct.files("latest") == ds.files("latest")
    finally:
        hub.close()
    home = tmp_path / "client"
    assert not (home / "lake").exists() and not (home / "catalog.db").exists()


def test_a_commit_through_a_server_is_by_the_logged_in_user(
    lake_world: LakeWorld, tmp_path: Path, recorder: Recorder
) -> None:
    hub = lake_world.hub("wendy", tmp_path / "client", author="someone@laptop")
    try:
        name = _name("who")
        ds = Dataset.create(name, hub=hub)
        src = make_files(tmp_path / "src", n=5, size=1000)
        first = ds.commit(src, "first")
        write(src, "added.txt", b"more\n", age=5)
        second = ds.commit(src, "second")
        assert first.author == second.author == "wendy"
        assert [e.commit.author for e in ds.log()] == ["wendy", "wendy"]
        server = lake_world.world.plane.hub.catalog
        assert server.get_commit(name, second.id).author == "wendy"
        # Asked once per connection, not once per commit.
        asked = [u for u in recorder.sent_urls if u.endswith("/api/v1/auth/session")]
        assert len(asked) == 1
    finally:
        hub.close()


def test_cli_init_commit_log_ls_diff_tag_show_pull(
    lake_world: LakeWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lakecache.cli.main import main

    for k in list(os.environ):
        if k.startswith(("LAKECACHE_", "AWS_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "client"))
    monkeypatch.setenv("LAKECACHE_SERVER", lake_world.url)
    monkeypatch.setenv("LAKECACHE_TOKEN", lake_world.world.tokens["wendy"])
    monkeypatch.setenv("LAKECACHE_AUTHOR", "someone@laptop")  # the server's user name wins
    name = _name("cli")
    src = make_files(tmp_path / "src", n=30, size=4000)

    def run(*args: str) -> str:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    run("data", "init", name, "-d", "from the CLI")
    one = json.loads(run("data", "commit", name, str(src), "-m", "one", "--json", "-t", "v1"))
    write(src, "Mass/extra.png", b"more", age=5)
    two = json.loads(run("data", "commit", name, str(src), "-m", "two", "--json", "-q"))
    assert one["files"] == 30 and two["files"] == 31 and two["uploaded_blobs"] == 1
    log = json.loads(run("data", "log", name, "--json"))
    assert [e["id"] for e in log] == [two["id"], one["id"]] and log[1]["tags"] == ["v1"]
    assert [e["author"] for e in log] == ["wendy", "wendy"]
    listed = {d["name"]: d for d in json.loads(run("data", "ls", "--json"))}
    assert listed[name]["commit_count"] == 2 and listed[name]["file_count"] == 31
    assert "xray" in listed and "hidden" not in listed  # what wendy may see, no more
    mass = json.loads(run("data", "ls", f"{name}@v1", "Mass", "--json"))
    assert len(mass) == 10 and all(i["type"] == "file" for i in mass)
    diff = json.loads(run("data", "diff", f"{name}@v1", "--json"))
    assert (diff["added"], diff["removed"], diff["modified"]) == (1, 0, 0)
    assert "tagged" in run("data", "tag", f"{name}@latest", "v2")
    show = json.loads(run("data", "show", f"{name}@v2", "--json"))
    assert show["id"] == two["id"] and show["tags"] == ["v2"]
    assert "deleted" in run("data", "tag", name, "v2", "--delete")
    pulled = json.loads(run("data", "pull", f"{name}@v1", str(tmp_path / "out"), "--json"))
    assert pulled["files"] == 30 and not (tmp_path / "out" / "Mass" / "extra.png").exists()


def test_the_login_file_is_all_a_client_needs(
    lake_world: LakeWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from server.live import PASSWORD

    from lakecache.cli.main import main

    for k in list(os.environ):
        if k.startswith(("LAKECACHE_", "AWS_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "client"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["login", lake_world.url, "-u", "rita", "--password-stdin"]) == 0
    capsys.readouterr()
    assert main(["data", "log", "xray", "--json"]) == 0
    log = json.loads(capsys.readouterr().out)
    assert log[-1]["tags"] == ["v1"]
    assert main(["data", "pull", "xray@v1", str(tmp_path / "out"), "-q"]) == 0
    assert (tmp_path / "out" / "images" / "a.png").is_file()
    # The SDK reads the same file.
    ds = Dataset("xray")
    try:
        assert ds.resolve("v1") == log[-1]["id"]
    finally:
        ds.hub.close()


def test_a_reader_can_pull_but_not_commit(lake_world: LakeWorld, tmp_path: Path) -> None:
    hub = lake_world.hub("rita", tmp_path / "client")
    try:
        ds = Dataset("xray", hub=hub)
        ds.pull("v1", tmp_path / "out")
        assert (tmp_path / "out" / "docs" / "readme.txt").read_bytes() == b"hello\n"
        with pytest.raises(AccessDeniedError) as caught:
            ds.commit(make_files(tmp_path / "src", n=3), "not allowed")
        assert caught.value.status == 403 and "writer" in caught.value.message
    finally:
        hub.close()
    assert len(Dataset("xray", hub=lake_world.world.plane.hub).log()) >= 2


def test_a_non_member_learns_nothing(lake_world: LakeWorld, tmp_path: Path) -> None:
    hub = lake_world.hub("nora", tmp_path / "client")
    try:
        for call in (
            lambda ds: ds.log(),
            lambda ds: ds.pull("v1", tmp_path / "out"),
            lambda ds: ds.commit(make_files(tmp_path / "src", n=2), "x"),
        ):
            with pytest.raises(DatasetNotFoundError) as caught:
                call(Dataset("xray", hub=hub))
            assert caught.value.message == "no dataset named 'xray'"
    finally:
        hub.close()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_two_writers_on_one_parent_one_wins(lake_world: LakeWorld, tmp_path: Path) -> None:
    name = _name("race")
    a_hub = lake_world.hub("wendy", tmp_path / "a")
    b_hub = lake_world.hub("alice", tmp_path / "b")
    plane = lake_world.world.plane
    try:
        Dataset.create(name, hub=a_hub)
        plane.accounts.set_member(name, "alice", "writer", now=plane.clock.now())
        a, b = Dataset(name, hub=a_hub), Dataset(name, hub=b_hub)
        base = a.commit(make_files(tmp_path / "base", n=3), "base")
        seen = b.resolve()  # b reads the head...
        a.commit(make_files(tmp_path / "a-src", n=4, seed=1), "a wins")  # ...a moves it
        mine = replace(base, parents=(seen,), author="alice", message="b, on the old head")
        b.hub.lake.put(commit_key(mine.id), mine.to_json())
        with pytest.raises(ConflictError):
            b.hub.catalog.add_commit(mine, expected_head=seen)
        # Running the commit again puts it on top of the new head.
        again = b.commit(make_files(tmp_path / "b-src", n=4, seed=2), "b after")
        assert again.parents == (a.log()[1].id,) and b.resolve() == again.id
    finally:
        a_hub.close()
        b_hub.close()


def test_what_only_the_catalog_database_can_do_says_so(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    from lakecache.cache.service import CacheService
    from lakecache.catalog.topology import Topology

    hub = lake_world.hub("wendy", tmp_path / "client")
    try:
        # The catalog's own tables are the server's; its topology API answers instead.
        with pytest.raises(UserError, match=lake_world.url) as caught:
            Topology(hub.catalog).list_sites()
        assert "`cache`" in (caught.value.hint or "")
        assert "local" in {s.name for s in CacheService(hub).topology.list_sites()}
        with pytest.raises(UserError, match="runs on the lakecache server"):
            list(hub.lake.list("packs/"))
    finally:
        hub.close()


def test_no_lake_credential_reaches_the_client(
    lake_world: LakeWorld, tmp_path: Path, recorder: Recorder
) -> None:
    hub = lake_world.hub("wendy", tmp_path / "client")
    try:
        ds = Dataset.create(_name("secret"), hub=hub)
        ds.commit(_source(tmp_path / "src"), "with big files")
        ds.pull("latest", tmp_path / "out")
        Dataset("xray", hub=hub).pull("v1", tmp_path / "xray")
    finally:
        hub.close()
    assert len(recorder.received) > 20
    for secret in lake_world.secrets:
        assert all(secret not in r for r in recorder.received)
        assert all(secret not in u for u in recorder.sent_urls)
        for path in (tmp_path / "client").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    if lake_world.mode == "s3":
        # Bytes went straight to S3, on URLs the server signed: the access key's id is in
        # them (as in every presigned URL), with a signature for one key and one method.
        direct = [u for u in recorder.sent_urls if "X-Amz-Signature=" in u]
        assert direct and all("X-Amz-Expires=900" in u for u in direct)
    else:
        assert all(u.startswith(lake_world.url) for u in recorder.sent_urls)


@pytest.mark.s3
def test_urls_are_signed_for_the_public_s3_endpoint(
    seaweed: SeaweedServer, tmp_path: Path, recorder: Recorder
) -> None:
    """The server reaches S3 at 127.0.0.1 and tells its clients localhost: SigV4 signs the
    host, so the URLs work only because they are signed for the name the client uses."""
    public = f"http://localhost:{urlsplit(seaweed.endpoint).port}"
    bucket = new_bucket(seaweed)
    settings = Settings(
        home=tmp_path / "server",
        lake_url=f"s3://{bucket}/lake",
        s3_endpoint=seaweed.endpoint,
        s3_public_endpoint=public,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        workers=4,
        part_size=5 * MiB,
    )
    world = build_world(tmp_path / "server", tmp_path / "server-src", settings=settings)
    client = Settings(
        home=tmp_path / "client", server_url=world.url, token=world.tokens["wendy"], workers=4
    )
    ds = Dataset("xray", settings=client)
    try:
        ds.pull("v1", tmp_path / "v1")
        assert (tmp_path / "v1" / "images" / "a.png").is_file()
        src = _source(tmp_path / "src")  # packs, one PUT and a multipart upload
        ds.commit(src, "through the public endpoint")
        ds.pull("latest", tmp_path / "latest")
        assert tree(tmp_path / "latest") == tree(src)
    finally:
        ds.hub.close()
        world.server.stop()
        world.plane.close()
        drop_bucket(seaweed, bucket)
    direct = [u for u in recorder.sent_urls if not u.startswith(world.url)]
    assert len(direct) > 5 and all(u.startswith(public + "/") for u in direct)


@pytest.mark.s3
def test_a_cli_process_with_no_credentials_commits_and_pulls(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    if lake_world.mode != "s3":
        pytest.skip("the credentials in question are the S3 lake's")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKECACHE_", "AWS_"))}
    env |= {
        "LAKECACHE_HOME": str(tmp_path / "client"),
        "LAKECACHE_SERVER": lake_world.url,
        "LAKECACHE_TOKEN": lake_world.world.tokens["wendy"],
    }
    for secret in lake_world.secrets:
        assert all(secret not in v for v in env.values())
    name = _name("proc")
    src = _source(tmp_path / "src")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "lakecache", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        for secret in lake_world.secrets:
            assert secret not in done.stdout + done.stderr
        return done.stdout

    cli("data", "init", name)
    cli("data", "commit", name, str(src), "-q")
    cli("data", "pull", name, str(tmp_path / "out"), "-q")
    assert tree(tmp_path / "out") == tree(src)
    for secret in lake_world.secrets:
        for path in (tmp_path / "client").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


class _BreaksOnce:
    """An http.client response whose connection resets after one short read."""

    def __init__(self, fp: object) -> None:
        self.fp, self.reads = fp, 0

    def readinto(self, view: memoryview) -> int:
        self.reads += 1
        if self.reads > 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return int(self.fp.readinto(view[:1000]))  # type: ignore[attr-defined]

    def close(self) -> None:
        self.fp.close()  # type: ignore[attr-defined]


def test_ranged_reads_into_a_buffer_resume_after_a_broken_body(
    lake_world: LakeWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull's ranged GET (read_into) through a server: exact bytes, resumed where it broke."""
    from lakecache.lake.base import read_into
    from lakecache.lake.objects import pack_key

    hub = lake_world.hub("wendy", tmp_path / "client")
    try:
        ds = Dataset.create(_name("into"), hub=hub)
        # Bytes of its own: a pack shared with other datasets would be read through the server.
        src = make_files(tmp_path / "src", n=20, size=5000, seed=uuid.uuid4().int % 10**6)
        ds.commit(src, "first")
        entries = sorted(ds.files(), key=lambda e: e.path)
        locs = hub.catalog.locate_blobs([e.digest for e in entries])
        loc = locs[entries[3].digest]
        assert loc.pack_id is not None
        key = pack_key(loc.pack_id)
        want = (src / entries[3].path).read_bytes()
        buf = memoryview(bytearray(loc.size))
        read_into(hub.lake, key, loc.offset, buf)
        assert bytes(buf) == want

        ranges: list[tuple[int, int | None]] = []
        real_open = hub.lake._open  # type: ignore[attr-defined]

        def open_breaking(k: str, start: int, length: int | None) -> object:
            ranges.append((start, length))
            resp = real_open(k, start, length)
            if len(ranges) == 1:
                resp._fp = _BreaksOnce(resp._fp)
            return resp

        monkeypatch.setattr(hub.lake, "_open", open_breaking)
        buf[:] = bytes(len(buf))
        read_into(hub.lake, key, loc.offset, buf)
        assert bytes(buf) == want
        if lake_world.mode == "s3":  # presigned: the client resumed at the byte it stopped
            assert ranges == [(loc.offset, loc.size), (loc.offset + 1000, loc.size - 1000)]
            with pytest.raises(ObjectNotFoundError, match="shorter"):
                read_into(hub.lake, key, loc.offset, memoryview(bytearray(10**8)))
    finally:
        hub.close()
