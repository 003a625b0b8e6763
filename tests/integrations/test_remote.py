"""Reading a commit through a lakecache server (the Hub's remote mode): a reader who holds
no lake credentials streams verified bytes, through fsspec and a DataLoader's fork worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from server.live import World, build_world
from torch.utils.data import DataLoader

from lakecache.data.hub import Hub
from lakecache.errors import NotFoundError
from lakecache.fsspec import LakecacheFileSystem
from lakecache.integrations.reader import CommitReader
from lakecache.settings import Settings
from lakecache.torch import StreamingDataset


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("remote-world")
    w = build_world(base / "home", base / "src")
    try:
        yield w
    finally:
        w.server.stop()
        w.plane.close()


@pytest.fixture(scope="module")
def direct(world: World) -> dict[str, bytes]:
    """xray@v1's files, read with the server's own (direct) hub."""
    hub = Hub(world.settings, remote=False)
    try:
        with CommitReader("xray@v1", hub=hub, cached=False) as reader:
            return {e.path: data for e, data in reader.read_many(reader.entries())}
    finally:
        hub.close()


def client(world: World, who: str, home: Path) -> Settings:
    """A client's settings: the server and a token, no lake or catalog of its own."""
    return Settings(home=home, server_url=world.url, token=world.tokens[who], workers=4)


def test_a_reader_streams_through_the_server(
    world: World, direct: dict[str, bytes], tmp_path: Path
) -> None:
    with CommitReader("xray@v1", settings=client(world, "rita", tmp_path)) as reader:
        assert reader.remote and reader.source == "stream"
        got = {e.path: data for e, data in reader.read_many(reader.entries())}
        assert got == direct and len(got) > 250
        entry = reader.entry("docs/readme.txt")
        assert reader.read_range(entry, 1, 4) == direct["docs/readme.txt"][1:4]


def test_fsspec_through_the_server(world: World, direct: dict[str, bytes], tmp_path: Path) -> None:
    fs = LakecacheFileSystem(settings=client(world, "rita", tmp_path), skip_instance_cache=True)
    try:
        assert fs.cat_file("xray@v1/docs/readme.txt") == direct["docs/readme.txt"]
        assert len(fs.find("xray@v1/many")) == 253
        with fsspec.open(
            "lakecache://xray@v1/images/a.png", settings=client(world, "rita", tmp_path)
        ) as f:
            assert f.read() == direct["images/a.png"]
    finally:
        fs.close()


def test_streaming_in_a_fork_worker_through_the_server(
    world: World, direct: dict[str, bytes], tmp_path: Path
) -> None:
    stream = StreamingDataset(
        "xray@v1", settings=client(world, "rita", tmp_path), paths=["many"], block_files=16
    )
    try:
        loader = DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context="fork")
        got = sorted(bytes(b) for b in loader)
        assert got == sorted(d for p, d in direct.items() if p.startswith("many/"))
    finally:
        stream.close()


def test_a_user_without_a_role_cannot_read(world: World, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        CommitReader("xray@v1", settings=client(world, "nora", tmp_path))
