"""The lakecache image (``deploy/Containerfile``) built with Podman on a machine that reaches
no image registry: a Python base made locally, and the dependencies from a local wheelhouse.

Users build ``FROM python:3.11-slim`` (``make image``). Here, :func:`python_base_image`
makes ``localhost/lakecache-base-python:bookworm`` instead: ``debootstrap`` of Debian
bookworm's minimal base with ``python3`` (Python 3.11, as in python:3.11-slim) into a cache
folder, once (a few minutes), then ``podman import`` (skipped while Podman has the image).
:func:`wheelhouse` downloads the dependencies' wheels once per dependency list, so a build
needs no network: the Containerfile's ``PIP_FLAGS`` point pip at them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from lakecache.services.podman import PodmanUnavailableError

BASE_IMAGE = "localhost/lakecache-base-python:bookworm"
SUITE = "bookworm"
#: Packages beyond the minimal base: the interpreter, its venv module, CA certificates
#: (the S3 lake is reached over TLS in production).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
_SOURCES = Path("/etc/apt/sources.list.d")


def _podman_env(config: dict[str, Any]) -> dict[str, str]:
    return dict(os.environ, CONTAINERS_CONF=config["containers_conf"])


def image_exists(name: str, config: dict[str, Any]) -> bool:
    done = subprocess.run(["podman", "image", "exists", name], env=_podman_env(config), check=False)
    return done.returncode == 0


def python_base_image(cache: Path, config: dict[str, Any]) -> str:
    """The local Python base image's name, made once (debootstrap, then import).

    ``cache`` keeps the unpacked root between runs (about 250 MB), so a new Podman
    store only costs the import. Raises PodmanUnavailableError with the reason.
    """
    if image_exists(BASE_IMAGE, config):
        return BASE_IMAGE
    root = cache / f"debian-{SUITE}-python" / "root"
    if not (root / "usr" / "bin" / "python3").exists():
        _debootstrap(root)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["podman", "import", "-", BASE_IMAGE],
        stdin=tar.stdout,
        env=_podman_env(config),
        capture_output=True,
        text=True,
    )
    assert tar.stdout is not None
    tar.stdout.close()
    tar.wait()
    if imported.returncode != 0:
        raise PodmanUnavailableError(f"podman import failed: {imported.stderr.strip()}")
    return BASE_IMAGE


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (the only one reachable here)."""
    for source in sorted(_SOURCES.glob("*.sources")) + sorted(_SOURCES.glob("*.list")):
        for url in re.findall(r"(https?://\S+/debian)\b(?!-)", source.read_text()):
            return url
    return "http://deb.debian.org/debian"


def _debootstrap(root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise PodmanUnavailableError(
            "debootstrap is not installed (it makes the local Python base image)",
        )
    # Made beside the final folder and renamed: a killed run leaves no half root behind.
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=root.parent))
    try:
        made = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(work / "root"),
                _mirror(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise PodmanUnavailableError(f"debootstrap failed: {made.stdout[-2000:]}")
        # What python:3.11-slim leaves out too: package lists and docs.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc"):
            shutil.rmtree(work / "root" / junk, ignore_errors=True)
        try:
            (work / "root").rename(root)
        except OSError:
            if not (root / "usr" / "bin" / "python3").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wheelhouse(repo: Path, cache: Path, python: str) -> Path:
    """A folder with wheels of every dependency of ``repo`` (and the build backend).

    Keyed by the hash of ``pyproject.toml``'s dependency lists, so it is downloaded
    once per change of them; ``python`` is the interpreter whose pip downloads
    (this machine's Python and glibc match the base image's).
    """
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    wanted = sorted(project["project"]["dependencies"]) + sorted(
        project["build-system"]["requires"]
    )
    key = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
    folder = cache / f"wheels-{key}"
    if (folder / ".complete").exists():
        return folder
    work = Path(tempfile.mkdtemp(prefix=".wheels-", dir=cache))
    try:
        got = subprocess.run(
            [
                python,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--dest",
                str(work),
                *wanted,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode != 0:
            raise PodmanUnavailableError(f"downloading the wheels failed: {got.stderr[-2000:]}")
        (work / ".complete").touch()
        try:
            work.rename(folder)
        except OSError:
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def build_image(
    repo: Path,
    config: dict[str, Any],
    *,
    tag: str,
    base: str,
    version: str,
    wheels: Path | None = None,
) -> str:
    """``podman build`` of ``deploy/Containerfile`` for ``tag``; returns the tag.

    With ``wheels``, that folder is mounted into the build's steps and pip installs
    from it only (no network). Docker format, so the image keeps its HEALTHCHECK
    (the OCI format has none).
    """
    args = [
        "podman",
        "build",
        "--format",
        "docker",
        "--pull=never" if base.startswith("localhost/") else "--pull=missing",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"VERSION={version}",
        "-f",
        str(repo / "deploy" / "Containerfile"),
        "-t",
        tag,
    ]
    if config.get("runtime"):
        args += ["--runtime", config["runtime"]]
    if wheels is not None:
        # Mounted for the build's RUN steps only: not in the image, not in a layer's key.
        args += ["--volume", f"{wheels}:/wheels:ro"]
        args += ["--build-arg", "PIP_FLAGS=--no-index --find-links=/wheels"]
    built = subprocess.run(
        [*args, str(repo)], env=_podman_env(config), capture_output=True, text=True
    )
    if built.returncode != 0:
        raise PodmanUnavailableError(
            f"podman build failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
        )
    return tag
