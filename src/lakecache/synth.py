"""Synthetic chest-X-ray-style datasets: real grayscale PNGs in class folders or NIH's layout.

Used by ``make demo``, ``make bench`` and tests. :func:`generate` writes
``dest/<CLASS>/<00000123>.png``, with class names from the NIH ChestX-ray14
labels, and sizes drawn log-normally around ``median_size``.
:func:`generate_nih` writes the layout of the NIH download itself (image
folders, ``Data_Entry_2017.csv``, the official split lists), with labels that
leave a visible mark in each image, so that training on it can be seen to learn.

Why it is fast without numpy or Pillow: the ribcage-like pattern is drawn
once per image width and cached; each file adds its own noise to it (random
bytes mapped through ``bytes.translate``, added to the pattern as one big
integer, which cannot carry across bytes because pattern + noise <= 255), and
is compressed with zlib's Huffman-only strategy. Every file is unique and
high-entropy, like a real PNG, yet costs only a few milliseconds.

Deterministic: the same ``seed`` and parameters give the same bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

#: NIH ChestX-ray14 labels, most frequent first; ``classes=N`` takes the first N.
CLASS_NAMES: tuple[str, ...] = (
    "No_Finding",
    "Infiltration",
    "Effusion",
    "Atelectasis",
    "Nodule",
    "Mass",
    "Pneumothorax",
    "Consolidation",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Emphysema",
    "Edema",
    "Fibrosis",
    "Pneumonia",
    "Hernia",
)
# Rough shape of the NIH label frequencies, flattened so small classes are not empty.
_CLASS_WEIGHTS = (30, 12, 10, 9, 6, 5, 5, 4, 3, 3, 3, 2, 2, 2, 1)

_BASE = 1024  # side of the master pattern every image is resampled from
_NOISE = 32  # noise amplitude: pixel = pattern (<= 255 - _NOISE) + noise (0.._NOISE-1)
_NOISE_TABLE = bytes((i * _NOISE) >> 8 for i in range(256))
#: Compressed bytes per pixel, measured on this pattern and noise; sizes images.
_BYTES_PER_PIXEL = 0.87
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PARALLEL_MIN_FILES = 1500  # below this, worker start-up costs more than it saves
_BATCH = 400


def generate(
    dest: Path,
    files: int,
    classes: int = 15,
    median_size: int = 90_000,
    sigma: float = 0.6,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
) -> tuple[int, int]:
    """Write ``files`` PNGs under ``dest`` in ``classes`` folders; return (files, bytes).

    Sizes are log-normal with median ``median_size`` and shape ``sigma`` (the
    total is close to ``files * median_size * exp(sigma**2 / 2)``). Existing
    files with the same names are overwritten. Uses ``workers`` processes
    (default: every core) for large counts.
    """
    if files < 0:
        raise ValueError(f"files must be >= 0, not {files}")
    if not 1 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be between 1 and {len(CLASS_NAMES)}, not {classes}")
    dest = Path(dest)
    for name in CLASS_NAMES[:classes]:
        (dest / name).mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(dest), start, min(start + _BATCH, files), classes, median_size, sigma, seed)
        for start in range(0, files, _BATCH)
    ]
    workers = workers or os.cpu_count() or 1
    report = _Progress(files, enabled=progress)
    total_files = total_bytes = 0
    if workers == 1 or files < _PARALLEL_MIN_FILES:
        for job in jobs:
            n, b = _write_range(*job)
            total_files += n
            total_bytes += b
            report.update(total_files, total_bytes)
    else:
        # spawn, not fork: callers (the bench, tests) may have threads running.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for n, b in pool.map(_write_range_star, jobs):
                total_files += n
                total_bytes += b
                report.update(total_files, total_bytes)
    report.done(total_files, total_bytes)
    return total_files, total_bytes


def mutate(
    dest: Path, fraction_changed: float = 0.01, fraction_added: float = 0.01, seed: int = 1
) -> tuple[int, int]:
    """Rewrite a fraction of the PNGs under ``dest`` with new pixels and add new ones.

    Changed files keep their name and roughly their size; new files get the
    next free numbers, in random class folders, with sizes like existing ones.
    Returns (changed, added). Deterministic for a given tree and ``seed``.
    """
    dest = Path(dest)
    existing = sorted(_list_pngs(dest))
    if not existing:
        return 0, 0
    rng = random.Random(f"mutate:{seed}")
    n_changed = min(len(existing), round(len(existing) * fraction_changed))
    n_added = round(len(existing) * fraction_added)
    for path, size in rng.sample(existing, n_changed):
        png = _png_for(f"mutate:{seed}:{os.path.relpath(path, dest)}", size)
        _write_atomic(Path(path), png)
    folders = sorted({os.path.dirname(p) for p, _ in existing})
    next_index = 1 + max((_index_of(p) for p, _ in existing), default=-1)
    for i in range(n_added):
        index = next_index + i
        folder = rng.choice(folders)
        _, size = rng.choice(existing)
        png = _png_for(f"mutate:{seed}:new:{index}", size)
        _write_atomic(Path(folder) / f"{index:08d}.png", png)
    return n_changed, n_added


def expected_bytes(files: int, median_size: int = 90_000, sigma: float = 0.6) -> int:
    """The expected total size of :func:`generate`'s output (mean of the log-normal)."""
    return int(files * median_size * math.exp(sigma * sigma / 2))


