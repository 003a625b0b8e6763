"""lakecache.torch: CommitDataset and StreamingDataset in DataLoader workers (fork and spawn),
across the ranks of a real two-process gloo job, from the lake (folder and SeaweedFS) and
from a ready cache; a corrupt PNG; a cache kept from eviction by the lease."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed
import torch.multiprocessing
from torch.utils.data import DataLoader

from integrations.world import CLASSES, PER_CLASS, Lake, add_cache, index_of, to_tensor
from lakecache.cache.service import CacheService
from lakecache.settings import Settings
from lakecache.torch import CommitDataset, CorruptFileError, StreamingDataset

IMAGES = len(CLASSES) * PER_CLASS


@pytest.fixture(params=["stream", "cache"])
def source(request: pytest.FixtureRequest, lake: Lake, tmp_path: Path) -> str:
    """Read from the lake, or from a ready cache of xray@v1 on a volume mounted here."""
    if request.param == "cache":
        add_cache(lake, tmp_path / "vol")
    return str(request.param)


@pytest.fixture(params=["stream", "cache"])
def s3_source(request: pytest.FixtureRequest, s3_lake: Lake, tmp_path: Path) -> str:
    """The SeaweedFS lake, read from itself or from a ready cache of xray@v1."""
    if request.param == "cache":
        add_cache(s3_lake, tmp_path / "vol")
    return str(request.param)


def loader(dataset: Any, start: str, **kw: Any) -> DataLoader[Any]:
    return DataLoader(dataset, num_workers=2, multiprocessing_context=start, **kw)


def indices(batches: Iterator[Any]) -> list[int]:
    """The image indices in a run of (images, labels) batches; checks each label."""
    out = []
    for images, labels in batches:
        for image, label in zip(images, labels, strict=True):
            index = index_of(image)
            assert int(label) == index // PER_CLASS
            out.append(index)
    return out


def test_commit_dataset_items_carry_folder_labels(lake: Lake, source: str) -> None:
    ds = CommitDataset("xray@v1", settings=lake.settings, transform=to_tensor)
    try:
        assert ds.source == source
        assert len(ds) == IMAGES and ds.classes == list(CLASSES)
        image, label = ds[PER_CLASS + 3]
        assert isinstance(image, torch.Tensor) and tuple(image.shape) == (3, 4, 6)
        assert index_of(image) == PER_CLASS + 3 and label == 1 == ds.class_to_idx["Hernia"]
        assert ds.path(0) == "images/Edema/000.png"
        assert ds.targets == [i // PER_CLASS for i in range(IMAGES)]
        with pytest.raises(IndexError):
            ds[IMAGES]
    finally:
        ds.close()


def test_raw_items_any_index_and_a_transform_set_later(lake: Lake, source: str) -> None:
    # Raw bytes from a cache take a short path: it must still give every file's bytes
    # and label, take negative and numpy/tensor indexes, refuse out-of-range ones by
    # name, and apply a transform set after the dataset was made (torchvision style).
    import numpy as np

    ds = CommitDataset("xray@v1", settings=lake.settings, decode="bytes", extensions=[".png"])
    try:
        assert ds.source == source and len(ds) == IMAGES
        for i in range(len(ds)):
            data, label = ds[i]
            assert data == lake.files[ds.path(i)] and label == i // PER_CLASS
        assert ds[-1] == ds[len(ds) - 1] == ds[np.int64(len(ds) - 1)] == ds[torch.tensor(-1)]
        with pytest.raises(IndexError, match=f"out of range for {IMAGES} samples"):
            ds[IMAGES]
        with pytest.raises(IndexError):
            ds[-IMAGES - 1]
        with pytest.raises(TypeError):
            ds[0:2]  # type: ignore[index]
        ds.transform = len
        assert ds[3] == (len(lake.files[ds.path(3)]), 0)
    finally:
        ds.close()


def commit_dataset_in_workers(lake: Lake, start: str) -> None:
    ds = CommitDataset("xray@v1", settings=lake.settings, transform=to_tensor)
    try:
        seen = indices(iter(loader(ds, start, batch_size=5, shuffle=True)))
        assert sorted(seen) == list(range(IMAGES))
        assert ds.skipped == 0
    finally:
        ds.close()


def test_commit_dataset_in_fork_workers(lake: Lake, source: str) -> None:
    commit_dataset_in_workers(lake, "fork")


def test_commit_dataset_in_spawn_workers(s3_lake: Lake, s3_source: str) -> None:
    # Spawned workers start a fresh interpreter (torch imported anew): one lake is enough.
    commit_dataset_in_workers(s3_lake, "spawn")


def test_labels_from_a_csv_column(lake: Lake) -> None:
    ds = CommitDataset(
        "xray@v1",
        settings=lake.settings,
        paths=["images"],
        labels_csv="images/labels.csv",
        decode=lambda data: data,
    )
    try:
        assert ds.classes == ["sick", "well"] and len(ds) == IMAGES
        for i in range(IMAGES):
            data, label = ds[i]
            assert data == lake.files[ds.path(i)]
            assert ds.classes[label] == ("sick" if i % 2 else "well")
    finally:
        ds.close()


def test_raw_bytes_and_paths_selection(lake: Lake, source: str) -> None:
    ds = CommitDataset(
        "xray@v1", settings=lake.settings, decode="bytes", label=None, paths=["docs"]
    )
    try:
        assert len(ds) == 1 and ds[0] == lake.files["docs/readme.txt"]
    finally:
        ds.close()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_corrupt_png_is_skipped_and_counted(corrupt_lake: Lake, start: str) -> None:
    ds = CommitDataset("xray@v1", settings=corrupt_lake.settings, transform=to_tensor)
    try:
        assert len(ds) == IMAGES + 1  # broken.png is a sample until it is decoded
        seen = indices(iter(loader(ds, start, batch_size=5)))
        assert len(seen) == IMAGES + 1  # its place taken by the next image
        assert sorted(set(seen)) == list(range(IMAGES))
        assert ds.skipped == 1  # counted across the worker processes
    finally:
        ds.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_corrupt_png_fails_when_asked_and_never_hangs(corrupt_lake: Lake, start: str) -> None:
    ds = CommitDataset(
        "xray@v1", settings=corrupt_lake.settings, transform=to_tensor, on_corrupt="raise"
    )
    try:
        with pytest.raises(CorruptFileError, match="images/Edema/broken.png"):
            list(loader(ds, start, batch_size=5))
    finally:
        ds.close()


def test_streaming_dataset_skips_a_corrupt_png(corrupt_lake: Lake) -> None:
    stream = StreamingDataset(
        "xray@v1", settings=corrupt_lake.settings, decode="image", label="folder"
    )
    try:
        items = list(stream)
        assert len(items) == IMAGES and stream.skipped == 1
        stream.on_corrupt = "raise"
        with pytest.raises(CorruptFileError, match="broken.png"):
            list(stream)
    finally:
        stream.close()


def test_the_lease_keeps_a_cache_from_eviction_while_training(
    folder_lake: Lake, tmp_path: Path
) -> None:
    lake = folder_lake
    cache_id = add_cache(lake, tmp_path / "vol", ttl=1)
    svc = CacheService(lake.hub)
    ds = CommitDataset("xray@v1", settings=lake.settings, transform=to_tensor)
    assert ds.source == "cache"
    folder = Path(svc.cache_path(svc.topology.get_cache(cache_id)))
    time.sleep(1.5)  # past the volume's TTL: unleased, it would be evicted now
    assert svc.topology.get_cache(cache_id).leases == 1
    assert not svc.evict(cache_id)  # asked for by name, it is refused too
    for epoch in range(2):
        svc.gc()
        assert svc.topology.get_cache(cache_id).state == "ready"
        seen = indices(iter(loader(ds, "fork", batch_size=8, shuffle=True)))
        assert sorted(seen) == list(range(IMAGES)), epoch
    ds.close()  # training over: the lease goes, and with it the protection
    time.sleep(1.5)
    svc.gc()
    assert svc.topology.get_cache(cache_id).state == "evicted"
    assert not folder.exists()


def contents(lake: Lake) -> dict[bytes, str]:
    return {data: path for path, data in lake.files.items()}


def test_streaming_reads_every_file_once_per_epoch_in_fork_workers(lake: Lake, source: str) -> None:
    streaming_reads_every_file_once_per_epoch(lake, source, "fork")


def test_streaming_reads_every_file_once_per_epoch_in_spawn_workers(
    s3_lake: Lake, s3_source: str
) -> None:
    streaming_reads_every_file_once_per_epoch(s3_lake, s3_source, "spawn")


def streaming_reads_every_file_once_per_epoch(lake: Lake, source: str, start: str) -> None:
    by_bytes = contents(lake)
    stream = StreamingDataset("xray@v1", settings=lake.settings, shuffle_buffer=8, block_files=3)
    try:
        assert stream.source == source and len(stream) == len(lake.files)
        orders = []
        for epoch in range(2):
            stream.set_epoch(epoch)
            got = [by_bytes[bytes(b)] for b in loader(stream, start, batch_size=None)]
            assert Counter(got) == Counter(lake.files.keys()), epoch
            orders.append(got)
        assert orders[0] != orders[1]  # shuffled differently each epoch
    finally:
        stream.close()


def test_streaming_shards_cover_the_commit_without_overlap(lake: Lake) -> None:
    stream = StreamingDataset("xray@v1", settings=lake.settings, block_files=2)
    try:
        count = (len(lake.files) + 1) // 2  # blocks of two files
        blocks = [stream.blocks(shard, 4) for shard in range(4)]
        sizes = sorted(len(b) for b in blocks)
        assert set().union(*blocks) == set(range(count)) and sizes[-1] - sizes[0] <= 1
        assert sum(sizes) == count  # no block dealt twice
        stream.set_epoch(1)
        assert [stream.blocks(s, 4) for s in range(4)] != blocks  # dealt anew each epoch
    finally:
        stream.close()


def test_streaming_images_batch_with_labels(lake: Lake) -> None:
    stream = StreamingDataset(
        "xray@v1",
        settings=lake.settings,
        decode="image",
        label="folder",
        transform=to_tensor,
        shuffle_buffer=5,
    )
    try:
        seen = indices(iter(loader(stream, "fork", batch_size=4)))
        assert sorted(seen) == list(range(IMAGES))
    finally:
        stream.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_as_rank(rank: int, settings: Settings, port: int, out: str) -> None:
    """One rank of a two-process gloo job: its shard of xray@v1, through 2 workers."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        stream = StreamingDataset("xray@v1", settings=settings, block_files=2, shuffle_buffer=4)
        got = [bytes(b).hex() for b in loader(stream, "fork", batch_size=None)]
        sizes = [torch.tensor(0), torch.tensor(0)]
        torch.distributed.all_gather(sizes, torch.tensor(len(got)))
        Path(out, f"rank{rank}.json").write_text(
            json.dumps({"got": got, "source": stream.source, "sizes": [int(s) for s in sizes]})
        )
        stream.close()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(240)
def test_distributed_ranks_split_an_epoch_between_them(
    s3_lake: Lake, s3_source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, source = s3_lake, s3_source
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    out = tmp_path / "ranks"
    out.mkdir()
    torch.multiprocessing.spawn(
        read_as_rank, args=(lake.settings, free_port(), str(out)), nprocs=2, join=True
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    by_bytes = contents(lake)
    got = [[by_bytes[bytes.fromhex(h)] for h in r["got"]] for r in ranks]
    assert all(r["source"] == source for r in ranks)
    assert got[0] and got[1] and not set(got[0]) & set(got[1])
    assert Counter(got[0] + got[1]) == Counter(lake.files.keys())  # every file once, in all
    assert ranks[0]["sizes"] == [len(got[0]), len(got[1])]
