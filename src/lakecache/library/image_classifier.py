"""``image-classifier``: train and evaluate a ResNet on labelled images.

``train`` reads a dataset (NIH ChestX-ray14's layout, class folders, or a
prepared commit; from a folder or a commit, through ``lakecache.torch``; a
folder that is a ready cache of a commit, as a flow task is handed, is read
as that commit),
splits it by patient unless a split is given, and trains a torchvision
ResNet (18, 34, 50 or 101): multi-label (sigmoid outputs, one per class)
for NIH, single-label (softmax) for class folders. On a GPU it uses mixed
precision and channels-last; on a CPU neither. After every epoch it scores
the validation split (per-class AUROC and their mean) and writes
``checkpoints/last.pt`` (model, optimiser, schedule, history; written whole
or not at all); a run started again with the same ``--out`` resumes from it.
The best epoch's model is ``model.pt``. Loss, images/s and data-wait per
step, and AUROC per epoch, go to ``metrics.jsonl`` and to run tracking.

``evaluate`` scores a ``model.pt`` on a split: per-class AUROC, their mean,
and the confusion at a threshold, as ``metrics.json``, ``metrics.csv`` and
``auroc.png``.

    python -m lakecache.library.image_classifier train xray@v1 --out run1 --epochs 10
    python -m lakecache.library.image_classifier evaluate xray@v1 --model run1/model.pt
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.utils.data

from lakecache.errors import UserError
from lakecache.library import cli as libcli
from lakecache.library.images import LabelledImages, OnCorrupt, worker_count
from lakecache.library.layout import ImageTable, LabelError, OnMissing, Sample, read_table
from lakecache.library.metrics import (
    auroc_plot,
    confusion,
    confusion_matrix,
    mean_auroc,
    per_class_auroc,
)
from lakecache.library.model import (
    ARCHS,
    CHECKPOINT_FORMAT,
    build_model,
    check_same_model,
    load_checkpoint,
    load_weights,
    save_atomic,
)
from lakecache.library.source import Source, open_source
from lakecache.library.split import OFFICIAL_TEST, read_split, split_samples
from lakecache.library.track import Tracker

if TYPE_CHECKING:
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.library.image_classifier")

Schedule = Literal["cosine", "step", "constant"]
SCHEDULES = ("cosine", "step", "constant")
OPTIMIZERS = ("adamw", "sgd")
#: Gray-level mean and spread of ImageNet (the RGB means averaged): inputs are
#: normalised so, which suits weights trained there and does no harm otherwise.
MEAN, STD = 0.449, 0.226


@dataclass
class TrainConfig:
    """Everything ``train`` is told; saved with every checkpoint and model."""

    data: str
    out: str = "outputs"
    split: str | None = None
    arch: str = "resnet50"
    image_size: int = 224
    batch_size: int = 128
    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    flip: bool = True
    workers: int | None = None
    weights: str | None = None
    resume: bool = True
    max_steps: int | None = None
    on_corrupt: str = "skip"
    on_missing_label: str = "error"
    allow_empty_class: bool = False
    cached: bool | None = None
    device: str | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    seed: int = 0
    log_every: int = 1
    experiment: str | None = None
    val: float = 0.1
    test: float = 0.2


@dataclass
class TrainResult:
    """What a training run reached, and where it left its files."""

    out: Path
    best_epoch: int
    mean_auroc: float
    per_class_auroc: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    images_per_s: float = 0.0
    data_wait_fraction: float = 0.0
    skipped: int = 0
    resumed_from_epoch: int = 0


# --- data -------------------------------------------------------------------------------


def _splits(
    source: Source,
    table: ImageTable,
    split: str | None,
    *,
    val: float,
    test: float,
    seed: int,
    settings: Settings | None = None,
) -> dict[str, list[Sample]]:
    """Samples per split: from the split given, else drawn by patient (NIH's test list kept)."""
    if split is not None:
        with open_source(split, settings=settings) as split_source:
            keys = read_split(split_source)
        return {name: table.subset(k, what=f"{split}/{name}.txt") for name, k in keys.items()}
    official = None
    if table.layout == "nih" and source.exists(OFFICIAL_TEST):
        lines = source.read(OFFICIAL_TEST).decode().splitlines()
        official = [line.strip() for line in lines if line.strip()] or None
    result = split_samples(table, val=val, test=test, seed=seed, official_test=official)
    return {name: table.subset(k, what=name) for name, k in result.keys.items()}


def _check_classes(table: ImageTable, train: list[Sample], allow_empty: bool) -> None:
    counts = table.counts(train)
    empty = [c for i, c in enumerate(table.classes) if counts[i] == 0]
    if empty and not allow_empty:
        raise LabelError(
            f"class(es) {', '.join(repr(c) for c in empty)} have no image in the training split "
            f"({len(train)} images)",
            hint="Add images of them, use a larger split, or pass --allow-empty-class to train "
            "anyway (their AUROC is then not defined).",
        )
    for c in empty:
        log.warning("class %r has no training image", c)


def _loader(
    ds: LabelledImages, batch: int, *, shuffle: bool, workers: int, cuda: bool, seed: int
) -> torch.utils.data.DataLoader[Any]:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=generator,
    )


