"""PyTorch datasets over a lakecache commit: ``lakecache.torch.CommitDataset`` and
``lakecache.torch.StreamingDataset``.

Both read a commit from the site's ready cache when one is on a volume this
machine mounts (leased while the dataset lives, so it is never evicted under
a training run), else straight from the lake's packs (ranged GETs, every
blob verified). Both work in DataLoader worker processes, started by fork or
spawn, and report the commit they read, and how, to
:func:`lakecache.integrations.reads.subscribe` (for run tracking).

::

    from torch.utils.data import DataLoader
    from lakecache.torch import CommitDataset, StreamingDataset

    ds = CommitDataset("xray@v3", paths=["train/"], transform=to_tensor)   # (image, label)
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=8)

    stream = StreamingDataset("xray@v3", shuffle_buffer=10_000)
    for epoch in range(10):
        stream.set_epoch(epoch)
        for images, labels in DataLoader(stream, batch_size=64, num_workers=8): ...

This module is named after the package it plugs into, so it imports only
absolutely (``import torch`` is the real PyTorch).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import multiprocessing
import operator
import os
import random
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed
import torch.utils.data

from lakecache.errors import NotFoundError, UserError
from lakecache.integrations.reader import CommitReader
from lakecache.lake.objects import ManifestEntry, normalize_folder, normalize_path

if TYPE_CHECKING:
    from lakecache.data.hub import Hub
    from lakecache.settings import Settings

__all__ = ["CommitDataset", "CorruptFileError", "StreamingDataset", "decode_image"]

log = logging.getLogger("lakecache.torch")

#: Files decoded as images by default (torchvision's ImageFolder list).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)

Decoder = Callable[[bytes], Any]
OnCorrupt = Literal["skip", "raise"]


class CorruptFileError(UserError):
    """A file of the commit could not be decoded (a damaged image, say)."""

    default_hint = (
        "Fix or remove the file and commit again, or pass on_corrupt='skip' to skip "
        "such files (they are counted in .skipped)."
    )


def decode_image(data: bytes) -> Any:
    """The file's bytes as an RGB ``PIL.Image``, fully decoded (a damaged file fails here)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _decoder(decode: Literal["image", "bytes"] | Decoder) -> Decoder | None:
    if decode == "image":
        return decode_image
    if decode == "bytes":
        return None
    if callable(decode):
        return decode
    raise UserError(
        f"decode must be 'image', 'bytes' or a function of the bytes, not {decode!r}",
        hint="Pass decode='bytes' for raw bytes, or your own decode(data) -> sample.",
    )


class _Selection:
    """Which files of a commit are samples, and each one's label.

    Labels: ``"folder"``, the name of the file's parent folder (classes sorted
    by name, as torchvision's ImageFolder); a CSV file in the commit
    (``labels_csv``) with a column of paths, relative to the CSV's folder, and
    a column of labels (files it does not name are not samples); or None.
    """

    def __init__(
        self,
        reader: CommitReader,
        *,
        paths: list[str] | None,
        label: Literal["folder"] | None,
        labels_csv: str | None,
        path_column: str,
        label_column: str,
        extensions: tuple[str, ...] | None,
    ) -> None:
        self.paths = [normalize_folder(p) for p in paths] if paths else None
        self.extensions = tuple(x.lower() for x in extensions) if extensions else None
        self.by_path: dict[str, str] | None = None
        self.csv_path: str | None = None
        self.use_folder = False
        if labels_csv is not None:
            self.csv_path = normalize_path(labels_csv)
            self.by_path = _read_labels(reader, self.csv_path, path_column, label_column)
        elif label == "folder":
            self.use_folder = True
        elif label is not None:
            raise UserError(
                f"label must be 'folder' or None, not {label!r}",
                hint="For labels in a CSV file of the commit, pass labels_csv='labels.csv'.",
            )
        names: set[str] = set()
        files = nbytes = 0
        for e, name in self._walk(reader):
            files += 1
            nbytes += e.size
            if name is not None:
                names.add(name)
        if self.by_path is not None:
            names = set(self.by_path.values())
        self.files, self.bytes = files, nbytes
        self.classes: list[str] = sorted(names)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def _walk(self, reader: CommitReader) -> Iterator[tuple[ManifestEntry, str | None]]:
        """(entry, label name) of every sample, in manifest order."""
        for e in reader.entries(self.paths):
            if e.path == self.csv_path:
                continue
            if self.extensions is not None and not e.path.lower().endswith(self.extensions):
                continue
            if self.by_path is not None:
                name = self.by_path.get(e.path)
                if name is None:
                    continue
                yield e, name
            elif self.use_folder:
                yield e, e.path.rpartition("/")[0].rpartition("/")[2]
            else:
                yield e, None

    def samples(self, reader: CommitReader) -> Iterator[tuple[ManifestEntry, int | None]]:
        """(entry, class index or None) of every sample, in manifest order."""
        for e, name in self._walk(reader):
            yield e, None if name is None else self.class_to_idx[name]


