"""Scores of a classifier: AUROC per class and its mean, confusion at a threshold, a plot.

Pure functions of tensors (no scikit-learn). AUROC is the Mann-Whitney
statistic: the chance that a random positive scores above a random negative,
ties counting half. A class with no positive or no negative has no AUROC
(NaN) and is left out of the mean, which says how many classes it covers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import torch


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The AUROC of one class: ``scores`` and 0/1 ``labels`` of the same length (NaN if
    either kind is absent)."""
    scores = scores.double().flatten()
    labels = labels.flatten() > 0.5
    pos = int(labels.sum())
    neg = labels.numel() - pos
    if pos == 0 or neg == 0:
        return math.nan
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    # Average ranks over ties: every run of equal scores gets the mean of its positions.
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    u = float(ranks[labels].sum()) - pos * (pos + 1) / 2
    return u / (pos * neg)


def per_class_auroc(
    scores: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]
) -> dict[str, float]:
    """AUROC of each class. ``scores``: N x C; ``targets``: N x C multi-hot or N indices."""
    if targets.dim() == 1:
        targets = torch.nn.functional.one_hot(targets.long(), len(classes)).float()
    return {c: auroc(scores[:, i], targets[:, i]) for i, c in enumerate(classes)}


def mean_auroc(per_class: dict[str, float]) -> float:
    """The mean over classes that have an AUROC (NaN when none has)."""
    values = [v for v in per_class.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def confusion(
    probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], threshold: float
) -> list[dict[str, Any]]:
    """Per class: TP, FP, TN, FN, precision, recall, specificity at ``threshold``.

    ``probs``: N x C probabilities (sigmoid for multi-label, softmax otherwise);
    for single-label ``targets`` (N indices) a class is predicted when its
    probability is the highest, and ``threshold`` is not used.
    """
    if targets.dim() == 1:
        predicted = torch.nn.functional.one_hot(probs.argmax(1), len(classes)).bool()
        truth = torch.nn.functional.one_hot(targets.long(), len(classes)).bool()
    else:
        predicted = probs >= threshold
        truth = targets > 0.5
    rows = []
    for i, c in enumerate(classes):
        p, t = predicted[:, i], truth[:, i]
        tp, fp = int((p & t).sum()), int((p & ~t).sum())
        fn, tn = int((~p & t).sum()), int((~p & ~t).sum())
        rows.append(
            {
                "class": c,
                "tp": tp,
                "fp": fp,
                "tn": tn,
                "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else math.nan,
                "recall": tp / (tp + fn) if tp + fn else math.nan,
                "specificity": tn / (tn + fp) if tn + fp else math.nan,
            }
        )
    return rows


def confusion_matrix(probs: torch.Tensor, targets: torch.Tensor, n: int) -> list[list[int]]:
    """Single-label: rows are true classes, columns predicted."""
    m = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(targets.long().tolist(), probs.argmax(1).tolist(), strict=True):
        m[t, p] += 1
    return m.tolist()


def auroc_plot(per_class: dict[str, float], title: str) -> bytes:
    """A horizontal bar chart of per-class AUROC as PNG bytes.

    Drawn with matplotlib when it is installed, else with Pillow.
    """
    try:
        import matplotlib
    except ImportError:
        return _plot_pillow(per_class, title)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    values = [0.0 if math.isnan(v) else v for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, values, color="#3b7dd8")
    ax.axvline(0.5, color="#999", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("AUROC")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plot_pillow(per_class: dict[str, float], title: str) -> bytes:
    from PIL import Image, ImageDraw

    row, left, width = 22, 150, 360
    height = 40 + row * len(per_class) + 30
    img = Image.new("RGB", (left + width + 70, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill="black")
    for i, (name, v) in enumerate(per_class.items()):
        y = 40 + i * row
        draw.text((10, y + 4), name[:22], fill="black")
        if not math.isnan(v):
            draw.rectangle((left, y + 3, left + int(width * v), y + row - 3), fill=(59, 125, 216))
        draw.text((left + width + 8, y + 4), "-" if math.isnan(v) else f"{v:.3f}", fill="black")
    half = left + width // 2
    draw.line((half, 36, half, height - 28), fill=(150, 150, 150))
    draw.line((left, height - 26, left + width, height - 26), fill="black")
    for x, label in ((left, "0"), (half, "0.5"), (left + width, "1")):
        draw.text((x - 4, height - 22), label, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