def _to_input(
    x: torch.Tensor,
    device: torch.device,
    channels_last: bool,
    flip: bool,
    size: int | None = None,
    random_crop: bool = False,
) -> torch.Tensor:
    """uint8 N x 1 x L x L -> normalised float N x 3 x S x S on ``device``.

    Larger images (a commit prepared at 256 px for 224 px training) are cropped
    to ``size``: at one random place per batch when training, in the centre
    otherwise; ``flip`` mirrors a random half of the batch.
    """
    x = x.to(device, non_blocking=True)
    side = x.shape[-1]
    if size is not None and side > size:
        if random_crop:
            top, left = (int(v) for v in torch.randint(0, side - size + 1, (2,)))
        else:
            top = left = (side - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    x = x.float().div_(255.0).sub_(MEAN).div_(STD)
    if flip:
        mask = torch.rand(x.shape[0], device=device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    x = x.expand(-1, 3, -1, -1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


# --- training ---------------------------------------------------------------------------


def train(config: TrainConfig, *, settings: Settings | None = None) -> TrainResult:
    """Train a classifier as ``config`` says; returns the best epoch's scores.

    ``settings`` name the lake and catalog a commit is read from (default:
    :meth:`lakecache.Settings.load`).

    Resumes from ``OUT/checkpoints/last.pt`` when it exists (unless
    ``config.resume`` is False). Interrupted, it loses at most the epoch under way.

    Raises:
        UserError: bad settings or data (see the messages' hints), a weights
            file or checkpoint that does not fit
            (:class:`~lakecache.library.model.WeightsMismatchError`,
            :class:`~lakecache.library.model.CheckpointMismatchError`).

    Example:
        >>> train(TrainConfig("xray-prepared@latest", arch="resnet18", epochs=3))  # doctest: +SKIP
    """
    _check_config(config)
    out = libcli.output_folder(Path(config.out))
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    amp = cuda if config.amp is None else config.amp and cuda
    channels_last = cuda if config.channels_last is None else config.channels_last
    if cuda:
        torch.backends.cudnn.benchmark = True

    source = open_source(
        config.data, cached=config.cached, settings=settings, commits_of_caches=True
    )
    tracker = Tracker(
        out, name=f"train {config.arch}", experiment=config.experiment, settings=settings
    )
    datasets: list[LabelledImages] = []
    try:
        table = read_table(source, on_missing_label=_missing(config.on_missing_label))
        load_size, size = _image_sizes(table, config.image_size)
        splits = _splits(
            source,
            table,
            config.split,
            val=config.val,
            test=config.test,
            seed=config.seed,
            settings=settings,
        )
        train_samples, val_samples = splits.get("train", []), splits.get("val", [])
        if not train_samples or not val_samples:
            raise UserError(
                "training needs a train and a val split with images "
                f"(got {len(train_samples)} and {len(val_samples)})",
                hint="Pass a split with both lists, or more data.",
            )
        _check_classes(table, train_samples, config.allow_empty_class)
        on_corrupt: OnCorrupt = "fail" if config.on_corrupt == "fail" else "skip"
        train_ds = LabelledImages(
            source, table, train_samples, size=load_size, on_corrupt=on_corrupt
        )
        datasets.append(train_ds)
        val_ds = LabelledImages(source, table, val_samples, size=load_size, on_corrupt=on_corrupt)
        datasets.append(val_ds)
        classes = table.classes

        model = build_model(config.arch, len(classes))
        if config.weights:
            left = load_weights(model, Path(config.weights), config.arch)
            if left:
                print(
                    f"weights {config.weights}: loaded; the final layer starts anew "
                    f"for {len(classes)} classes"
                )
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = _optimizer(model, config)
        steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
        if config.max_steps:
            steps_per_epoch = min(steps_per_epoch, config.max_steps)
        scheduler = _scheduler(optimizer, config, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        loss_fn: torch.nn.Module = (
            torch.nn.BCEWithLogitsLoss() if table.multi_label else torch.nn.CrossEntropyLoss()
        )

        history: list[dict[str, Any]] = []
        start_epoch = 0
        best: dict[str, Any] = {"epoch": -1, "mean_auroc": -math.inf, "per_class": {}}
        last = out / "checkpoints" / "last.pt"
        if config.resume and last.exists():
            ckpt = load_checkpoint(last)
            check_same_model(
                ckpt, last, arch=config.arch, classes=classes, multi_label=table.multi_label
            )
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            history = json.loads(ckpt["history"])
            best = json.loads(ckpt["best"])
            start_epoch = int(ckpt["epoch"])
            print(f"resumed from {last} after epoch {start_epoch}")

        params = {
            **{k: v for k, v in asdict(config).items() if v is not None},
            "image_size": size,
            "classes": len(classes),
            "multi_label": table.multi_label,
            "train_images": len(train_ds),
            "val_images": len(val_ds),
            "device": str(device),
            "amp": amp,
            "channels_last": channels_last,
            "data_commit": source.commit_id or "",
            "read_from": train_ds.read_from,
        }
        tracker.log_params(params)
        workers = worker_count(config.workers)
        train_loader = _loader(
            train_ds, config.batch_size, shuffle=True, workers=workers, cuda=cuda, seed=config.seed
        )
        val_loader = _loader(
            val_ds, config.batch_size, shuffle=False, workers=workers, cuda=cuda, seed=config.seed
        )
        print(
            f"training {config.arch} on {len(train_ds)} images ({len(val_ds)} for validation), "
            f"{len(classes)} classes, {size} px, batch {config.batch_size}, "
            f"{config.epochs} epochs, {device}{' AMP' if amp else ''}; "
            f"data from {source.label} ({train_ds.read_from})",
            flush=True,
        )
        step = start_epoch * steps_per_epoch
        total_images = 0
        total_time = total_wait = 0.0
        for epoch in range(start_epoch, config.epochs):
            model.train()
            epoch_loss = 0.0
            epoch_images = 0
            epoch_t0 = time.perf_counter()
            waited = 0.0
            t_end = time.perf_counter()
            for i, (x, y) in enumerate(train_loader):
                if i >= steps_per_epoch:
                    break
                t_data = time.perf_counter()
                wait = t_data - t_end
                inputs = _to_input(x, device, channels_last, config.flip, size, random_crop=True)
                target = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    logits = model(inputs)
                    loss = loss_fn(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_value = float(loss.detach())  # syncs the device: the step is done
                t_end = time.perf_counter()
                step_s = t_end - t_data + wait
                step += 1
                n = x.shape[0]
                epoch_loss += loss_value * n
                epoch_images += n
                waited += wait
                total_images += n
                total_time += step_s
                total_wait += wait
                if step % config.log_every == 0:
                    tracker.log_metrics(
                        {
                            "loss": loss_value,
                            "step_s": step_s,
                            "images_per_s": n / max(step_s, 1e-9),
                            "data_wait_s": wait,
                            "data_wait_fraction": wait / max(step_s, 1e-9),
                            "lr": optimizer.param_groups[0]["lr"],
                        },
                        step=step,
                    )
            if epoch_images == 0:
                raise UserError("the training split gave no batch", hint="Check the data.")
            epoch_s = time.perf_counter() - epoch_t0
            scores, targets = predict(model, val_loader, device, channels_last, amp, size)
            per_class = per_class_auroc(scores, targets, classes)
            mean = mean_auroc(per_class)
            record = {
                "epoch": epoch + 1,
                "train_loss": epoch_loss / epoch_images,
                "val_mean_auroc": mean,
                "images_per_s": epoch_images / max(epoch_s, 1e-9),
                "data_wait_fraction": waited / max(epoch_s, 1e-9),
                "seconds": epoch_s,
            }
            history.append(record)
            tracker.log_metrics(
                {
                    "epoch": epoch + 1,
                    "train_loss": record["train_loss"],
                    "val_mean_auroc": mean,
                    **{f"val_auroc/{c}": v for c, v in per_class.items()},
                },
                step=step,
            )
            tracker.flush()
            print(
                f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, "
                f"val mean AUROC {mean:.4f}, {record['images_per_s']:,.0f} images/s, "
                f"data wait {100 * record['data_wait_fraction']:.1f}%",
                flush=True,
            )
            meta = _model_meta(config, table, size)
            if not math.isnan(mean) and mean > best["mean_auroc"]:
                best = {"epoch": epoch + 1, "mean_auroc": mean, "per_class": per_class}
                save_atomic(
                    {**meta, "model": _cpu_state(model), "epoch": epoch + 1}, out / "model.pt"
                )
            save_atomic(
                {
                    **meta,
                    "epoch": epoch + 1,
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": json.dumps(history),
                    "best": json.dumps(best),
                },
                last,
            )
        if not (out / "model.pt").exists():
            # Every epoch's AUROC was undefined (a class list with no negatives, say).
            save_atomic(
                {**_model_meta(config, table, size), "model": _cpu_state(model)}, out / "model.pt"
            )
        skipped = train_ds.skipped + val_ds.skipped
        result = TrainResult(
            out=out,
            best_epoch=int(best["epoch"]),
            mean_auroc=float(best["mean_auroc"]) if best["epoch"] > 0 else math.nan,
            per_class_auroc=dict(best["per_class"]),
            history=history,
            images_per_s=total_images / total_time if total_time else 0.0,
            data_wait_fraction=total_wait / total_time if total_time else 0.0,
            skipped=skipped,
            resumed_from_epoch=start_epoch,
        )
        summary = {
            "mean_auroc": result.mean_auroc,
            "best_epoch": result.best_epoch,
            "per_class_auroc": result.per_class_auroc,
            "images_per_s": result.images_per_s,
            "data_wait_fraction": result.data_wait_fraction,
            "skipped_corrupt": skipped,
            "history": history,
            "classes": classes,
            "config": asdict(config),
            "data": {
                "label": source.label,
                "commit": source.commit_id,
                "read_from": train_ds.read_from,
            },
        }
        libcli.write_atomic(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
        tracker.log_metrics({"best_val_mean_auroc": result.mean_auroc, "skipped_corrupt": skipped})
        tracker.log_artifact(out / "model.pt")
        tracker.log_artifact(out / "metrics.json")
        return result
    finally:
        for ds in datasets:
            ds.close()
        source.close()
        tracker.close()


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _model_meta(config: TrainConfig, table: ImageTable, size: int) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": config.arch,
        "classes": list(table.classes),
        "multi_label": table.multi_label,
        "image_size": size,
        "config": json.dumps(asdict(config)),
    }


def _missing(value: str) -> OnMissing:
    return "skip" if value == "skip" else "error"


def _image_sizes(table: ImageTable, asked: int) -> tuple[int, int]:
    """(side images are read at, side the model sees).

    Prepared data is read as prepared (no resizing on the CPU) and cropped on
    the device when larger than asked; smaller prepared data is used at its own
    size. Other data is resized to the size asked when read.
    """
    prepared = table.prepared
    if not prepared:
        return asked, asked
    side = int(str(prepared["size"]))
    if side < asked:
        print(
            f"note: the data is prepared at {side} px, under --image-size {asked}; "
            f"training at {side} px",
            file=sys.stderr,
        )
        return side, side
    return side, asked


def _check_config(config: TrainConfig) -> None:
    problems = []
    if config.arch not in ARCHS:
        problems.append(f"--arch must be one of {', '.join(ARCHS)}, not {config.arch!r}")
    if config.batch_size < 1:
        problems.append("--batch-size must be 1 or more")
    if config.epochs < 1:
        problems.append("--epochs must be 1 or more")
    if not config.lr > 0:
        problems.append("--lr must be above 0")
    if config.schedule not in SCHEDULES:
        problems.append(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if config.optimizer not in OPTIMIZERS:
        problems.append(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if not 16 <= config.image_size <= 4096:
        problems.append("--image-size must be 16 to 4096 pixels")
    if config.on_corrupt not in ("skip", "fail"):
        problems.append("--on-corrupt must be skip or fail")
    if problems:
        raise UserError("; ".join(problems), hint="See --help for every setting and its default.")


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # One fused kernel for every parameter, on CPU and CUDA: PyTorch's default on a CPU is a
    # loop over the tensors, about 6x slower for ResNet-18's 11M parameters (0.12 s a step
    # on one core, as long as the backward pass at 32 px).
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=0.9,
            weight_decay=config.weight_decay,
            nesterov=True,
            fused=fused,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per step: linear warm-up, then cosine to 0, steps of /10 at 1/2 and 3/4, or constant."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    kind = config.schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "step":
            return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader[Any],
    device: torch.device,
    channels_last: bool = False,
    amp: bool = False,
    size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities N x C, targets) of every item the loader gives, in order."""
    was_training = model.training
    model.eval()
    scores, targets = [], []
    multi = None
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(_to_input(x, device, channels_last, False, size)).float()
        multi = y.dim() == 2 if multi is None else multi
        probs = torch.sigmoid(logits) if multi else torch.softmax(logits, 1)
        scores.append(probs.cpu())
        targets.append(y)
    model.train(was_training)
    return torch.cat(scores), torch.cat(targets)


# --- evaluation -------------------------------------------------------------------------


@dataclass
class EvalResult:
    mean_auroc: float
    per_class_auroc: dict[str, float]
    confusion: list[dict[str, Any]]
    images: int
    skipped: int
    out: Path


def evaluate(
    data: str,
    model_path: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    split_name: str = "test",
    threshold: float = 0.5,
    batch_size: int = 128,
    workers: int | None = None,
    on_corrupt: OnCorrupt = "skip",
    on_missing_label: OnMissing = "error",
    cached: bool | None = None,
    device: str | None = None,
    seed: int = 0,
    settings: Settings | None = None,
) -> EvalResult:
    """Score ``model_path`` on a split of ``data``; write metrics.json, metrics.csv, auroc.png.

    Without ``split`` the split is drawn as ``train`` draws it (same ``seed``).

    Raises:
        UserError: bad data or split;
            :class:`~lakecache.library.model.CheckpointMismatchError` for a file
            that is not a model of this library or was trained on other classes.
    """
    if not 0 < threshold < 1:
        raise UserError(f"threshold must be between 0 and 1, not {threshold}", hint="E.g. 0.5.")
    folder = libcli.output_folder(Path(out))
    ckpt = load_checkpoint(Path(model_path))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source = open_source(data, cached=cached, settings=settings, commits_of_caches=True)
    tracker = Tracker(folder, name=f"evaluate {ckpt['arch']}", settings=settings)
    ds: LabelledImages | None = None
    try:
        table = read_table(source, on_missing_label=on_missing_label)
        check_same_model(
            ckpt,
            Path(model_path),
            arch=ckpt["arch"],
            classes=table.classes,
            multi_label=table.multi_label,
        )
        splits = _splits(source, table, split, val=0.1, test=0.2, seed=seed, settings=settings)
        samples = splits.get(split_name)
        if not samples:
            raise UserError(
                f"the split has no {split_name!r} images",
                hint="Pass --split-name val or a split with a test list.",
            )
        model = build_model(ckpt["arch"], len(table.classes))
        model.load_state_dict(ckpt["model"])
        model.to(dev)
        load_size, size = _image_sizes(table, int(ckpt["image_size"]))
        ds = LabelledImages(source, table, samples, size=load_size, on_corrupt=on_corrupt)
        loader = _loader(
            ds,
            batch_size,
            shuffle=False,
            workers=worker_count(workers),
            cuda=dev.type == "cuda",
            seed=seed,
        )
        probs, targets = predict(model, loader, dev, size=size)
        per_class = per_class_auroc(probs, targets, table.classes)
        mean = mean_auroc(per_class)
        rows = confusion(probs, targets, table.classes, threshold)
        metrics: dict[str, Any] = {
            "mean_auroc": mean,
            "per_class_auroc": per_class,
            "classes_scored": sum(1 for v in per_class.values() if not math.isnan(v)),
            "threshold": threshold,
            "confusion": rows,
            "split": split_name,
            "images": len(ds),
            "skipped_corrupt": ds.skipped,
            "model": str(model_path),
            "arch": ckpt["arch"],
            "data": {"label": source.label, "commit": source.commit_id},
        }
        if not table.multi_label:
            metrics["confusion_matrix"] = confusion_matrix(probs, targets, len(table.classes))
        libcli.write_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(
            ["class", "auroc", "tp", "fp", "tn", "fn", "precision", "recall", "specificity"]
        )
        for r in rows:
            writer.writerow(
                [
                    r["class"],
                    _fmt(per_class[r["class"]]),
                    r["tp"],
                    r["fp"],
                    r["tn"],
                    r["fn"],
                    _fmt(r["precision"]),
                    _fmt(r["recall"]),
                    _fmt(r["specificity"]),
                ]
            )
        writer.writerow(["mean", _fmt(mean), "", "", "", "", "", "", ""])
        libcli.write_atomic(folder / "metrics.csv", buf.getvalue())
        title = f"{ckpt['arch']} on {split_name} ({len(ds)} images): mean AUROC {mean:.3f}"
        libcli.write_atomic(folder / "auroc.png", auroc_plot(per_class, title))
        tracker.log_metrics(
            {"test_mean_auroc": mean, **{f"test_auroc/{c}": v for c, v in per_class.items()}}
        )
        for name in ("metrics.json", "metrics.csv", "auroc.png"):
            tracker.log_artifact(folder / name)
        return EvalResult(mean, per_class, rows, len(ds), ds.skipped, folder)
    finally:
        if ds is not None:
            ds.close()
        source.close()
        tracker.close()


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


# --- command line -----------------------------------------------------------------------


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        help="a folder, or a commit or one folder of it: DATASET@REF[/FOLDER] (e.g. "
        "xray-prepared@latest); a folder inside a ready cache of a commit (a flow task's "
        "cached input) is read as that commit, through lakecache.torch",
    )
    p.add_argument(
        "--split",
        default=None,
        help="a folder or commit with train.txt/val.txt/test.txt (from `lakecache lib split`); "
        "default: drawn by patient with --seed",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: per core, up to 8)"
    )
    p.add_argument(
        "--on-corrupt",
        choices=("skip", "fail"),
        default="skip",
        help="an image that cannot be decoded: skip and count it (default), or stop",
    )
    libcli.add_missing_label_arg(p)
    p.add_argument(
        "--cached",
        choices=("auto", "yes", "no"),
        default="auto",
        help="for a commit: read the site's ready cache when there is one (auto), insist on "
        "one (yes), or read the lake (no)",
    )
    p.add_argument(
        "--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when there is one)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the split, the shuffle and the weights"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lakecache lib image-classifier",
        description="Train or evaluate a ResNet image classifier on a folder or commit "
        "(NIH ChestX-ray14 layout: multi-label; class folders: single-label; or a prepared "
        "commit).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train a model; checkpoints every epoch and resumes from the last",
        description="Train a torchvision ResNet. Writes model.pt (best epoch by validation mean "
        "AUROC), checkpoints/last.pt, metrics.json and metrics.jsonl into --out; logs to run "
        "tracking. Nothing is downloaded: weights are random unless --weights names a local file.",
    )
    _add_data_args(t)
    libcli.add_output_args(t)
    t.add_argument("--arch", choices=ARCHS, default=None, help="default resnet50")
    t.add_argument(
        "--image-size", type=int, default=None, help="input side in pixels (default 224)"
    )
    t.add_argument("--batch-size", type=int, default=None, help="default 128")
    t.add_argument("--epochs", type=int, default=None, help="default 10")
    libcli.add_profile_arg(t)
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument(
        "--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule per step"
    )
    t.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up first")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    t.add_argument("--weights", default=None, help="a local weights file to start from")
    t.add_argument(
        "--no-resume", action="store_true", help="start over even if --out has a checkpoint"
    )
    t.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch")
    t.add_argument(
        "--allow-empty-class",
        action="store_true",
        help="train even if a class has no training image",
    )
    t.add_argument(
        "--amp",
        choices=("auto", "on", "off"),
        default="auto",
        help="mixed precision (GPU only; auto: on)",
    )
    t.add_argument(
        "--val", type=float, default=0.1, help="validation share when the split is drawn"
    )
    t.add_argument("--test", type=float, default=0.2, help="test share when the split is drawn")
    t.add_argument(
        "--experiment",
        default=None,
        help="outside a job or flow task: start a tracking run in this experiment (inside "
        "one, the task's own run is used)",
    )
    e = sub.add_parser(
        "evaluate",
        help="score a model on a split: AUROC per class, mean, confusion; table and plot",
        description="Score a model.pt on a split: writes metrics.json, metrics.csv (per class: "
        "AUROC, TP/FP/TN/FN, precision, recall, specificity at --threshold) and auroc.png.",
    )
    _add_data_args(e)
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $LAKECACHE_OUTPUTS or ./outputs)",
    )
    e.add_argument(
        "--model", required=True, help="model.pt written by train (or a folder holding it)"
    )
    e.add_argument("--split-name", default="test", choices=("train", "val", "test"))
    e.add_argument(
        "--threshold", type=float, default=0.5, help="for the confusion counts (multi-label)"
    )
    e.add_argument("--batch-size", type=int, default=128)
    return p


def _cached(value: str) -> bool | None:
    return {"auto": None, "yes": True, "no": False}[value]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lakecache.library.image_classifier train|evaluate``: see ``--help``."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        libcli.apply_profile(
            args, "train", {"arch": "resnet50", "image_size": 224, "batch_size": 128, "epochs": 10}
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def run() -> None:
        out = libcli.output_folder(args.out)
        if args.command == "train":
            config = TrainConfig(
                data=args.data,
                out=str(out),
                split=args.split,
                arch=args.arch,
                image_size=args.image_size,
                batch_size=args.batch_size,
                epochs=args.epochs,
                lr=args.lr,
                optimizer=args.optimizer,
                weight_decay=args.weight_decay,
                schedule=args.schedule,
                warmup_epochs=args.warmup_epochs,
                flip=not args.no_flip,
                workers=args.workers,
                weights=args.weights,
                resume=not args.no_resume,
                max_steps=args.max_steps,
                on_corrupt=args.on_corrupt,
                on_missing_label=args.on_missing_label,
                allow_empty_class=args.allow_empty_class,
                cached=_cached(args.cached),
                device=args.device,
                amp={"auto": None, "on": True, "off": False}[args.amp],
                seed=args.seed,
                experiment=args.experiment,
                val=args.val,
                test=args.test,
            )
            result = train(config)
            print(
                f"best epoch {result.best_epoch}: validation mean AUROC {result.mean_auroc:.4f}; "
                f"{result.images_per_s:,.0f} images/s, data wait "
                f"{100 * result.data_wait_fraction:.1f}%, skipped {result.skipped} corrupt"
            )
            libcli.table(
                ["class", "val AUROC"], [[c, v] for c, v in result.per_class_auroc.items()]
            )
            print(f"model: {out / 'model.pt'}")
            libcli.maybe_commit(args, out, f"{config.arch} trained on {config.data}")
        else:
            model_path = Path(args.model)
            if model_path.is_dir():
                model_path = model_path / "model.pt"
            ev = evaluate(
                args.data,
                model_path,
                out,
                split=args.split,
                split_name=args.split_name,
                threshold=args.threshold,
                batch_size=args.batch_size,
                workers=args.workers,
                on_corrupt=args.on_corrupt,
                on_missing_label=args.on_missing_label,
                cached=_cached(args.cached),
                device=args.device,
                seed=args.seed,
            )
            libcli.table(
                ["class", "AUROC", "TP", "FP", "TN", "FN"],
                [
                    [r["class"], ev.per_class_auroc[r["class"]], r["tp"], r["fp"], r["tn"], r["fn"]]
                    for r in ev.confusion
                ],
            )
            print(
                f"mean AUROC {ev.mean_auroc:.4f} on {ev.images} images "
                f"(skipped {ev.skipped} corrupt); wrote {out}/metrics.json, metrics.csv, auroc.png"
            )

    return libcli.run_main(run)


def iter_history(out: Path) -> Iterator[dict[str, Any]]:
    """The per-epoch records of a training output folder's ``metrics.json``."""
    yield from json.loads((out / "metrics.json").read_text()).get("history", [])


if __name__ == "__main__":
    raise SystemExit(main())
