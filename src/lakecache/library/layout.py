"""The labelled images of a source, in whichever layout it has.

Three layouts are read as they are, found by what the source holds:

- **prepared** (``prepare.json`` and ``labels.csv`` at the top): what
  :mod:`lakecache.library.prepare` writes; each row names an image's key,
  path, patient and labels.
- **NIH ChestX-ray14** (``Data_Entry_2017.csv`` at the top or one folder
  down): images anywhere below (``images_NNN/images/*.png``), labels from
  ``Finding Labels`` split on ``|``, patients from ``Patient ID``; always
  multi-label, over the 15 labels (14 findings and "No Finding").
- **class folders** (anything else): ``[ROOT/]CLASS/IMAGE``, one label per
  image from its folder's name, single-label. An image's patient is the part
  of its name before ``_`` (NIH's own naming), or the image itself.

A sample's *key* names it across layouts and in split lists: the file name
for NIH (as its lists do), ``CLASS/NAME`` for class folders.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from lakecache.errors import UserError
from lakecache.library.source import FolderSource, Source

NIH_CSV = "Data_Entry_2017.csv"
PREPARED_META = "prepare.json"
PREPARED_LABELS = "labels.csv"
#: Extensions read as images (raw ``.u8`` tensors only in prepared commits).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".u8")
NO_FINDING = "No Finding"
#: NIH's 15 labels in the order models put them out (14 findings, then "No Finding").
NIH_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
    NO_FINDING,
)

Layout = Literal["prepared", "nih", "folders"]
OnMissing = Literal["error", "skip"]


class LabelError(UserError):
    """The labels of a source do not fit its images."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: its key, path in the source, patient and label indices."""

    key: str
    path: str
    patient: str
    labels: tuple[int, ...]


@dataclass
class ImageTable:
    """Every labelled image of a source, and what its labels mean."""

    layout: Layout
    classes: list[str]
    multi_label: bool
    samples: list[Sample]
    #: For prepared sources: the image side and channels of every file (its prepare.json).
    prepared: dict[str, object] = field(default_factory=dict)
    #: Images with no label row that were left out (``on_missing_label="skip"``).
    unlabelled: int = 0
    #: Label rows that name no image of the source (a partial download): left out.
    rows_without_image: int = 0

    def by_key(self) -> dict[str, Sample]:
        return {s.key: s for s in self.samples}

    def counts(self, samples: list[Sample] | None = None) -> Counter[int]:
        """Images per class index."""
        c: Counter[int] = Counter()
        for s in self.samples if samples is None else samples:
            c.update(s.labels)
        return c

    def subset(self, keys: list[str], *, what: str) -> list[Sample]:
        """The samples named by ``keys`` (a split list), in that order.

        Raises LabelError naming the first key the table lacks.
        """
        table = self.by_key()
        out: list[Sample] = []
        missing: list[str] = []
        for k in keys:
            s = table.get(k)
            if s is None:
                missing.append(k)
            else:
                out.append(s)
        if missing:
            raise LabelError(
                f"{what} names {len(missing)} image(s) the data does not hold or label, "
                f"first {missing[0]!r}",
                hint="Make the split from the same data (lakecache lib split), or pass the "
                "data that split was made from.",
            )
        return out


def read_table(source: Source, *, on_missing_label: OnMissing = "error") -> ImageTable:
    """The labelled images of ``source``, in whichever layout it has (see the module).

    Raises:
        LabelError: an image has no label (``on_missing_label="error"``), a label
            is empty or unknown, a class folder holds no image, or no image at all.
    """
    if on_missing_label not in ("error", "skip"):
        raise UserError(
            f"on_missing_label must be 'error' or 'skip', not {on_missing_label!r}",
            hint="'skip' leaves out images the CSV does not label and counts them.",
        )
    files = list(source.files())
    names = {p for p, _ in files}
    if PREPARED_META in names and PREPARED_LABELS in names:
        return _prepared(source, names)
    csv_path = next(
        (p for p, _ in files if posixpath.basename(p) == NIH_CSV and p.count("/") <= 1), None
    )
    images = [p for p, _ in files if p.lower().endswith(IMAGE_EXTENSIONS)]
    if csv_path is not None:
        return _nih(source, csv_path, images, on_missing_label)
    return _folders(source, images)


