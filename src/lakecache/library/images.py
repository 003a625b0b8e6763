"""Labelled images as a PyTorch dataset, read through ``lakecache.torch``.

A commit is read by :class:`lakecache.torch.CommitDataset` (raw bytes: the
site's ready cache under a lease, else the lake's packs, and the read
reported to tracking); a folder with ``open()``. Decoding happens here, so
that a damaged image is skipped and counted (or stops the run, by a
setting) with the label of the image actually served. Items are
``(uint8 tensor 1 x S x S, target)``: the target is a float multi-hot
vector for multi-label data, a class index otherwise. Normalising, the
three channels ImageNet-shaped models want, and augmentation happen on the
device, batched, where they are cheap.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.utils.data

from lakecache.errors import UserError
from lakecache.library.layout import ImageTable, Sample
from lakecache.library.source import FolderSource, Source

if TYPE_CHECKING:
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.library.images")

OnCorrupt = Literal["skip", "fail"]


class CorruptImageError(UserError):
    """An image could not be decoded while training or evaluating."""

    default_hint = (
        "Fix or remove the file and commit again, or pass --on-corrupt skip to skip such "
        "images (they are counted)."
    )


def decode_gray(data: bytes, path: str, size: int) -> torch.Tensor:
    """A ``1 x size x size`` uint8 tensor from an image file's bytes (or raw ``.u8`` bytes).

    Raises ValueError (raw bytes of the wrong length) or Pillow's errors.
    """
    if path.endswith(".u8"):
        if len(data) != size * size:
            raise ValueError(f"{len(data)} bytes is not a {size} x {size} raw image")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(1, size, size)
    from lakecache.library.prepare import to_gray_square

    img = to_gray_square(data, size)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(1, size, size)


class _FolderBytes:
    """The bytes of a list of files of a folder, by index (a CommitDataset's shape)."""

    def __init__(self, root: Path, paths: list[str]) -> None:
        self.root = root
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        return self.paths[index]

    def __getitem__(self, index: int) -> bytes:
        return (self.root / self.paths[index]).read_bytes()

    def close(self) -> None:
        pass


class LabelledImages(torch.utils.data.Dataset[tuple[torch.Tensor, Any]]):
    """The ``samples`` of a table, decoded to ``1 x size x size`` uint8 tensors with targets.

    Args:
        source: where the files are (a commit is read through ``CommitDataset``).
        table: the labels (from :func:`lakecache.library.layout.read_table`).
        samples: the samples to serve (a split of ``table``), in order.
        size: the side images are resized to (a prepared source of this size is
            only decoded).
        on_corrupt: ``"skip"``: a file that cannot be decoded is counted in
            :attr:`skipped` and the next one is served in its place; ``"fail"``:
            :class:`CorruptImageError`.
        settings: the lake and catalog, for a commit (default: from the environment).

    Works in DataLoader worker processes (fork and spawn); the lease on a cache
    is held by the process that made the dataset.
    """

    def __init__(
        self,
        source: Source,
        table: ImageTable,
        samples: Sequence[Sample],
        *,
        size: int,
        on_corrupt: OnCorrupt = "skip",
        settings: Settings | None = None,
    ) -> None:
        if on_corrupt not in ("skip", "fail"):
            raise UserError(
                f"on_corrupt must be skip or fail, not {on_corrupt!r}",
                hint="'skip' counts and skips images that cannot be decoded; 'fail' stops.",
            )
        if not samples:
            raise UserError("no images to read", hint="Check the split lists and the data.")
        self.size = size
        self.on_corrupt = on_corrupt
        self.classes = table.classes
        self.multi_label = table.multi_label
        self.label = source.label
        self.samples = list(samples)
        self.files: Any
        if isinstance(source, FolderSource):
            self.files = _FolderBytes(source.path, [s.path for s in self.samples])
            self.order = list(range(len(self.samples)))
        else:
            from lakecache.torch import CommitDataset

            assert source.ref is not None
            # Sample paths are relative to the source, which may be a folder of the commit.
            top = source.prefix
            folders = sorted(
                {top + s.path.rsplit("/", 1)[0] + "/" for s in self.samples if "/" in s.path}
            )
            roots = [top + s.path for s in self.samples if "/" not in s.path]
            wanted = {top + s.path: i for i, s in enumerate(self.samples)}
            cached = getattr(source, "cached", None)
            self.files = CommitDataset(
                source.ref,
                paths=_fewest_prefixes(folders) + roots,
                decode="bytes",
                label=None,
                extensions=(".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".u8"),
                cached=cached,
                site=getattr(source, "site", None),
                settings=settings or getattr(source, "settings", None),
            )
            # Map each of our samples to its index in the commit dataset.
            self.order = [-1] * len(self.samples)
            for j in range(len(self.files)):
                i = wanted.get(self.files.path(j))
                if i is not None:
                    self.order[i] = j
            absent = [self.samples[i].path for i, j in enumerate(self.order) if j < 0]
            if absent:
                raise UserError(
                    f"{source.label} lacks {len(absent)} labelled image(s), first {absent[0]!r}",
                    hint="Label and images must come from the same commit.",
                )
        self._skipped = multiprocessing.get_context("spawn").Value("q", 0)
        self._targets: torch.Tensor | None = None

    @property
    def skipped(self) -> int:
        """Images skipped as undecodable, by this process and its DataLoader workers."""
        return int(self._skipped.value)

    @property
    def read_from(self) -> str:
        """``cache``, ``stream`` or ``folder``."""
        return str(getattr(self.files, "source", "folder"))

    def targets(self) -> torch.Tensor:
        """Every sample's target: ``N x C`` floats (multi-label) or ``N`` class indices."""
        if self.multi_label:
            out = torch.zeros(len(self.samples), len(self.classes))
            for i, s in enumerate(self.samples):
                out[i, list(s.labels)] = 1.0
            return out
        return torch.tensor([s.labels[0] for s in self.samples])

    def target(self, sample: Sample) -> Any:
        if self.multi_label:
            t = torch.zeros(len(self.classes))
            t[list(sample.labels)] = 1.0
            return t
        return sample.labels[0]

    def _target_at(self, index: int) -> Any:
        """The target of sample ``index``: a row of :meth:`targets`, made once for all
        samples on first use (a new tensor per item cost as much as reading a prepared
        image). A copy, so a batch never holds a view of the whole table."""
        if not self.multi_label:
            return self.samples[index].labels[0]
        if self._targets is None:
            self._targets = self.targets()
        return self._targets[index].clone()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            sample = self.samples[i]
            data = self.files[self.order[i]]
            try:
                image = decode_gray(data, sample.path, self.size)
            except (OSError, ValueError, SyntaxError) as exc:
                where = f"{self.label}/{sample.path}"
                if self.on_corrupt == "fail":
                    raise CorruptImageError(f"{where} could not be decoded: {exc}") from exc
                with self._skipped.get_lock():
                    self._skipped.value += 1
                log.warning("skipped %s: it could not be decoded (%s)", where, exc)
                continue
            return image, self._target_at(i)
        raise CorruptImageError(f"none of the {n} images of {self.label} could be decoded")

    def close(self) -> None:
        """Release the lease on the cache now (else when collected)."""
        self.files.close()


def _fewest_prefixes(folders: list[str]) -> list[str]:
    """The folders, without those inside another one listed (sorted input)."""
    out: list[str] = []
    for f in folders:
        if not out or not f.startswith(out[-1]):
            out.append(f)
    return out


def worker_count(requested: int | None) -> int:
    """DataLoader workers: as asked, else one per core up to 8 (0 on a single core)."""
    if requested is not None:
        return max(0, requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) <= 1 else min(8, cores or 1)