def _read_labels(
    reader: CommitReader, csv_path: str, path_column: str, label_column: str
) -> dict[str, str]:
    """{commit path: label} from a CSV file of the commit; every path it names must exist."""
    text = reader.read(reader.entry(csv_path)).decode("utf-8-sig")
    rows = csv.DictReader(io.StringIO(text))
    missing_columns = {path_column, label_column} - set(rows.fieldnames or ())
    if missing_columns:
        raise UserError(
            f"{csv_path} has no column {sorted(missing_columns)[0]!r} "
            f"(it has {', '.join(rows.fieldnames or ()) or 'none'})",
            hint="Name the columns with path_column= and label_column=.",
        )
    folder = csv_path.rpartition("/")[0]
    out: dict[str, str] = {}
    for row in rows:
        rel = normalize_path(row[path_column])
        out[f"{folder}/{rel}" if folder else rel] = row[label_column]
    absent = [p for p in out if reader.index.get(p) is None]
    if absent:
        raise NotFoundError(
            f"{csv_path} names {len(absent)} file(s) the commit does not hold, first {absent[0]!r}",
            hint="Paths in the CSV are relative to the folder that holds it; fix the CSV "
            "and commit again.",
        )
    return out


class _Samples:
    """What both datasets share: the reader, the selection, decoding and the skip counter."""

    reader_name = ""

    def __init__(
        self,
        ref: str,
        *,
        paths: Iterable[str] | None,
        transform: Callable[[Any], Any] | None,
        decode: Literal["image", "bytes"] | Decoder,
        label: Literal["folder"] | None,
        labels_csv: str | None,
        path_column: str,
        label_column: str,
        extensions: Iterable[str] | None,
        on_corrupt: OnCorrupt,
        site: str | None,
        cached: bool | None,
        settings: Settings | None,
        hub: Hub | None,
    ) -> None:
        if on_corrupt not in ("skip", "raise"):
            raise UserError(
                f"on_corrupt must be 'skip' or 'raise', not {on_corrupt!r}",
                hint="'skip' counts and skips files that cannot be decoded; 'raise' stops.",
            )
        self.decoder = _decoder(decode)
        self.transform = transform
        self.on_corrupt = on_corrupt
        path_list = list(paths) if paths is not None else None
        if extensions is None and decode == "image":
            extensions = IMAGE_EXTENSIONS
        self.reader = CommitReader(
            ref, paths=path_list, site=site, cached=cached, settings=settings, hub=hub
        )
        try:
            self.selection = _Selection(
                self.reader,
                paths=path_list,
                label=label,
                labels_csv=labels_csv,
                path_column=path_column,
                label_column=label_column,
                extensions=tuple(extensions) if extensions is not None else None,
            )
            # Shared with DataLoader workers, which inherit it when started. Made in the
            # spawn context: its lock may then go to spawned workers too (one made in
            # the fork context may not), and forked ones share it all the same.
            self._skipped = multiprocessing.get_context("spawn").Value("q", 0)
            self.record = self.reader.record(
                self.selection.files, self.selection.bytes, self.reader_name
            )
        except BaseException:
            self.reader.close()
            raise

    @property
    def classes(self) -> list[str]:
        """Label names, sorted; a sample's label is its index here."""
        return self.selection.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.selection.class_to_idx

    @property
    def source(self) -> str:
        """``cache`` (a leased ready cache of this site) or ``stream`` (the lake)."""
        return self.reader.source

    @property
    def commit_id(self) -> str:
        """The commit read (a ref like ``@latest`` is resolved once, when the dataset is made)."""
        return self.reader.commit_id

    @property
    def skipped(self) -> int:
        """Files skipped as undecodable so far, by this process and its DataLoader workers."""
        return int(self._skipped.value)

    def _decode(self, entry: ManifestEntry, data: bytes) -> tuple[bool, Any]:
        """(True, sample), or (False, None) for a corrupt file when skipping."""
        if self.decoder is None:
            sample: Any = data
        else:
            try:
                sample = self.decoder(data)
            except Exception as exc:  # noqa: BLE001 - any decoder's failure means a bad file
                where = f"lakecache://{self.reader.dataset}@{self.commit_id[:12]}/{entry.path}"
                if self.on_corrupt == "raise":
                    raise CorruptFileError(f"{where} could not be decoded: {exc}") from exc
                with self._skipped.get_lock():
                    self._skipped.value += 1
                log.warning("skipped %s: it could not be decoded (%s)", where, exc)
                return False, None
        if self.transform is not None:
            sample = self.transform(sample)
        return True, sample

    def close(self) -> None:
        """Release the lease on the cache now (else when the dataset is collected)."""
        self.reader.close()


