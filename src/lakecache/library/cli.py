"""What every component's command line shares, and ``lakecache lib``.

Each component is a module with ``main(argv)`` (argparse, ``--help``), run
as ``python -m lakecache.library.<module>`` or ``lakecache lib <component>``.
Outputs go to ``--out`` (default: ``$LAKECACHE_OUTPUTS`` inside a job or
flow task, where the runner collects them, else ``./outputs``).
Errors print as ``error:`` and ``hint:`` lines, exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from lakecache.errors import LakecacheError

#: component name -> module under lakecache.library.
COMPONENTS = {
    "split": "split",
    "prepare": "prepare",
    "image-classifier": "image_classifier",
    "pick-best": "pick_best",
}


#: Settings of the scenario per profile: ``small`` runs in minutes on a CPU, ``full`` is
#: the seed's setting for a GPU site. Flags given explicitly win over a profile.
PROFILES: dict[str, dict[str, dict[str, object]]] = {
    "small": {
        "prepare": {"size": 40, "format": "u8"},
        "train": {"arch": "resnet18", "image_size": 32, "batch_size": 32, "epochs": 4},
    },
    "full": {
        "prepare": {"size": 256, "format": "u8"},
        "train": {"arch": "resnet50", "image_size": 224, "batch_size": 128, "epochs": 10},
    },
}


def add_profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=None,
        help="defaults for the scenario: small (minutes on a CPU) or full (the GPU setting); "
        "flags given explicitly win",
    )


def apply_profile(args: argparse.Namespace, component: str, defaults: dict[str, object]) -> None:
    """Fill the settings left unset (None) from ``--profile``, else from ``defaults``."""
    chosen = PROFILES[args.profile][component] if getattr(args, "profile", None) else {}
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, chosen.get(key, default))


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all: a temp name in the same folder, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $LAKECACHE_OUTPUTS in a job or flow task, else ./outputs)",
    )
    p.add_argument(
        "--commit",
        metavar="DATASET",
        default=None,
        help="also commit the output folder as a new version of DATASET (created if missing)",
    )


def add_missing_label_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-missing-label",
        choices=("error", "skip"),
        default="error",
        help="an image the labels CSV does not name: stop with an error (default) or leave it out",
    )


def output_folder(out: Path | None) -> Path:
    """``out``, or the job's outputs, or ./outputs; made if missing."""
    folder = out or Path(os.environ.get("LAKECACHE_OUTPUTS") or "outputs")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def maybe_commit(args: argparse.Namespace, folder: Path, message: str) -> str | None:
    """Commit ``folder`` as a version of ``args.commit`` when given; the commit id."""
    if not args.commit:
        return None
    from lakecache.data.dataset import Dataset

    ds = Dataset.create(args.commit, exist_ok=True)
    commit = ds.commit(folder, message)
    print(f"committed {folder} as {args.commit}@{commit.id[:12]}")
    return commit.id


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a plain aligned table (numbers right-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row, raw in zip(cells, rows, strict=True):
        print(
            "  ".join(
                c.rjust(w) if isinstance(v, int | float) else c.ljust(w)
                for c, w, v in zip(row, widths, raw, strict=True)
            ).rstrip()
        )


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.4f}"
    return str(v)


def run_main(body: Callable[[], None]) -> int:
    """Run a command's body; lakecache errors become 'error:'/'hint:' lines and status 1."""
    try:
        body()
    except LakecacheError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def dispatch(argv: Sequence[str]) -> int:
    """``lakecache lib COMPONENT ARGS...`` and ``python -m lakecache.library COMPONENT ...``."""
    import importlib

    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0
    name, rest = argv[0], list(argv[1:])
    module = COMPONENTS.get(name)
    if module is None:
        print(f"error: no component {name!r}", file=sys.stderr)
        print(f"hint: choose one of {', '.join(COMPONENTS)}", file=sys.stderr)
        return 2
    main: Callable[[list[str]], int] = importlib.import_module(f"lakecache.library.{module}").main
    return main(rest)


def _overview() -> str:
    return (
        "usage: lakecache lib COMPONENT [ARGS...]\n\n"
        "The AI library's components; each reads a folder or a commit (DATASET@REF) and\n"
        "writes an output folder. COMPONENT --help explains each.\n\n"
        "  split             train/val/test lists by patient, seeded\n"
        "  prepare           resized images (or raw uint8 tensors) with their labels:\n"
        "                    a derived commit every training then reads\n"
        "  image-classifier  train | evaluate a ResNet (18/34/50/101), multi- or single-label\n"
        "  pick-best         choose the best of several training outputs by a metric\n"
    )


@click.command(
    "lib",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lib(args: tuple[str, ...]) -> None:
    """The AI library's components: split, prepare, image-classifier, pick-best."""
    rc = dispatch(list(args))
    if rc:
        raise SystemExit(rc)
