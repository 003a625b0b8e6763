"""``prepare``: a derived dataset of small images every later training reads.

Decoding a 1024 px PNG costs more than training a step on it wants to
spend; a prepared commit holds each image once more, grayscale, resized to
``size`` x ``size`` (shorter side scaled, then centred crop), as a PNG or
as raw ``uint8`` bytes (``.u8``: ``size * size`` bytes, no decoding at all),
beside ``labels.csv`` (key, path, patient, labels) and ``prepare.json``
(classes, format, size, and the source it came from).

Content addressing. The output of a commit source is a pure function of
the source commit and the parameters; their BLAKE3 is the preparation's
*key*. With ``--commit NAME`` the result is committed and tagged
``prep-<key>``, and a later run with the same key finds the tag and does no
work. Blobs are content-addressed in the lake anyway, so a preparation
that gives the same bytes costs no upload. Lineage: ``prepare.json`` and
the commit message name the source commit; as a flow task with
``outputs: {dataset: NAME}``, the flow records source -> run -> prepared.

Interruption: images are written first and ``labels.csv`` and
``prepare.json`` last, each atomically, so a folder cut off half-way is not
taken for a prepared one.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import blake3

from lakecache.errors import UserError
from lakecache.library import cli as libcli
from lakecache.library.layout import (
    PREPARED_LABELS,
    PREPARED_META,
    ImageTable,
    OnMissing,
    Sample,
    read_table,
)
from lakecache.library.source import Source, open_source

if TYPE_CHECKING:
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.library.prepare")

Format = Literal["png", "u8"]
OnCorrupt = Literal["skip", "fail"]
#: Bumped when the output of the same inputs would change: old keys must not match.
PREPARE_VERSION = 1
FORMATS = ("png", "u8")


class CorruptImageError(UserError):
    """An image of the source could not be decoded."""

    default_hint = (
        "Fix or remove the file and commit again, or pass --on-corrupt skip "
        "(on_corrupt='skip') to leave such files out; they are counted."
    )


@dataclass(frozen=True)
class PrepareResult:
    """What a preparation wrote: its key, counts and ``prepare.json``."""

    key: str
    images: int
    skipped: int
    meta: dict[str, Any]
    seconds: float


def preparation_key(commit_id: str, params: dict[str, Any]) -> str:
    """The BLAKE3 of a source commit and parameters: equal keys, equal outputs."""
    text = json.dumps(
        {"commit": commit_id, "params": params, "version": PREPARE_VERSION}, sort_keys=True
    )
    return blake3.blake3(text.encode()).hexdigest()


def to_gray_square(data: bytes, size: int) -> Any:
    """Decode an image and make it a ``size`` x ``size`` grayscale ``PIL.Image``.

    The shorter side is scaled to ``size`` and the longer centred and cropped.
    Raises whatever Pillow raises for a damaged file.
    """
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        gray = img.convert("L")
    if gray.size != (size, size):
        gray = ImageOps.fit(gray, (size, size), Image.Resampling.BILINEAR)
    return gray


def prepare(
    data: str | Path | Source,
    out: str | Path,
    *,
    size: int = 256,
    fmt: Format = "png",
    on_corrupt: OnCorrupt = "skip",
    on_missing_label: OnMissing = "error",
    workers: int = 2,
    settings: Settings | None = None,
) -> PrepareResult:
    """Write the resized images of ``data`` with their labels into ``out``.

    Args:
        data: a folder, ``DATASET@REF``, or an open :class:`Source`.
        out: the output folder; a previous preparation in it is replaced.
        size: the side of the square output images, in pixels.
        fmt: ``"png"`` or ``"u8"`` (raw bytes, ``size * size`` per image).
        on_corrupt: ``"skip"``: an image that cannot be decoded is left out and
            counted (``skipped``); ``"fail"``: :class:`CorruptImageError`.
        on_missing_label: as for :func:`lakecache.library.layout.read_table`.
        workers: threads decoding and resizing (Pillow releases the GIL).
        settings: the lake and catalog of a commit (default: from the environment).

    Returns:
        The key, counts and the ``prepare.json`` written.

    Raises:
        UserError: bad parameters, an output folder holding other files,
            labels that do not fit, a corrupt image with ``on_corrupt="fail"``.
    """
    if fmt not in FORMATS:
        raise UserError(f"format must be png or u8, not {fmt!r}", hint="For example --format u8.")
    if not 8 <= size <= 4096:
        raise UserError(
            f"size must be 8 to 4096 pixels, not {size}", hint="For example --size 256."
        )
    if on_corrupt not in ("skip", "fail"):
        raise UserError(
            f"on_corrupt must be skip or fail, not {on_corrupt!r}",
            hint="'skip' leaves undecodable images out and counts them; 'fail' stops.",
        )
    t0 = time.perf_counter()
    folder = Path(out)
    images_dir = _fresh_images_dir(folder)
    source = data if isinstance(data, Source) else open_source(data, settings=settings)
    try:
        table = read_table(source, on_missing_label=on_missing_label)
        params = {"size": size, "format": fmt, "channels": 1}
        key = preparation_key(source.commit_id or "", params) if source.commit_id else ""
        written: list[tuple[Sample, str]] = []
        skipped: list[str] = []
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for sample, path, error in pool.map(
                lambda s: _one(source, s, images_dir, size, fmt), table.samples
            ):
                if error is None:
                    written.append((sample, path))
                    continue
                if on_corrupt == "fail":
                    raise CorruptImageError(f"{source.label}: {sample.path} {error}")
                log.warning("skipped %s: %s", sample.path, error)
                skipped.append(sample.path)
        meta = _meta(table, source, params, key, len(written), skipped)
    finally:
        if not isinstance(data, Source):
            source.close()
    if not written:
        raise CorruptImageError(f"none of the {len(table.samples)} images could be decoded")
    rows = ["key,path,patient,labels"]
    for sample, path in written:
        labels = "|".join(table.classes[i] for i in sample.labels)
        rows.append(_csv_row(sample.key, path, sample.patient, labels))
    libcli.write_atomic(folder / PREPARED_LABELS, "\n".join(rows) + "\n")
    libcli.write_atomic(folder / PREPARED_META, json.dumps(meta, indent=2) + "\n")
    return PrepareResult(key, len(written), len(skipped), meta, time.perf_counter() - t0)


def _fresh_images_dir(folder: Path) -> Path:
    images = folder / "images"
    if images.exists():
        if not (folder / PREPARED_META).exists() and any(images.iterdir()):
            raise UserError(
                f"{images} already holds files that no preparation wrote",
                hint="Choose an empty --out folder.",
            )
        shutil.rmtree(images)
        for name in (PREPARED_META, PREPARED_LABELS):
            (folder / name).unlink(missing_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    return images


def _one(
    source: Source, sample: Sample, images_dir: Path, size: int, fmt: Format
) -> tuple[Sample, str, str | None]:
    """Prepare one image; (sample, output path, None) or (sample, "", why it failed)."""
    try:
        gray = to_gray_square(source.read(sample.path), size)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for damaged files
        return sample, "", f"could not be decoded ({exc})"
    rel = sample.key if fmt == "png" else sample.key.rsplit(".", 1)[0] + ".u8"
    if fmt == "png" and not rel.lower().endswith(".png"):
        rel = rel.rsplit(".", 1)[0] + ".png"
    target = images_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        buf = io.BytesIO()
        gray.save(buf, format="PNG", compress_level=3)
        target.write_bytes(buf.getvalue())
    else:
        target.write_bytes(gray.tobytes())
    return sample, f"images/{rel}", None


def _meta(
    table: ImageTable,
    source: Source,
    params: dict[str, Any],
    key: str,
    images: int,
    skipped: list[str],
) -> dict[str, Any]:
    return {
        "format": params["format"],
        "size": params["size"],
        "channels": params["channels"],
        "classes": table.classes,
        "multi_label": table.multi_label,
        "layout": table.layout,
        "images": images,
        "skipped_corrupt": len(skipped),
        "skipped_examples": skipped[:20],
        "unlabelled_left_out": table.unlabelled,
        "key": key,
        "version": PREPARE_VERSION,
        "source": {
            "label": source.label,
            "commit": source.commit_id,
            "ref": source.ref,
            "read_from": source.how,
        },
    }


def _csv_row(*cells: str) -> str:
    return ",".join(f'"{c}"' if ("," in c or '"' in c) else c for c in cells)


def find_prepared(dataset: str, key: str) -> str | None:
    """The commit of ``dataset`` tagged for preparation ``key``, if one was made."""
    from lakecache.data.dataset import Dataset
    from lakecache.errors import NotFoundError

    try:
        return Dataset(dataset).resolve(tag_for(key))
    except NotFoundError:
        return None


def tag_for(key: str) -> str:
    return f"prep-{key[:16]}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lakecache lib prepare",
        description="Resize a dataset's images once (grayscale, square) into PNG or raw uint8 "
        "files with their labels: a derived dataset every training then reads. Reads NIH "
        "ChestX-ray14's layout or class folders, from a folder or a commit.",
    )
    p.add_argument("data", help="a folder, or a commit: DATASET@REF (e.g. xray@v1)")
    libcli.add_output_args(p)
    p.add_argument("--size", type=int, default=None, help="output side in pixels (default 256)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="png (default: small) or u8 (raw bytes: nothing to decode when training)",
    )
    libcli.add_profile_arg(p)
    p.add_argument(
        "--on-corrupt",
        choices=("skip", "fail"),
        default="skip",
        help="an image that cannot be decoded: leave it out and count it, or stop",
    )
    p.add_argument("--workers", type=int, default=2, help="threads resizing (default 2)")
    libcli.add_missing_label_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lakecache.library.prepare``: see ``--help``."""
    args = build_parser().parse_args(argv)
    libcli.apply_profile(args, "prepare", {"size": 256, "format": "png"})

    def run() -> None:
        out = libcli.output_folder(args.out)
        if args.commit and "@" in args.data:
            existing = _already_prepared(args)
            if existing is not None:
                print(f"already prepared: {args.commit}@{existing[:12]} (nothing to do)")
                return
        result = prepare(
            args.data,
            out,
            size=args.size,
            fmt=args.format,
            on_corrupt=args.on_corrupt,
            on_missing_label=args.on_missing_label,
            workers=args.workers,
        )
        rate = result.images / max(result.seconds, 1e-9)
        print(
            f"prepared {result.images} images ({args.size} px, {args.format}) in "
            f"{result.seconds:.1f} s, {rate:,.0f} images/s; skipped {result.skipped} corrupt"
        )
        src = result.meta["source"]
        message = f"prepared from {src['label']} ({args.size} px {args.format})"
        if src["commit"]:
            message += f"; source commit {src['commit']}"
        commit_id = libcli.maybe_commit(args, out, message)
        if commit_id and result.key:
            from lakecache.data.dataset import Dataset

            Dataset(args.commit).tag(tag_for(result.key), commit_id, force=True)

    return libcli.run_main(run)


def _already_prepared(args: argparse.Namespace) -> str | None:
    from lakecache.data.dataset import Dataset
    from lakecache.errors import NotFoundError
    from lakecache.library.source import SCHEME

    name, _, ref = str(args.data).removeprefix(SCHEME).partition("@")
    try:
        commit_id = Dataset(name).resolve(ref)
    except NotFoundError:
        return None
    params = {"size": args.size, "format": args.format, "channels": 1}
    return find_prepared(args.commit, preparation_key(commit_id, params))