def _nih(source: Source, csv_path: str, images: list[str], on_missing: OnMissing) -> ImageTable:
    text = source.read(csv_path).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    need = {"Image Index", "Finding Labels", "Patient ID"}
    lacking = need - set(reader.fieldnames or ())
    if lacking:
        raise LabelError(
            f"{csv_path} has no column {sorted(lacking)[0]!r} "
            f"(it has {', '.join(f for f in reader.fieldnames or () if f) or 'none'})",
            hint="It should be NIH's Data_Entry_2017.csv as downloaded, with its header row.",
        )
    index = {c: i for i, c in enumerate(NIH_CLASSES)}
    rows: dict[str, tuple[str, tuple[int, ...]]] = {}
    for line, row in enumerate(reader, start=2):
        name = (row["Image Index"] or "").strip()
        if not name:
            continue
        raw = (row["Finding Labels"] or "").strip()
        if not raw:
            raise LabelError(
                f"{csv_path} line {line}: {name} has an empty 'Finding Labels'",
                hint=f"Write its findings joined by '|', or {NO_FINDING!r}.",
            )
        labels = []
        for label in raw.split("|"):
            label = label.strip()
            if label not in index:
                raise LabelError(
                    f"{csv_path} line {line}: {name} has the unknown label {label!r}",
                    hint=f"NIH's labels are: {', '.join(NIH_CLASSES)}.",
                )
            labels.append(index[label])
        rows[name] = ((row["Patient ID"] or "").strip() or name, tuple(sorted(set(labels))))
    samples: list[Sample] = []
    unlabelled: list[str] = []
    seen: set[str] = set()
    for path in images:
        name = posixpath.basename(path)
        found = rows.get(name)
        if found is None:
            unlabelled.append(path)
            continue
        if name in seen:
            raise LabelError(
                f"{source.label} holds two images named {name!r} (one is {path})",
                hint="NIH's image names are unique; remove the copy and commit again.",
            )
        seen.add(name)
        samples.append(Sample(name, path, found[0], found[1]))
    if unlabelled and on_missing == "error":
        raise LabelError(
            f"{len(unlabelled)} image(s) of {source.label} have no row in {csv_path}, "
            f"first {unlabelled[0]!r}",
            hint="Add their rows to the CSV and commit again, or pass --on-missing-label skip "
            "(on_missing_label='skip') to leave them out.",
        )
    table = ImageTable("nih", list(NIH_CLASSES), True, samples)
    table.unlabelled = len(unlabelled)
    table.rows_without_image = len(rows) - len(samples)
    _check_any(table, source)
    return table


def _folders(source: Source, images: list[str]) -> ImageTable:
    # The class is an image's parent folder; its key is CLASS/NAME.
    by_class: dict[str, list[str]] = {}
    for path in images:
        parts = path.split("/")
        if len(parts) < 2:
            continue
        by_class.setdefault(parts[-2], []).append(path)
    parents = {p.rsplit("/", 1)[0] for p in images if "/" in p}
    roots = {p.rsplit("/", 1)[0] if "/" in p else "" for p in parents}
    if isinstance(source, FolderSource):
        # A commit holds no empty folder; a folder on disk may, and that is a class too.
        for folder in source.folders():
            parent = folder.rsplit("/", 1)[0] if "/" in folder else ""
            if parent in roots and folder not in parents:
                by_class.setdefault(folder.rsplit("/", 1)[-1], [])
    empty = sorted(c for c, paths in by_class.items() if not paths)
    if empty:
        raise LabelError(
            f"class folder(s) {', '.join(repr(c) for c in empty)} of {source.label} hold no image",
            hint="Add images to them or remove them: a class without images cannot be learnt "
            "or scored.",
        )
    classes = sorted(by_class)
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for cls in classes:
        for path in by_class[cls]:
            name = posixpath.basename(path)
            stem = name.rsplit(".", 1)[0]
            patient = stem.split("_", 1)[0] if "_" in stem else f"{cls}/{stem}"
            samples.append(Sample(f"{cls}/{name}", path, patient, (index[cls],)))
    table = ImageTable("folders", classes, False, samples)
    _check_any(table, source)
    return table


def _prepared(source: Source, names: set[str]) -> ImageTable:
    meta = json.loads(source.read(PREPARED_META))
    text = source.read(PREPARED_LABELS).decode("utf-8")
    classes = list(meta["classes"])
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for row in csv.DictReader(io.StringIO(text)):
        labels = tuple(index[c] for c in row["labels"].split("|") if c)
        if row["path"] not in names:
            raise LabelError(
                f"{source.label}: {PREPARED_LABELS} names {row['path']!r}, which is not there",
                hint="Prepare the data again: a prepared folder is written whole or not at all.",
            )
        samples.append(Sample(row["key"], row["path"], row["patient"], labels))
    table = ImageTable("prepared", classes, bool(meta["multi_label"]), samples, prepared=meta)
    _check_any(table, source)
    return table


def _check_any(table: ImageTable, source: Source) -> None:
    if not table.samples:
        raise LabelError(
            f"{source.label} holds no labelled image ({table.layout} layout)",
            hint="Point at NIH's layout (images and Data_Entry_2017.csv), at class folders "
            "(CLASS/IMAGE.png), or at a prepared commit.",
        )
