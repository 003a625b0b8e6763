"""``pick-best``: choose the best of several training (or evaluation) outputs by a metric.

Each candidate is a folder holding ``metrics.json`` (what ``image-classifier
train`` and ``evaluate`` write). In a flow, the downstream task of a
fanned-out task is told the folders of every instance through
``$LAKECACHE_UPSTREAM_<NAME>`` (the names of the input variables) and their
params through ``$LAKECACHE_UPSTREAM_<NAME>_PARAMS``; ``--upstream NAME``
reads both. Writes ``best.json`` (the winner, its params and every
candidate's figure) and copies the winner's ``model.pt`` when it has one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lakecache.errors import UserError
from lakecache.library import cli as libcli


def _metric(folder: Path, metric: str) -> float:
    for candidate in (folder / "metrics.json", *sorted(folder.glob("*/metrics.json"))):
        if candidate.is_file():
            value = json.loads(candidate.read_text()).get(metric)
            if isinstance(value, int | float):
                return float(value)
            raise UserError(
                f"{candidate} has no number {metric!r}",
                hint="Name a metric it holds with --metric (e.g. mean_auroc).",
            )
    raise UserError(
        f"{folder} holds no metrics.json",
        hint="Pass the output folders of `image-classifier train` or `evaluate`.",
    )


def _model_of(folder: Path) -> Path | None:
    for candidate in (folder / "model.pt", *sorted(folder.glob("*/model.pt"))):
        if candidate.is_file():
            return candidate
    return None


def pick_best(
    folders: Sequence[Path],
    out: Path,
    *,
    metric: str = "mean_auroc",
    lower_is_better: bool = False,
    params: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Pick the folder with the best ``metric``; write ``best.json`` (and ``model.pt``) to ``out``.

    A candidate whose metric is NaN never wins. Raises UserError when no
    folder is given, one has no such metric, or none has a number.
    """
    if not folders:
        raise UserError("no candidates to pick from", hint="Pass the folders to compare.")
    figures = [_metric(Path(f), metric) for f in folders]
    candidates: list[dict[str, Any]] = [
        {"folder": str(f), metric: v, "params": (params[i] if params and i < len(params) else {})}
        for i, (f, v) in enumerate(zip(folders, figures, strict=True))
    ]
    scored = [i for i, v in enumerate(figures) if not math.isnan(v)]
    if not scored:
        raise UserError(f"no candidate has a {metric}", hint="Check that the trainings finished.")
    winner = (min if lower_is_better else max)(scored, key=lambda i: figures[i])
    best = candidates[winner]
    out.mkdir(parents=True, exist_ok=True)
    model = _model_of(Path(folders[winner]))
    if model is not None:
        shutil.copyfile(model, out / ".model.pt.tmp")
        os.replace(out / ".model.pt.tmp", out / "model.pt")
    summary = {"metric": metric, "best": best, "candidates": candidates}
    libcli.write_atomic(out / "best.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _from_upstream(name: str) -> tuple[list[Path], list[dict[str, Any]]]:
    env_name = "".join(c if c.isalnum() else "_" for c in name.upper())
    variables = os.environ.get(f"LAKECACHE_UPSTREAM_{env_name}", "").split()
    if not variables:
        raise UserError(
            f"$LAKECACHE_UPSTREAM_{env_name} is not set or empty",
            hint=f"Run this as a flow task with an input {name}: {{task: ...}}, or pass folders.",
        )
    folders = [Path(os.environ[v]) for v in variables if v in os.environ]
    params = json.loads(os.environ.get(f"LAKECACHE_UPSTREAM_{env_name}_PARAMS", "[]"))
    return folders, params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lakecache lib pick-best",
        description="Choose the best of several training or evaluation output folders by a "
        "metric of their metrics.json; writes best.json and the winner's model.pt into --out.",
    )
    p.add_argument("folders", nargs="*", type=Path, help="candidate output folders")
    p.add_argument(
        "--upstream",
        default=None,
        metavar="NAME",
        help="in a flow task: take the folders of the input NAME of a fanned-out task",
    )
    p.add_argument(
        "--metric", default="mean_auroc", help="key in metrics.json (default mean_auroc)"
    )
    p.add_argument("--lower-is-better", action="store_true", help="for losses")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lakecache.library.pick_best``: see ``--help``."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        folders, params = list(args.folders), None
        if args.upstream:
            up, params = _from_upstream(args.upstream)
            folders += up
        out = libcli.output_folder(args.out)
        summary = pick_best(
            folders, out, metric=args.metric, lower_is_better=args.lower_is_better, params=params
        )
        libcli.table(
            ["candidate", args.metric, "params"],
            [[c["folder"], c[args.metric], json.dumps(c["params"])] for c in summary["candidates"]],
        )
        print(
            f"best: {summary['best']['folder']} ({args.metric} {summary['best'][args.metric]:.4f})"
        )

    return libcli.run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