class CommitDataset(_Samples, torch.utils.data.Dataset[Any]):
    """Map-style: one item per file of a commit, ``(sample, label)`` (or ``sample``).

    Args:
        ref: ``DATASET@REF``, resolved once (``xray@latest`` stays that commit).
        paths: folders or files of the commit to take (all by default).
        transform: applied to each decoded sample (torchvision transforms).
        decode: ``"image"`` (default: an RGB PIL image, files with image
            extensions only), ``"bytes"`` (the raw bytes), or a function of the bytes.
        label: ``"folder"`` (default): the parent folder's name, as a class index
            into :attr:`classes`; None: items are samples alone.
        labels_csv: a CSV file of the commit naming each sample (``path_column``,
            relative to the CSV's folder) and its label (``label_column``);
            files it does not name are left out.
        extensions: take only files ending so (default for images: the usual ones).
        on_corrupt: ``"skip"`` (default): a file that cannot be decoded is
            counted in :attr:`skipped` and the next decodable one is served in
            its place; ``"raise"``: :class:`CorruptFileError`.
        site, cached: where to look for a ready cache (see :class:`CommitReader`).
        settings, hub: the lake and catalog (default :meth:`lakecache.Settings.load`).

    Raises:
        NotFoundError: the dataset, ref, a path, or (``cached=True``) a ready cache.

    Holds a lease on the cache it reads while it lives (:meth:`close` ends it).
    The file list is held in memory, as any map-style dataset's.
    """

    reader_name = "torch.CommitDataset"

    def __init__(
        self,
        ref: str,
        *,
        paths: Iterable[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        decode: Literal["image", "bytes"] | Decoder = "image",
        label: Literal["folder"] | None = "folder",
        labels_csv: str | None = None,
        path_column: str = "path",
        label_column: str = "label",
        extensions: Iterable[str] | None = None,
        on_corrupt: OnCorrupt = "skip",
        site: str | None = None,
        cached: bool | None = None,
        settings: Settings | None = None,
        hub: Hub | None = None,
    ) -> None:
        super().__init__(
            ref,
            paths=paths,
            transform=transform,
            decode=decode,
            label=label,
            labels_csv=labels_csv,
            path_column=path_column,
            label_column=label_column,
            extensions=extensions,
            on_corrupt=on_corrupt,
            site=site,
            cached=cached,
            settings=settings,
            hub=hub,
        )
        self.samples = list(self.selection.samples(self.reader))
        self.with_labels = labels_csv is not None or label is not None
        self._located_in: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int | None]:
        """Every sample's label, in order (as torchvision datasets have)."""
        return [label for _, label in self.samples]

    def path(self, index: int) -> str:
        """The commit path of item ``index``."""
        return self.samples[index][0].path

    def __getitem__(self, index: int) -> Any:
        # The hot path (raw bytes from a cache): one list lookup and the reader's
        # one open, read and close; what can be decided once was, in __init__.
        if index.__class__ is not int:
            index = operator.index(index)
        samples = self.samples
        try:
            entry, label = samples[index]
        except IndexError:
            raise IndexError(f"index {index} is out of range for {len(samples)} samples") from None
        if self.decoder is None and self.transform is None and self.reader.cache is not None:
            # Raw bytes from a cache: nothing to decode, transform or locate.
            data = self.reader.read(entry)
            return (data, label) if self.with_labels else data
        n = len(samples)
        index %= n
        if self.reader.cache is None and self._located_in != os.getpid():
            self._locate()
        for step in range(n):
            entry, label = self.samples[(index + step) % n]
            ok, sample = self._decode(entry, self.reader.read(entry))
            if ok:
                return (sample, label) if self.with_labels else sample
        raise CorruptFileError(
            f"none of the {n} files of {self.reader.dataset}@{self.commit_id[:12]} could be decoded"
        )

    def _locate(self) -> None:
        # From the lake, where every blob is (one query per few thousand files),
        # once per process, rather than one catalog lookup per item.
        if self.reader.cache is None:
            self.reader.locate_all(e for e, _ in self.samples)
        self._located_in = os.getpid()


