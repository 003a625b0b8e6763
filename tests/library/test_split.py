"""``split``: by patient, seeded, NIH's test list kept, from folders and commits."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from lakecache import synth
from lakecache.data.dataset import Dataset
from lakecache.errors import UserError
from lakecache.library import split as split_mod
from lakecache.library.layout import read_table
from lakecache.library.source import open_source
from lakecache.settings import Settings


def _patients(nih: Path) -> dict[str, str]:
    rows = csv.DictReader(io.StringIO((nih / "Data_Entry_2017.csv").read_text()))
    return {r["Image Index"]: r["Patient ID"] for r in rows}


def test_split_by_patient_keeps_the_official_test_list(nih: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    result = split_mod.split(nih, out, val=0.2, seed=1)
    lists = {n: (out / f"{n}.txt").read_text().split() for n in split_mod.SPLITS}
    assert lists["test"] == sorted((nih / "test_list.txt").read_text().split())
    assert lists["train"] and lists["val"]
    patient = _patients(nih)
    groups = [{patient[k] for k in lists[n]} for n in split_mod.SPLITS]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert sorted(sum(lists.values(), [])) == sorted(patient)
    info = json.loads((out / "split.json").read_text())
    assert info["official_test"] is True and info["images"] == result.info["images"]
    # Seeded: the same seed gives the same lists, another seed other ones.
    again = split_mod.split(nih, tmp_path / "again", val=0.2, seed=1)
    other = split_mod.split(nih, tmp_path / "other", val=0.2, seed=2, use_official_test=False)
    assert again.keys == result.keys
    assert other.keys["test"] != result.keys["test"]


def test_class_folders_and_bad_fractions(tmp_path: Path) -> None:
    synth.generate(tmp_path / "c", 30, classes=3, median_size=2000, seed=2)
    result = split_mod.split(tmp_path / "c", tmp_path / "out", val=0.2, test=0.2, seed=0)
    assert sum(len(v) for v in result.keys.values()) == 30
    assert all("/" in k for k in result.keys["train"])  # CLASS/NAME
    with pytest.raises(UserError, match="fractions"):
        split_mod.split(tmp_path / "c", tmp_path / "bad", val=0.6, test=0.5)
    with pytest.raises(UserError, match="would be empty"):
        table = read_table(open_source(tmp_path / "c"))
        table.samples = table.samples[:2]
        split_mod.split_samples(table, val=0.3, test=0.3)


def test_split_of_a_commit_is_committed_as_a_dataset(
    nih: Path,
    nih_commit: str,
    lake_env: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "lists"
    rc = split_mod.main([nih_commit, "--out", str(out), "--seed", "1", "--commit", "xray-split"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "train" in printed and "committed" in printed
    from_folder = split_mod.split(nih, tmp_path / "f", seed=1)
    assert (out / "train.txt").read_text().split() == from_folder.keys["train"]
    files = {f.path for f in Dataset("xray-split").files("latest")}
    assert files == {"train.txt", "val.txt", "test.txt", "split.json"}
    info = json.loads((out / "split.json").read_text())
    assert info["source"]["commit"] == Dataset("xray").resolve("v1")


def test_unknown_input_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = split_mod.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error:" in err and "hint:" in err and "DATASET@REF" in err