# --- one file -------------------------------------------------------------------------


def _write_range_star(job: tuple[str, int, int, int, int, float, int]) -> tuple[int, int]:
    return _write_range(*job)


def _write_range(
    dest: str, start: int, stop: int, classes: int, median_size: int, sigma: float, seed: int
) -> tuple[int, int]:
    names = CLASS_NAMES[:classes]
    weights = _CLASS_WEIGHTS[:classes]
    mu = math.log(max(median_size, 1))
    total = 0
    for index in range(start, stop):
        rng = random.Random(seed * 1_000_003 + index)
        cls = rng.choices(names, weights)[0]
        size = rng.lognormvariate(mu, sigma)
        png = _png(rng, size)
        with open(os.path.join(dest, cls, f"{index:08d}.png"), "wb") as f:
            f.write(png)
        total += len(png)
    return stop - start, total


def _png_for(key: str, size: float) -> bytes:
    return _png(random.Random(key), size)


def _png(rng: random.Random, size: float) -> bytes:
    """A grayscale PNG of about ``size`` bytes: the pattern at a fitting size, plus noise."""
    pixels = max(64.0, (size - 80) / _BYTES_PER_PIXEL)
    width = max(8, int(math.sqrt(pixels * rng.uniform(0.85, 1.15))) // 8 * 8)
    height = max(8, int(pixels / width))
    rows = _pattern(width)
    stride = width + 1  # each row starts with its PNG filter byte (0: none)
    n = height * stride
    pattern_rows = b"".join([rows[y * _BASE // height] for y in range(height)])
    noise = bytearray(rng.randbytes(n).translate(_NOISE_TABLE))
    noise[0::stride] = bytes(height)  # filter bytes stay 0
    raw = (int.from_bytes(pattern_rows, "little") + int.from_bytes(noise, "little")).to_bytes(
        n, "little"
    )
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = comp.compress(raw) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"".join(
        (_PNG_SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(b"IDAT", idat), _chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@lru_cache(maxsize=256)
def _pattern(width: int) -> list[bytes]:
    """The master pattern's rows resampled to ``width`` columns, each led by its filter byte.

    Cached per width (a multiple of 8). Resampling stays in C: repeat each pixel
    ``up`` times with extended-slice assignment, keep every ``down``-th, crop the
    few extra columns from both sides.
    """
    up, down = min(
        ((u, d) for u in range(1, 17) for d in range(1, 33) if _BASE * u // d >= width),
        key=lambda ud: (_BASE * ud[0] // ud[1], ud[0]),
    )
    span = _BASE * up // down
    off = (span - width) // 2
    rows = []
    for src in _master():
        wide = bytearray(_BASE * up)
        for i in range(up):
            wide[i::up] = src
        rows.append(b"\x00" + bytes(wide[::down][off : off + width]))
    return rows


@lru_cache(maxsize=1)
def _master() -> list[bytes]:
    """A _BASE x _BASE chest-radiograph-like picture: body, lungs, ribs, spine, heart."""
    return _draw(_BASE)


def _draw(side: int) -> list[bytes]:
    """The chest picture drawn at ``side`` x ``side`` (a second or so at 1024 px)."""
    top = 255 - _NOISE
    rows: list[bytes] = []
    xs = [2.0 * x / (side - 1) - 1.0 for x in range(side)]
    for y in range(side):
        ny = 2.0 * y / (side - 1) - 1.0
        row = bytearray(side)
        for i, nx in enumerate(xs):
            v = 18.0
            body = nx * nx / 0.8 + ny * ny / 1.3
            if body < 1.0:
                v = 95.0 + 40.0 * (1.0 - body)
                lx = abs(nx) - 0.4
                lung = lx * lx / 0.09 + (ny + 0.05) ** 2 / 0.42
                if lung < 1.0:
                    v -= 55.0 * (1.0 - lung) ** 0.5
                    # ribs: arcs that sag towards the sides
                    phase = (ny + 0.9 * lx * lx + 0.15 * abs(nx)) * 7.0
                    if phase - math.floor(phase) < 0.28:
                        v += 48.0
                if abs(nx) < 0.055 and ny > -0.75:
                    v = 175.0 - 20.0 * abs(nx) / 0.055
                heart = (nx + 0.1) ** 2 / 0.05 + (ny - 0.25) ** 2 / 0.06
                if heart < 1.0:
                    v = max(v, 140.0 - 30.0 * heart)
            row[i] = min(top, max(0, int(v)))
        rows.append(bytes(row))
    return rows


# --- NIH ChestX-ray14 layout ---------------------------------------------------------

#: The 15 labels of NIH ChestX-ray14 as its CSV spells them: 14 findings, then "No Finding".
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
    "No Finding",
)
#: The header of NIH's Data_Entry_2017.csv, with its bracketed names cut by their commas
#: and the empty last column, exactly as the download has it.
NIH_CSV_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
#: Chance of each finding in one image (independent; none of them is "No Finding").
#: Much flatter than NIH's, so that a few hundred images hold every finding often
#: enough to score it; about 1 image in 9 has none.
_NIH_FINDING_P = (0.2, 0.14, 0.14, 0.12, 0.2, 0.12, 0.12, 0.12, 0.24, 0.14, 0.14, 0.12, 0.12, 0.14)
_MARK_SHAPES = 7  # findings 0-6 are bright marks of the 7 shapes, 7-13 dark ones


def generate_nih(
    dest: Path,
    images: int,
    size: int = 1024,
    images_per_folder: int = 10_000,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, int]:
    """Write an NIH ChestX-ray14-style dataset under ``dest``; return counts.

    The layout is NIH's own: ``images_001/images/00000001_000.png`` (patient,
    follow-up), ``Data_Entry_2017.csv`` (``Finding Labels`` joined by ``|``,
    "No Finding" when there is none), ``train_val_list.txt`` and
    ``test_list.txt`` (split by patient). Images are ``size`` x ``size``
    grayscale PNGs; each finding leaves its own mark (one of 7 shapes, bright
    for the first 7 findings and dark for the others, at a random place), so
    a classifier can learn the labels from the pixels. Deterministic for a
    ``seed``. Returns ``{"images", "patients", "bytes"}``.
    """
    if images < 1:
        raise ValueError(f"images must be 1 or more, not {images}")
    if size < 16:
        raise ValueError(f"size must be 16 or more pixels, not {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction}")
    dest = Path(dest)
    rng = random.Random(f"nih:{seed}")
    width = max(16, size // 8 * 8)
    rows = [NIH_CSV_HEADER]
    by_patient: dict[int, list[str]] = {}
    patient = 0
    total = 0
    index = 0
    while index < images:
        patient += 1
        age, sex = rng.randint(18, 85), rng.choice("MF")
        for follow_up in range(min(rng.choice((1, 1, 1, 2, 2, 3, 4)), images - index)):
            name = f"{patient:08d}_{follow_up:03d}.png"
            findings = [k for k, p in enumerate(_NIH_FINDING_P) if rng.random() < p]
            del findings[nih_marks_fit(width) :]  # a finding without its mark would lie
            labels = "|".join(NIH_LABELS[k] for k in findings) or "No Finding"
            folder = dest / f"images_{index // images_per_folder + 1:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            png = _nih_png(random.Random(f"nih:{seed}:{name}"), width, findings)
            (folder / name).write_bytes(png)
            total += len(png)
            view = rng.choice(("PA", "PA", "AP"))
            rows.append(
                f"{name},{labels},{follow_up},{patient},{age + follow_up},{sex},{view},"
                f"{width},{width},0.143,0.143,"
            )
            by_patient.setdefault(patient, []).append(name)
            index += 1
    patients = sorted(by_patient)
    random.Random(f"nih-split:{seed}").shuffle(patients)
    n_test = round(len(patients) * test_fraction)
    test = set(patients[:n_test])
    train_val = sorted(n for p in patients if p not in test for n in by_patient[p])
    test_names = sorted(n for p in test for n in by_patient[p])
    (dest / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (dest / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train_val))
    (dest / "test_list.txt").write_text("".join(f"{n}\n" for n in test_names))
    return {"images": images, "patients": len(patients), "bytes": total}


def _nih_png(rng: random.Random, width: int, findings: list[int]) -> bytes:
    """A ``width`` x ``width`` grayscale radiograph with one mark per finding."""
    stride = width + 1
    n = width * stride
    pattern_rows = b"".join(_nih_rows(width))
    noise = bytearray(rng.randbytes(n).translate(_NOISE_TABLE))
    noise[0::stride] = bytes(width)
    raw = bytearray(
        (int.from_bytes(pattern_rows, "little") + int.from_bytes(noise, "little")).to_bytes(
            n, "little"
        )
    )
    # Marks sit in distinct cells of a grid over the middle of the chest, at multiples
    # of 4 pixels: the stride of a ResNet's stem, so a shape looks the same to it
    # wherever it is (and small images can be learnt from in a few epochs).
    mark, side, cell, origin = _mark_grid(width)
    cells = rng.sample(range(side * side), len(findings))
    for finding, where in zip(findings, cells, strict=True):
        slack = (cell - mark) // 4
        x0 = origin + (where % side) * cell + 4 * rng.randint(0, slack)
        y0 = origin + (where // side) * cell + 4 * rng.randint(0, slack)
        value = 250 if finding < _MARK_SHAPES else 4
        for dy, dx in _mark_pixels(finding % _MARK_SHAPES, mark):
            raw[(y0 + dy) * stride + 1 + x0 + dx] = value
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = comp.compress(bytes(raw)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, width, 8, 0, 0, 0, 0)
    return b"".join(
        (_PNG_SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(b"IDAT", idat), _chunk(b"IEND", b""))
    )


def _mark_grid(width: int) -> tuple[int, int, int, int]:
    """(mark side, grid side, cell side, grid origin) for images ``width`` pixels wide."""
    mark = max(5, width // 5)
    side = 4 if width >= 64 else 3
    while True:
        cell = -(-max(mark, width * 3 // 4 // side) // 4) * 4  # rounded up to a multiple of 4
        if side == 1 or side * cell <= width:
            break
        side -= 1
    origin = max(0, (width - side * cell) // 2) // 4 * 4
    return mark, side, cell, origin


def nih_marks_fit(width: int) -> int:
    """How many findings one image of ``width`` pixels can show (one grid cell each)."""
    return _mark_grid(width)[1] ** 2


@lru_cache(maxsize=16)
def _nih_rows(width: int) -> list[bytes]:
    """The picture's ``width`` rows, each led by its filter byte; small sizes drawn directly
    (drawing the 1024 px master would cost more than a small dataset)."""
    if width >= _BASE // 2:
        rows = _pattern(width)
        return [rows[y * _BASE // width] for y in range(width)]
    return [b"\x00" + row for row in _draw(width)]


@lru_cache(maxsize=64)
def _mark_pixels(shape: int, m: int) -> tuple[tuple[int, int], ...]:
    """The (dy, dx) pixels of mark ``shape`` in an ``m`` x ``m`` box."""
    third = max(1, m // 3)
    lo, hi = (m - third) // 2, (m - third) // 2 + third
    tests = (
        lambda y, x: True,  # filled square
        lambda y, x: lo <= y < hi,  # horizontal bar
        lambda y, x: lo <= x < hi,  # vertical bar
        lambda y, x: lo <= y < hi or lo <= x < hi,  # plus
        lambda y, x: abs(y - x) <= 1 or abs(y + x - m + 1) <= 1,  # X
        lambda y, x: min(y, x, m - 1 - y, m - 1 - x) < 2,  # ring
        lambda y, x: (y // 2 + x // 2) % 2 == 0,  # checkerboard
    )
    return tuple((y, x) for y in range(m) for x in range(m) if tests[shape](y, x))


# --- helpers --------------------------------------------------------------------------


def _list_pngs(dest: Path) -> Iterator[tuple[str, int]]:
    for entry in os.scandir(dest):
        if entry.is_dir():
            for f in os.scandir(entry.path):
                if f.is_file() and f.name.endswith(".png"):
                    yield f.path, f.stat().st_size


def _index_of(path: str) -> int:
    stem = os.path.basename(path)[:-4]
    return int(stem) if stem.isdigit() else -1


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0
        # A terminal gets one line rewritten in place; a log gets a line every few seconds.
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else 10.0

    def update(self, files: int, nbytes: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            rate = nbytes / max(now - self.start, 1e-9) / 1e6
            print(
                f"\r  generated {files:,}/{self.total:,} files, {nbytes / 1e6:,.0f} MB"
                f" ({rate:,.0f} MB/s)",
                end="" if self.tty else "\n",
                file=sys.stderr,
                flush=True,
            )

    def done(self, files: int, nbytes: int) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.start
            print(
                f"\r  generated {files:,} files, {nbytes / 1e6:,.0f} MB in {elapsed:.1f} s"
                + (" " * 20 if self.tty else ""),
                file=sys.stderr,
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m lakecache.synth DEST --files N``: write a synthetic dataset."""
    p = argparse.ArgumentParser(prog="python -m lakecache.synth", description=main.__doc__)
    p.add_argument("dest", type=Path)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--classes", type=int, default=15)
    p.add_argument("--median-size", type=int, default=90_000)
    p.add_argument("--sigma", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--mutate", action="store_true", help="change 1%% and add 1%% to an existing dataset"
    )
    p.add_argument(
        "--nih",
        action="store_true",
        help="write NIH ChestX-ray14's layout (images_NNN/images, Data_Entry_2017.csv, "
        "split lists) with --files images of --size pixels",
    )
    p.add_argument("--size", type=int, default=1024, help="image side with --nih")
    args = p.parse_args(argv)
    if args.nih:
        counts = generate_nih(args.dest, args.files, size=args.size, seed=args.seed)
        print(
            f"{counts['images']} images of {counts['patients']} patients, "
            f"{counts['bytes']:,} bytes in {args.dest}"
        )
        return 0
    if args.mutate:
        changed, added = mutate(args.dest, seed=args.seed)
        print(f"changed {changed} files, added {added}")
        return 0
    n, b = generate(
        args.dest,
        args.files,
        classes=args.classes,
        median_size=args.median_size,
        sigma=args.sigma,
        seed=args.seed,
        progress=True,
        workers=args.workers,
    )
    print(f"{n} files, {b:,} bytes in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
