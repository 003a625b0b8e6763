"""bench/gpu.py without a GPU: its whole path (commit, prepare, cache, train from the cache)
runs a few CPU steps and reports its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_gpu_bench_runs_in_cpu_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu.py"),
            "--cpu",
            "--home",
            str(tmp_path / "w"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu" and report["arch"] == "resnet18"
    assert report["read_from"] == "cache"  # the prepared commit, from its ready cache
    assert report["steps_measured"] == 2  # 3 steps, the first one warm-up
    assert report["images_per_s"] > 0
    assert 0 <= report["data_wait_fraction"] < 1
    assert report["gpu_utilization"] is None
    assert "data wait:" in proc.stdout and "images/s:" in proc.stdout
