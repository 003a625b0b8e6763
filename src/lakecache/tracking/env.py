"""What a run records about where it ran: versions of the environment, and of the code.

Both are best effort and never fail a run: a missing ``git``, a folder that is
no checkout, no GPU, all leave the field out.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: The most bytes of uncommitted diff recorded (the rest is cut, and said so).
DIFF_MAX = 1 << 20


def environment() -> dict[str, Any]:
    """Python, the OS, the packages installed (name -> version), CUDA and the driver.

    Read once per process (a copy each call): reading every package's metadata costs
    about 0.2 s of CPU, which an agent paid for every job attempt it started.
    """
    return copy.deepcopy(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    packages: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[str(name).lower()] = dist.version
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": dict(sorted(packages.items())),
    }
    env.update(gpu_versions())
    return env


def gpu_versions() -> dict[str, Any]:
    """The NVIDIA driver and CUDA versions and GPU names, when NVML is there."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVML raises its own error types; no GPU means no fields
        return {}
    try:
        out: dict[str, Any] = {"driver": _text(pynvml.nvmlSystemGetDriverVersion())}
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        out["cuda"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        out["gpus"] = [
            _text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
        return out
    except Exception:  # noqa: BLE001 - partial NVML support: keep what was read
        return {}
    finally:
        pynvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


def code_version(folder: Path | None = None, *, image: str | None = None) -> dict[str, Any]:
    """The code a run ran: the git commit, branch and uncommitted diff of ``folder``
    (default: the working folder) when it is a checkout, and the image when one ran.

    The diff (``git diff HEAD``, capped at :data:`DIFF_MAX`) is kept in full in
    ``diff``, with its SHA-256 in ``diff_sha256``, so two runs of the same dirty
    tree compare equal.
    """
    code: dict[str, Any] = {}
    if image:
        code["image"] = image
    folder = folder or Path.cwd()
    commit = _git(folder, "rev-parse", "HEAD")
    if commit:
        code["kind"] = "git"
        code["commit"] = commit.strip()
        branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch.strip() != "HEAD":
            code["branch"] = branch.strip()
        root = _git(folder, "rev-parse", "--show-toplevel")
        if root:
            code["root"] = root.strip()
        diff = _git(folder, "diff", "HEAD") or ""
        code["dirty"] = bool(diff)
        if diff:
            raw = diff.encode()
            code["diff_sha256"] = hashlib.sha256(raw).hexdigest()
            code["diff"] = raw[:DIFF_MAX].decode("utf-8", "replace")
            code["diff_truncated"] = len(raw) > DIFF_MAX
    elif image:
        code["kind"] = "image"
    return code
