"""Podman on this machine for tests and demos: the settings it needs here, and a base image
made locally (no registry can be reached).

Two settings are needed on this kind of machine, or every run fails: the default
runtime ``crun`` refuses the kernel's hybrid cgroups (``runtime: runc``), and the
default ulimits cannot be set (a containers.conf with ``default_ulimits = []``).
:func:`podman_config` writes that file and returns the ``container`` backend's
config that uses both.

:func:`busybox_image` makes ``localhost/lakecache-test-busybox:<version>`` from the
Debian package ``busybox-static`` (a shell and the usual commands, statically
linked): the package is downloaded and unpacked once into a cache folder keyed by
its version, and imported once (skipped when ``podman image exists``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

IMAGE = "localhost/lakecache-test-busybox"
INSTALL_HINT = "Install Podman with `apt-get install -y podman runc` (make deps does it)."


class PodmanUnavailableError(RuntimeError):
    """Podman is not installed, or the base image could not be made."""


def podman_config(folder: Path) -> dict[str, Any]:
    """The ``container`` backend's config for Podman on this kind of machine.

    Writes ``folder/containers.conf``; raises PodmanUnavailableError without Podman.
    """
    if shutil.which("podman") is None:
        raise PodmanUnavailableError(f"podman is not on PATH. {INSTALL_HINT}")
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return {
        "binary": "podman",
        "runtime": "runc" if shutil.which("runc") else None,
        "containers_conf": str(conf),
        "pull": "never",  # no registry here: a missing image fails at once
    }


def busybox_image(cache: Path, config: dict[str, Any]) -> str:
    """The busybox image's name, made (once per package version) if Podman lacks it.

    ``cache`` holds the unpacked root folders between runs; ``config`` is
    :func:`podman_config`'s (the same containers.conf is used).
    """
    env = dict(os.environ, CONTAINERS_CONF=config["containers_conf"])
    version = _package_version("busybox-static")
    name = f"{IMAGE}:{re.sub(r'[^A-Za-z0-9_.-]', '_', version)}"
    if subprocess.run(["podman", "image", "exists", name], env=env, check=False).returncode == 0:
        return name
    root = cache / f"busybox-static-{version}" / "root"
    if not (root / "bin" / "busybox").exists():
        _unpack_busybox(root)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["podman", "import", "-", name], stdin=tar.stdout, env=env, capture_output=True, text=True
    )
    assert tar.stdout is not None
    tar.stdout.close()
    tar.wait()
    if imported.returncode != 0:
        raise PodmanUnavailableError(f"podman import failed: {imported.stderr.strip()}")
    return name


def _package_version(package: str) -> str:
    shown = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"^Version: (\S+)$", shown.stdout, flags=re.MULTILINE)
    if not found:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        shown = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", package],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"^Version: (\S+)$", shown.stdout, flags=re.MULTILINE)
    if not found:
        raise PodmanUnavailableError(f"apt knows no package {package!r}: {shown.stderr.strip()}")
    return found.group(1)


def _unpack_busybox(root: Path) -> None:
    # Unpacked beside the final folder, then renamed: a run killed half-way leaves no
    # half root that a later run would import.
    work = root.parent / f".unpack-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    got = subprocess.run(
        ["apt-get", "download", "busybox-static"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    debs = list(work.glob("busybox-static_*.deb"))
    if got.returncode != 0 or not debs:
        raise PodmanUnavailableError(f"apt-get download busybox-static: {got.stderr.strip()}")
    tree = work / "root"
    subprocess.run(["dpkg", "-x", str(debs[0]), str(tree)], check=True)
    listed = subprocess.run(
        [str(tree / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True
    )
    for applet in listed.stdout.split():
        link = tree / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for folder in ("tmp", "etc", "proc", "dev", "sys", "inputs", "outputs"):
        (tree / folder).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    try:
        tree.rename(root)
    except OSError:
        if not (root / "bin" / "busybox").exists():
            raise
        # Another run unpacked the same version meanwhile: use theirs.
    shutil.rmtree(work, ignore_errors=True)