class StreamingDataset(_Samples, torch.utils.data.IterableDataset[Any]):
    """Iterable: the files of a commit in manifest (pack) order, through a shuffle buffer.

    Sharding: the selected files are cut into blocks of ``block_files``
    neighbours; each epoch the blocks are dealt, in an order drawn from
    ``seed`` and the epoch, to every DataLoader worker of every rank of a
    distributed job (``torch.distributed``, when initialised). Each shard
    reads its blocks in manifest order, so from the lake neighbouring files
    come in one ranged GET, read ahead; no file is read twice in an epoch,
    and the shards differ by at most one block. Call :meth:`set_epoch` before
    each epoch, as with a DistributedSampler.

    Args:
        shuffle_buffer: samples held and drawn from at random (0: manifest order).
        seed: the shuffle's seed, the same on every rank.
        block_files: files per block (the unit of sharding).
        decode, transform, label, labels_csv, extensions, paths, on_corrupt,
        site, cached, settings, hub: as for :class:`CommitDataset`, except
            ``decode`` defaults to ``"bytes"`` and ``label`` to None, and a
            skipped file is simply left out.
    """

    reader_name = "torch.StreamingDataset"

    def __init__(
        self,
        ref: str,
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        block_files: int = 256,
        paths: Iterable[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        decode: Literal["image", "bytes"] | Decoder = "bytes",
        label: Literal["folder"] | None = None,
        labels_csv: str | None = None,
        path_column: str = "path",
        label_column: str = "label",
        extensions: Iterable[str] | None = None,
        on_corrupt: OnCorrupt = "skip",
        site: str | None = None,
        cached: bool | None = None,
        settings: Settings | None = None,
        hub: Hub | None = None,
    ) -> None:
        if shuffle_buffer < 0 or block_files < 1:
            raise UserError(
                "shuffle_buffer must be 0 or more and block_files 1 or more",
                hint="For example shuffle_buffer=10_000, block_files=256.",
            )
        super().__init__(
            ref,
            paths=paths,
            transform=transform,
            decode=decode,
            label=label,
            labels_csv=labels_csv,
            path_column=path_column,
            label_column=label_column,
            extensions=extensions,
            on_corrupt=on_corrupt,
            site=site,
            cached=cached,
            settings=settings,
            hub=hub,
        )
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.block_files = block_files
        self.epoch = 0
        self.with_labels = labels_csv is not None or label is not None

    def set_epoch(self, epoch: int) -> None:
        """Deal the blocks and seed the shuffle for this epoch (the same on every rank)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Samples in the whole selection (all shards together; skipped files included)."""
        return self.selection.files

    def shard(self) -> tuple[int, int]:
        """(this shard, shards): from the distributed rank and the DataLoader worker."""
        rank, ranks = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, ranks = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, ranks * workers

    def blocks(self, shard: int, shards: int) -> set[int]:
        """The blocks shard ``shard`` of ``shards`` reads this epoch."""
        count = math.ceil(self.selection.files / self.block_files)
        order = list(range(count))
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return set(order[shard::shards])

    def __iter__(self) -> Iterator[Any]:
        shard, shards = self.shard()
        mine = self.blocks(shard, shards)
        labels: dict[str, int | None] = {}

        def wanted() -> Iterator[ManifestEntry]:
            for i, (e, label) in enumerate(self.selection.samples(self.reader)):
                if i // self.block_files in mine:
                    labels[e.path] = label
                    yield e

        rng = random.Random(f"{self.seed}:{self.epoch}:{shard}")
        buffer: list[Any] = []
        for entry, data in self.reader.read_many(wanted()):
            ok, sample = self._decode(entry, data)
            label = labels.pop(entry.path)
            if not ok:
                continue
            item = (sample, label) if self.with_labels else sample
            if self.shuffle_buffer <= 1:
                yield item
                continue
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            pick = rng.randrange(len(buffer))
            buffer[pick], item = item, buffer[pick]
            yield item
        rng.shuffle(buffer)
        yield from buffer
