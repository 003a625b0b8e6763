"""Third-party browser code the dashboard serves: fetched at install time, never committed.

The tracking pages draw their plots with uPlot (MIT licence, no ``eval``, so it
runs under the dashboard's strict Content-Security-Policy), pinned below by
version and by the npm registry's SHA-512 of its tarball. ``make venv`` runs
``python -m lakecache.server.dashboard.assets``, which asks ``npm pack`` for
exactly that tarball, checks its hash, and unpacks the three files the pages
need (the minified script, its stylesheet, its licence) into
``static/vendor/uplot/`` (ignored by git), where the server serves them from
its own origin like every other static file.

Without them the tracking pages still work (tables, logs, artifacts, CSV
downloads); each plot says which command brings the library.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lakecache.errors import LakecacheError
from lakecache.server.dashboard.render import STATIC_DIR

__all__ = ["UPLOT", "VENDOR_DIR", "Asset", "fetch", "installed"]

VENDOR_DIR = STATIC_DIR / "vendor"
FETCH_COMMAND = "make venv (or: python -m lakecache.server.dashboard.assets)"


@dataclass(frozen=True)
class Asset:
    """One npm package, pinned, and the files of its tarball the dashboard serves."""

    package: str
    version: str
    #: The registry's ``dist.integrity`` of the tarball (``npm view PKG@VERSION dist``).
    integrity: str
    licence: str
    #: path in the tarball -> name under ``static/vendor/<package>/``.
    files: tuple[tuple[str, str], ...]

    @property
    def folder(self) -> Path:
        return VENDOR_DIR / self.package

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    def path(self, name: str) -> Path:
        return self.folder / name


UPLOT = Asset(
    package="uplot",
    version="1.6.32",
    integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
    licence="MIT",
    files=(
        ("package/dist/uPlot.iife.min.js", "uPlot.iife.min.js"),
        ("package/dist/uPlot.min.css", "uPlot.min.css"),
        ("package/LICENSE", "LICENSE"),
    ),
)

_STAMP = "VERSION"


def installed(asset: Asset = UPLOT) -> bool:
    """Whether ``asset``'s files are in place, at its pinned version."""
    stamp = asset.path(_STAMP)
    try:
        if stamp.read_text().strip() != asset.spec:
            return False
    except OSError:
        return False
    return all(asset.path(name).is_file() for _, name in asset.files)


def _check_integrity(asset: Asset, tarball: bytes) -> None:
    algorithm, _, expected = asset.integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if digest != expected:
        raise LakecacheError(
            f"the tarball of {asset.spec} does not have the pinned hash "
            f"({algorithm} {digest}, expected {expected})",
            hint="The registry served other bytes under this version: do not use them. "
            "Check the pin in lakecache/server/dashboard/assets.py against "
            f"`npm view {asset.spec} dist.integrity`.",
        )


def _pack(asset: Asset, into: Path) -> bytes:
    """The package's tarball, from the npm registry through ``npm pack``."""
    npm = shutil.which("npm")
    if npm is None:
        raise LakecacheError(
            f"npm is not installed, and the dashboard's plots need {asset.spec} from the "
            "npm registry",
            hint="Install it (Debian: apt-get install -y npm), then run " + FETCH_COMMAND + ".",
        )
    done = subprocess.run(
        [npm, "pack", asset.spec, "--pack-destination", str(into), "--silent"],
        cwd=into,
        capture_output=True,
        text=True,
        env={**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"},
        timeout=600,
        check=False,
    )
    tarballs = sorted(into.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        raise LakecacheError(
            f"npm pack {asset.spec} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-500:]}",
            hint="Check that this machine reaches the npm registry, then run "
            + FETCH_COMMAND
            + " again.",
        )
    return tarballs[0].read_bytes()


def fetch(asset: Asset = UPLOT, *, force: bool = False) -> Path:
    """Bring ``asset``'s files into ``static/vendor/<package>/``; returns that folder.

    Does nothing when they are there at the pinned version (unless ``force``).
    The tarball's hash is checked before anything is unpacked, and the folder is
    replaced by a rename: an interrupted fetch leaves the old files or none.

    Raises:
        LakecacheError: npm missing, the registry unreachable, or other bytes than pinned.
    """
    if installed(asset) and not force:
        return asset.folder
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=VENDOR_DIR) as tmp:
        work = Path(tmp)
        tarball = _pack(asset, work)
        _check_integrity(asset, tarball)
        staged = work / "staged"
        staged.mkdir()
        wanted = dict(asset.files)
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = wanted.pop(member.name, None)
                if name is None or not member.isfile():
                    continue
                data = archive.extractfile(member)
                assert data is not None  # a regular file
                (staged / name).write_bytes(data.read())
        if wanted:
            raise LakecacheError(
                f"the tarball of {asset.spec} lacks {', '.join(sorted(wanted))}",
                hint="The pin in lakecache/server/dashboard/assets.py names files of another "
                "version: fix the list of files.",
            )
        (staged / _STAMP).write_text(asset.spec + "\n")
        old = work / "old"
        if asset.folder.exists():
            asset.folder.rename(old)
        staged.rename(asset.folder)
    return asset.folder


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    force = "--force" in args
    if "--check" in args:
        ok = installed(UPLOT)
        print(f"{UPLOT.spec}: {'installed' if ok else 'missing'} in {UPLOT.folder}")
        return 0 if ok else 1
    try:
        if installed(UPLOT) and not force:
            return 0
        folder = fetch(UPLOT, force=force)
    except LakecacheError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    print(f"{UPLOT.spec} ({UPLOT.licence} licence) -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
