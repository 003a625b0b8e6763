"""``image-classifier``: train and evaluate on tiny images, and every kind of bad input.

Runs are a step or two of ResNet-18 on 24 px images, on the CPU: they check
the plumbing (checkpoints, resume, outputs, errors), not the learning (see
test_learning.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from lakecache import synth
from lakecache.library import image_classifier as ic
from lakecache.library.images import CorruptImageError
from lakecache.library.layout import LabelError, read_table
from lakecache.library.model import (
    CheckpointMismatchError,
    WeightsMismatchError,
    build_model,
)
from lakecache.library.source import open_source
from lakecache.settings import Settings
from library.util import damage


def _config(data: Path | str, out: Path, **changes: object) -> ic.TrainConfig:
    base: dict[str, object] = {
        "arch": "resnet18",
        "image_size": 16,
        "batch_size": 8,
        "epochs": 1,
        "max_steps": 2,
        "workers": 0,
        "val": 0.25,
        "test": 0.0,
        "allow_empty_class": True,
    }
    base.update(changes)
    return ic.TrainConfig(data=str(data), out=str(out), **base)  # type: ignore[arg-type]


def test_train_from_a_commit_is_tracked(
    nih_commit: str, lake_env: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = ic.train(_config(nih_commit, out, experiment="library-test"), settings=lake_env)
    assert first.resumed_from_epoch == 0 and len(first.history) == 1
    _check_tracked(lake_env)
    for name in ("model.pt", "checkpoints/last.pt", "metrics.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["data"]["commit"] == first_commit(lake_env)
    assert summary["data"]["read_from"] == "stream"  # no cache here: the lake's packs
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_step = [r["metrics"] for r in steps if "metrics" in r and "loss" in r["metrics"]]
    assert len(per_step) == 2
    assert all({"images_per_s", "data_wait_s", "data_wait_fraction"} <= set(m) for m in per_step)


def test_resume_then_evaluate(nih: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ic.train(_config(nih, out, max_steps=1))
    # Started again with more epochs, it resumes after the first.
    second = ic.train(_config(nih, out, epochs=2, max_steps=1))
    assert second.resumed_from_epoch == 1
    assert [h["epoch"] for h in second.history] == [1, 2]

    result = ic.evaluate(str(nih), out / "model.pt", tmp_path / "eval", workers=0)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == result.images > 0
    assert set(metrics["per_class_auroc"]) == set(synth.NIH_LABELS)
    assert {r["class"] for r in metrics["confusion"]} == set(synth.NIH_LABELS)
    assert all(r["tp"] + r["fp"] + r["tn"] + r["fn"] == result.images for r in metrics["confusion"])
    rows = list(csv.reader(io.StringIO((tmp_path / "eval" / "metrics.csv").read_text())))
    assert rows[0][:2] == ["class", "auroc"] and rows[-1][0] == "mean"
    with Image.open(tmp_path / "eval" / "auroc.png") as img:
        assert img.format == "PNG" and img.size[0] > 200


def _check_tracked(settings: Settings) -> None:
    """The run in experiment library-test has the step and epoch metrics, model and input."""
    from lakecache.data.hub import Hub
    from lakecache.tracking.store import TrackingStore

    hub = Hub(settings)
    try:
        store = TrackingStore(hub.catalog)
        runs = store.list_runs("library-test").items
        assert len(runs) == 1
        run_id = runs[0].run.id
        keys = set(store.metric_keys(run_id))
        assert {"loss", "images_per_s", "data_wait_s", "val_mean_auroc"} <= keys
        assert "val_auroc/Hernia" in keys
        assert "model.pt" in {a.path.rsplit("/", 1)[-1] for a in store.list_artifacts(run_id)}
        assert store.run_params(run_id)["arch"] == "resnet18"
        assert {i.dataset for i in store.run_inputs(run_id)} == {"xray"}
    finally:
        hub.close()


def first_commit(settings: Settings) -> str:
    from lakecache.data.dataset import Dataset

    return Dataset("xray", settings=settings).resolve("v1")


def test_single_label_class_folders(tmp_path: Path) -> None:
    synth.generate(tmp_path / "c", 24, classes=3, median_size=1500, sigma=0.1, seed=4)
    result = ic.train(_config(tmp_path / "c", tmp_path / "run", val=0.3))
    assert set(result.per_class_auroc) == set(synth.CLASS_NAMES[:3])
    ev = ic.evaluate(
        str(tmp_path / "c"),
        tmp_path / "run" / "model.pt",
        tmp_path / "ev",
        split_name="val",
        workers=0,
    )
    matrix = json.loads((tmp_path / "ev" / "metrics.json").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == ev.images


def test_corrupt_png_is_skipped_and_counted_or_fails(nih: Path, tmp_path: Path) -> None:
    train_val = sorted((nih / "train_val_list.txt").read_text().split())
    victims = train_val[::4]  # a quarter of what train and val read
    for name in victims:
        damage(next(nih.glob(f"images_00*/images/{name}")))
    result = ic.train(_config(nih, tmp_path / "skip", max_steps=None, batch_size=16))
    # Each damaged file is counted when read (a neighbour tried in its place may count twice).
    assert len(victims) <= result.skipped <= 2 * len(victims)
    with pytest.raises(CorruptImageError, match="could not be decoded") as info:
        ic.train(_config(nih, tmp_path / "fail", on_corrupt="fail", max_steps=None))
    assert "--on-corrupt skip" in info.value.hint


def test_corrupt_png_fails_cleanly_in_dataloader_workers(nih: Path, tmp_path: Path) -> None:
    for victim in sorted(nih.glob("images_00*/images/*.png")):
        damage(victim)
    with pytest.raises(CorruptImageError, match="could not be decoded"):
        ic.train(_config(nih, tmp_path / "w", on_corrupt="fail", workers=2))


def test_label_missing_from_the_csv(nih: Path, tmp_path: Path) -> None:
    csv_path = nih / "Data_Entry_2017.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    dropped = lines.pop(5).split(",")[0]
    csv_path.write_text("".join(lines))
    with pytest.raises(LabelError, match=re.escape(dropped)) as info:
        ic.train(_config(nih, tmp_path / "run"))
    assert "--on-missing-label skip" in info.value.hint
    table = read_table(open_source(nih), on_missing_label="skip")
    assert table.unlabelled == 1 and len(table.samples) == 39
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Broken Heart", 1)
    csv_path.write_text("".join(lines))
    with pytest.raises(LabelError, match="unknown label 'Broken Heart'"):
        read_table(open_source(nih), on_missing_label="skip")


def test_empty_class(nih: Path, tmp_path: Path) -> None:
    synth.generate(tmp_path / "c", 12, classes=3, median_size=1500, seed=1)
    (tmp_path / "c" / "Hernia").mkdir()
    with pytest.raises(LabelError, match="'Hernia'.*hold no image"):
        ic.train(_config(tmp_path / "c", tmp_path / "run"))
    # NIH: a finding no training image has.
    csv_path = nih / "Data_Entry_2017.csv"
    lines = csv_path.read_text().splitlines()
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        labels = [x for x in cells[1].split("|") if x != "Hernia"]
        cells[1] = "|".join(labels) or "No Finding"
        lines[i] = ",".join(cells)
    csv_path.write_text("\n".join(lines) + "\n")
    assert "Hernia" not in csv_path.read_text()
    with pytest.raises(LabelError, match="'Hernia' have no image in the training split"):
        ic.train(_config(nih, tmp_path / "nih", allow_empty_class=False))


def test_checkpoint_from_a_different_model(nih: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ic.train(_config(nih, out, max_steps=1))
    with pytest.raises(CheckpointMismatchError, match="it is resnet18, this run is resnet34") as e:
        ic.train(_config(nih, out, arch="resnet34", max_steps=1))
    assert "--no-resume" in e.value.hint
    # A file that is no checkpoint at all.
    torch.save({"weights": torch.zeros(3)}, out / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointMismatchError, match="not a checkpoint"):
        ic.train(_config(nih, out, max_steps=1))
    # Evaluating a model on data with other classes.
    synth.generate(tmp_path / "c", 12, classes=3, median_size=1500, seed=1)
    with pytest.raises(CheckpointMismatchError, match="classes"):
        ic.evaluate(str(tmp_path / "c"), out / "model.pt", tmp_path / "ev", workers=0)


def test_weights_file_that_does_not_match(nih: Path, tmp_path: Path) -> None:
    weights = tmp_path / "resnet18-imagenet.pt"
    torch.save(build_model("resnet18", 1000).state_dict(), weights)
    # ImageNet's 1,000-class head is left out; the rest loads.
    result = ic.train(_config(nih, tmp_path / "ok", weights=str(weights), max_steps=1))
    assert result.history
    with pytest.raises(WeightsMismatchError, match="does not fit resnet34") as info:
        ic.train(_config(nih, tmp_path / "bad", arch="resnet34", weights=str(weights)))
    assert "looks like resnet18" in info.value.hint
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsMismatchError, match="could not be read"):
        ic.train(_config(nih, tmp_path / "junk", weights=str(junk)))
