"""A 6 GiB single file commits and pulls with flat memory (measured in a child process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakecache.settings import Settings

WANTED = int(os.environ.get("LAKECACHE_TEST_LARGE_SIZE", 6 << 30))
FLOOR = 1 << 30  # below this a memory peak under 400 MiB proves little


def _size_that_fits(folder: Path) -> int:
    """The file's size: 6 GiB where the disk has room for the lake copy and the pulled copy.

    The source is sparse, but the lake and the pull hold real bytes: the test needs
    about twice the size free, with a margin for everything else on the machine.
    A smaller disk (CI machines vary) gets the largest size that fits, never under 1 GiB.
    """
    free = shutil.disk_usage(folder).free
    fits = (free - (2 << 30)) // 2
    size = min(WANTED, fits - fits % (64 << 20))
    if size < FLOOR:
        pytest.skip(f"needs {2 * FLOOR + (2 << 30) >> 30} GiB free disk, {free >> 30} GiB free")
    return size


_CHILD = textwrap.dedent(
    """
    import json, sys
    from lakecache import Dataset, Settings
    s = Settings(home=sys.argv[1], workers=4, author="t")
    ds = Dataset.create("big", settings=s, exist_ok=True)
    if sys.argv[2] == "commit":
        c = ds.commit(sys.argv[3], message="big")
        out = {"id": c.id, "bytes": c.bytes}
    else:
        st = ds.pull(None, sys.argv[3])
        out = {"bytes": st.bytes}
    # VmHWM, not ru_maxrss: after fork+exec the latter can report the parent's (pytest's) peak.
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    out["maxrss_mib"] = hwm / 1024
    print(json.dumps(out))
    """
)


def _run(home: Path, op: str, path: Path) -> dict[str, float]:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(home), op, str(path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards: pytest keeps the last runs' folders, and 12 GiB each
    of them would fill the disk of the runs that follow."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_six_gib_file_commits_and_pulls_with_flat_memory(scratch: Path, settings: Settings) -> None:
    tmp_path = scratch
    size = _size_that_fits(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    big = src / "scan.raw"
    # Sparse, with marks spread through it, so every part has distinct bytes.
    with open(big, "wb") as f:
        f.truncate(size)
        for i in range(64):
            f.seek(i * (size // 64))
            f.write(os.urandom(4096))
    c = _run(settings.home, "commit", src)
    assert c["bytes"] == size
    assert c["maxrss_mib"] < 400, f"commit peaked at {c['maxrss_mib']:.0f} MiB"
    lake_obj = [p for p in (settings.home / "lake" / "blobs").rglob("*") if p.is_file()]
    assert len(lake_obj) == 1 and lake_obj[0].stat().st_size == size
    big.unlink()  # make room: the lake copy is real bytes

    out = tmp_path / "out"
    p = _run(settings.home, "pull", out)
    assert p["bytes"] == size
    assert p["maxrss_mib"] < 400, f"pull peaked at {p['maxrss_mib']:.0f} MiB"
    pulled = out / "scan.raw"
    assert pulled.stat().st_size == size
    with open(pulled, "rb") as f:
        f.seek(5 * (size // 64))
        assert f.read(4096) != bytes(4096)
