"""ResNet image classifiers: building them, loading weights files, checkpoints.

Nothing is downloaded: models start from random weights unless a local
weights file is given. A weights file of ImageNet (1,000 outputs) fits any
number of classes, since the final layer is left as initialised when its
shape differs; any other difference is an error that names the tensors and,
when it can tell, the architecture the file was made for.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lakecache.errors import UserError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
CHECKPOINT_FORMAT = "lakecache-image-classifier/1"


class WeightsMismatchError(UserError):
    """A weights file does not fit the model."""


class CheckpointMismatchError(UserError):
    """A checkpoint was written by another model or for other classes."""


def build_model(arch: str, num_classes: int) -> torch.nn.Module:
    """A torchvision ResNet with random weights and ``num_classes`` outputs."""
    import torchvision.models

    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}", hint=f"Choose one of {', '.join(ARCHS)}.")
    model: torch.nn.Module = getattr(torchvision.models, arch)(
        weights=None, num_classes=num_classes
    )
    return model


def _state_dict_of(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(
            "the weights file holds no state dict (names to tensors)",
            hint="Save weights with torch.save(model.state_dict(), PATH).",
        )
    # Weights saved from DataParallel/DDP carry a 'module.' prefix.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: torch.nn.Module, path: Path, arch: str) -> list[str]:
    """Load a local weights file into ``model``; returns the tensors left as initialised.

    Raises:
        UserError: the file is missing or unreadable.
        WeightsMismatchError: tensors other than the final layer are missing,
            extra, or of another shape.
    """
    if not Path(path).is_file():
        raise UserError(
            f"weights file {str(path)!r} does not exist",
            hint="Pass a local .pt/.pth file (nothing is downloaded), or leave --weights out "
            "to start from random weights.",
        )
    try:
        state = _state_dict_of(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsMismatchError(
            f"weights file {path} could not be read: {exc}",
            hint="Pass a file written by torch.save(model.state_dict(), PATH).",
        ) from exc
    own = model.state_dict()
    head = [k for k in own if k.startswith("fc.")]
    skipped = [k for k in head if k in state and state[k].shape != own[k].shape]
    for k in skipped:
        del state[k]
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        guess = guess_arch(state)
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (first {k}: {tuple(state[k].shape)} in the file, "
                f"{tuple(own[k].shape)} in {arch})"
            )
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} the model lacks (first {unexpected[0]})")
        hint = "Pass weights saved from the same architecture."
        if guess and guess != arch:
            hint = f"The file looks like {guess} weights: pass --arch {guess}, or other weights."
        raise WeightsMismatchError(
            f"weights file {path} does not fit {arch}: tensors " + "; ".join(parts), hint=hint
        )
    model.load_state_dict(state, strict=False)
    return skipped


def guess_arch(state: dict[str, torch.Tensor]) -> str | None:
    """The architecture whose tensors (final layer aside) match ``state``'s, if one does."""
    for arch in ARCHS:
        own = build_model(arch, 1).state_dict()
        body = {k: v.shape for k, v in own.items() if not k.startswith("fc.")}
        if all(k in state and state[k].shape == s for k, s in body.items()) and all(
            k in own for k in state
        ):
            return arch
    return None


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp name, then rename: a crash leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint or model file written by :func:`save_atomic` (tensors and plain values).

    Raises CheckpointMismatchError when it is not one.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointMismatchError(
            f"{path} could not be read as a checkpoint: {exc}",
            hint="It may be cut off or from another program; remove it to start over.",
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not a checkpoint of lakecache's image classifier",
            hint="Pass a model.pt or checkpoint written by `lakecache lib image-classifier train`.",
        )
    return ckpt


def check_same_model(
    ckpt: dict[str, Any], path: Path, *, arch: str, classes: list[str], multi_label: bool
) -> None:
    """Raise CheckpointMismatchError when ``ckpt`` is of another model or class list."""
    problems = []
    if ckpt["arch"] != arch:
        problems.append(f"it is {ckpt['arch']}, this run is {arch}")
    if list(ckpt["classes"]) != list(classes):
        problems.append(
            f"its {len(ckpt['classes'])} classes are not this data's {len(classes)} "
            f"(first: {', '.join(ckpt['classes'][:3])} vs {', '.join(classes[:3])})"
        )
    if bool(ckpt["multi_label"]) != multi_label:
        problems.append("one of them is multi-label and the other single-label")
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {path} is from a different model: " + "; ".join(problems),
            hint="Train into another --out folder, pass --no-resume to start over (the "
            "checkpoint is then replaced), or use the same --arch and data as that run.",
        )
