"""The synthetic generator's NIH ChestX-ray14 layout: files, CSV, lists, and visible labels."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from PIL import Image

from lakecache import synth


def test_layout_csv_and_lists(nih: Path) -> None:
    folders = sorted(p.relative_to(nih).as_posix() for p in nih.glob("images_*/images"))
    assert folders == ["images_001/images", "images_002/images"]
    pngs = sorted(nih.glob("images_*/images/*.png"))
    assert len(pngs) == 40
    text = (nih / "Data_Entry_2017.csv").read_text()
    assert text.splitlines()[0] == synth.NIH_CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["Image Index"] for r in rows} == {p.name for p in pngs}
    labels = {label for r in rows for label in r["Finding Labels"].split("|")}
    assert labels <= set(synth.NIH_LABELS)
    assert any("|" in r["Finding Labels"] for r in rows)
    patient = {r["Image Index"]: r["Patient ID"] for r in rows}
    train_val = (nih / "train_val_list.txt").read_text().split()
    test = (nih / "test_list.txt").read_text().split()
    assert sorted(train_val + test) == sorted(patient)
    assert not {patient[n] for n in train_val} & {patient[n] for n in test}
    with Image.open(pngs[0]) as img:
        assert img.mode == "L" and img.size == (24, 24)


def test_same_seed_same_bytes_and_marks_follow_labels(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    synth.generate_nih(a, 80, size=32, seed=5)
    synth.generate_nih(b, 80, size=32, seed=5)
    for p in a.rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()
    rows = list(csv.DictReader(io.StringIO((a / "Data_Entry_2017.csv").read_text())))
    bright = set(synth.NIH_LABELS[:7])
    dark = set(synth.NIH_LABELS[7:14])
    kinds = set()
    for r in rows:
        labels = set(r["Finding Labels"].split("|"))
        with Image.open(a / "images_001" / "images" / r["Image Index"]) as img:
            pixels = img.tobytes()
        # The picture and its noise never reach 250 or fall to 4: only marks do.
        assert (pixels.count(250) > 0) == bool(labels & bright), r
        assert (pixels.count(4) > 0) == bool(labels & dark), r
        kinds.add(r["Finding Labels"] == "No Finding")
    assert kinds == {True, False}


def test_class_folder_mode_is_unchanged(tmp_path: Path) -> None:
    files, nbytes = synth.generate(tmp_path / "c", 12, classes=3, median_size=3000, seed=1)
    assert files == 12 and nbytes > 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(synth.CLASS_NAMES[:3])
