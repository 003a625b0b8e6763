"""``prepare``: resized images or raw tensors with labels, keyed by source and params, lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lakecache.data.dataset import Dataset
from lakecache.library import prepare as prep
from lakecache.library.layout import read_table
from lakecache.library.source import open_source
from lakecache.settings import Settings
from library.util import damage


def test_prepare_a_commit_as_u8_then_commit_and_reuse(
    nih_commit: str, lake_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prepared"
    args = [nih_commit, "--out", str(out), "--size", "16", "--format", "u8"]
    assert prep.main([*args, "--commit", "xray-prepared"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 40 images" in printed and "committed" in printed
    meta = json.loads((out / "prepare.json").read_text())
    source_commit = Dataset("xray").resolve("v1")
    assert meta["source"]["commit"] == source_commit  # lineage: the source commit
    assert meta["images"] == 40 and meta["skipped_corrupt"] == 0
    assert meta["key"] == prep.preparation_key(
        source_commit, {"size": 16, "format": "u8", "channels": 1}
    )
    raws = sorted(out.glob("images/*.u8"))
    assert len(raws) == 40 and all(p.stat().st_size == 16 * 16 for p in raws)
    ds = Dataset("xray-prepared")
    commit = ds.get_commit("latest")
    assert source_commit in commit.message
    assert ds.resolve(prep.tag_for(meta["key"])) == ds.resolve("latest")
    # The prepared commit reads back as a labelled table, with the source's labels.
    with open_source("xray-prepared@latest") as prepared, open_source(nih_commit) as raw:
        table, original = read_table(prepared), read_table(raw)
    assert table.layout == "prepared" and table.classes == original.classes
    assert {s.key: s.labels for s in table.samples} == {s.key: s.labels for s in original.samples}
    # Same source, same params: found by its key, nothing done.
    assert prep.main([*args, "--commit", "xray-prepared"]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert len(ds.log()) == 1


def test_prepare_png_from_a_folder_and_corrupt_images(nih: Path, tmp_path: Path) -> None:
    victim = sorted(nih.glob("images_001/images/*.png"))[3]
    damage(victim)
    result = prep.prepare(nih, tmp_path / "skip", size=20, fmt="png", on_corrupt="skip")
    assert (result.images, result.skipped) == (39, 1)
    assert result.meta["skipped_examples"] == [f"images_001/images/{victim.name}"]
    with Image.open(next((tmp_path / "skip").glob("images/*.png"))) as img:
        assert img.size == (20, 20) and img.mode == "L"
    with pytest.raises(prep.CorruptImageError, match=victim.name) as info:
        prep.prepare(nih, tmp_path / "fail", size=20, on_corrupt="fail")
    assert "--on-corrupt skip" in info.value.hint
    assert not (tmp_path / "fail" / "prepare.json").exists()  # never taken for a prepared one


def test_prepare_refuses_a_folder_of_other_files(nih: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    (out / "images").mkdir(parents=True)
    (out / "images" / "mine.txt").write_text("keep me")
    with pytest.raises(prep.UserError, match="no preparation wrote"):
        prep.prepare(nih, out, size=16)
    assert (out / "images" / "mine.txt").read_text() == "keep me"
