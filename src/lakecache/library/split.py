"""``split``: train / validation / test lists by patient, seeded, as files of an output folder.

No patient is in two splits: images of one patient are alike, and a model
scored on a patient it trained on looks better than it is. When the source
carries NIH's official ``test_list.txt``, it is the test split as it is (so
figures compare with published ones) and validation is drawn from
``train_val_list.txt``; otherwise all three are drawn. Each list holds one
sample key a line (an image's file name for NIH, ``CLASS/NAME`` for class
folders), sorted; ``split.json`` says how they were made.

Run it as ``lakecache lib split DATA --out FOLDER`` or
``python -m lakecache.library.split``; commit the folder as a dataset
(``--commit NAME``, or a flow task's ``outputs: {dataset: NAME}``).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.errors import UserError
from lakecache.library import cli as libcli
from lakecache.library.layout import ImageTable, OnMissing, Sample, read_table
from lakecache.library.source import Source, open_source

if TYPE_CHECKING:
    from lakecache.settings import Settings

SPLITS = ("train", "val", "test")
OFFICIAL_TEST = "test_list.txt"
OFFICIAL_TRAIN_VAL = "train_val_list.txt"


@dataclass(frozen=True)
class SplitResult:
    """Keys per split, and how they were made."""

    keys: dict[str, list[str]]
    info: dict[str, Any]


def split_samples(
    table: ImageTable,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    official_test: list[str] | None = None,
) -> SplitResult:
    """Split ``table``'s samples by patient: a pure function of its arguments.

    ``official_test``: keys of a given test split (NIH's list); the patients
    in it go to test whole, and validation is drawn from the others at the
    fraction ``val / (1 - test)`` of what is left, so ``val`` keeps meaning a
    share of the whole.

    Raises:
        UserError: fractions outside [0, 1) or adding up to 1 or more, or a split
            that would be empty.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise UserError(
            f"val ({val}) and test ({test}) must be fractions in [0, 1) adding up to under 1",
            hint="For example --val 0.1 --test 0.2.",
        )
    patients: dict[str, list[Sample]] = {}
    for s in table.samples:
        patients.setdefault(s.patient, []).append(s)
    order = sorted(patients)
    rng = random.Random(f"split:{seed}")
    rng.shuffle(order)
    assigned: dict[str, str] = {}
    if official_test is not None:
        by_key = table.by_key()
        for key in official_test:
            found = by_key.get(key)
            if found is not None:
                assigned[found.patient] = "test"
        rest = [p for p in order if p not in assigned]
        n_val = round(len(rest) * (val / (1 - test) if test < 1 else 0))
        for p in rest[:n_val]:
            assigned[p] = "val"
        for p in rest[n_val:]:
            assigned[p] = "train"
    else:
        n_test = round(len(order) * test)
        n_val = round(len(order) * val)
        for i, p in enumerate(order):
            assigned[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    keys: dict[str, list[str]] = {name: [] for name in SPLITS}
    for p, samples in patients.items():
        keys[assigned[p]].extend(s.key for s in samples)
    for name in SPLITS:
        keys[name].sort()
    wanted = {"train": True, "val": val > 0, "test": test > 0 or bool(official_test)}
    empty = [n for n in SPLITS if wanted[n] and not keys[n]]
    if empty:
        raise UserError(
            f"the {' and '.join(empty)} split(s) would be empty: {len(patients)} patient(s) "
            f"in {len(table.samples)} image(s) are too few for val={val}, test={test}",
            hint="Use more images, or set that fraction to 0.",
        )
    info = {
        "seed": seed,
        "val": val,
        "test": test,
        "by": "patient",
        "official_test": official_test is not None,
        "layout": table.layout,
        "classes": table.classes,
        "images": {n: len(keys[n]) for n in SPLITS},
        "patients": {n: sum(1 for v in assigned.values() if v == n) for n in SPLITS},
    }
    return SplitResult(keys, info)


def split(
    data: str | Path | Source,
    out: str | Path,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    use_official_test: bool = True,
    on_missing_label: OnMissing = "error",
    settings: Settings | None = None,
) -> SplitResult:
    """Split the images of ``data`` by patient and write ``train.txt``, ``val.txt``,
    ``test.txt`` and ``split.json`` into ``out``.

    Args:
        data: a folder, ``DATASET@REF``, or an open :class:`Source`.
        out: the output folder (made if missing; the lists in it are replaced).
        val, test: shares of the patients for validation and test.
        seed: the same seed and data give the same lists.
        use_official_test: take NIH's ``test_list.txt`` as the test split when present.
        on_missing_label: ``"skip"`` leaves out images the labels do not name.
        settings: the lake and catalog of a commit (default: from the environment).

    Returns:
        The keys per split and the contents of ``split.json``.

    Raises:
        UserError: bad fractions, a split that would be empty, labels that do not
            fit (see :func:`lakecache.library.layout.read_table`).

    Example:
        >>> split("xray@v1", "outputs/split", seed=1)  # doctest: +SKIP
    """
    source = data if isinstance(data, Source) else open_source(data, settings=settings)
    try:
        table = read_table(source, on_missing_label=on_missing_label)
        official = None
        test_list = _find(source, OFFICIAL_TEST)
        if use_official_test and table.layout == "nih" and test_list is not None:
            official = _read_list(source.read(test_list)) or None
        result = split_samples(table, val=val, test=test, seed=seed, official_test=official)
        result.info["source"] = {"label": source.label, "commit": source.commit_id}
    finally:
        if not isinstance(data, Source):
            source.close()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        libcli.write_atomic(folder / f"{name}.txt", "".join(f"{k}\n" for k in result.keys[name]))
    libcli.write_atomic(folder / "split.json", json.dumps(result.info, indent=2) + "\n")
    return result


def read_split(source: Source) -> dict[str, list[str]]:
    """The key lists of a split folder or commit (``train.txt``, ``val.txt``, ``test.txt``).

    Raises UserError when it has none of them.
    """
    out = {}
    for name in SPLITS:
        path = _find(source, f"{name}.txt")
        if path is not None:
            out[name] = _read_list(source.read(path))
    if not out:
        raise UserError(
            f"{source.label} holds no split list (train.txt, val.txt, test.txt)",
            hint="Make one with `lakecache lib split DATA --out FOLDER`.",
        )
    return out


def _find(source: Source, name: str) -> str | None:
    for candidate in (name, *(p for p, _ in source.files() if p.endswith("/" + name))):
        if source.exists(candidate) and candidate.count("/") <= 1:
            return candidate
    return None


def _read_list(data: bytes) -> list[str]:
    return [line.strip() for line in data.decode("utf-8-sig").splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lakecache lib split",
        description="Split a dataset's images into train/val/test lists by patient (no patient "
        "in two splits), seeded. Reads NIH ChestX-ray14's layout, class folders, or a prepared "
        "commit; writes train.txt, val.txt, test.txt and split.json into --out.",
    )
    p.add_argument("data", help="a folder, or a commit: DATASET@REF (e.g. xray@v1)")
    libcli.add_output_args(p)
    p.add_argument("--val", type=float, default=0.1, help="share of patients for validation")
    p.add_argument("--test", type=float, default=0.2, help="share of patients for test")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same lists")
    p.add_argument(
        "--no-official-test",
        action="store_true",
        help="draw the test split too, even when NIH's test_list.txt is there",
    )
    libcli.add_missing_label_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lakecache.library.split``: see ``--help``."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        out = libcli.output_folder(args.out)
        result = split(
            args.data,
            out,
            val=args.val,
            test=args.test,
            seed=args.seed,
            use_official_test=not args.no_official_test,
            on_missing_label=args.on_missing_label,
        )
        libcli.table(
            ["split", "images", "patients"],
            [[n, result.info["images"][n], result.info["patients"][n]] for n in SPLITS],
        )
        print(f"wrote {out}/train.txt, val.txt, test.txt, split.json")
        libcli.maybe_commit(args, out, f"split of {result.info['source']['label']}")

    return libcli.run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
