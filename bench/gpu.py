"""ResNet-50 training from a cached prepared commit on an NVIDIA GPU: images/s, GPU
utilisation (NVML) and data-wait fraction.

    python bench/gpu.py                 # on a GPU machine: the seed's setting, < 5 minutes
    python bench/gpu.py --cpu           # anywhere: a few small CPU steps (tests run this)

What it does, in a fresh lakecache home (a local-folder lake and SQLite):
synthetic NIH-layout PNGs are committed as ``xray``; ``prepare`` makes the
256 px raw uint8 commit ``xray-prepared``; a cache of it is filled on a site
volume; then ``image-classifier train`` runs ResNet-50, batch 128, AMP and
channels-last, 224 px random crops, reading through ``lakecache.torch`` from
that cache with DataLoader workers. Figures are taken from the training's
per-step record after ``--warmup`` steps: images/s, the share of step time
spent waiting for data, and the mean GPU utilisation sampled through NVML
over the same window. Targets: data wait under 5%, utilisation at least 90%.

Without a GPU (or with ``--cpu``) the same path runs on the CPU with
ResNet-18, 32 px and a few steps, so that it stays tested.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

#: (images, prepared side, input side, batch, arch, steps, warm-up steps) per mode.
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {
        "images": 7680,
        "size": 256,
        "input": 224,
        "batch": 128,
        "arch": "resnet50",
        "steps": 60,
        "warmup": 10,
    },
    "cpu": {
        "images": 48,
        "size": 40,
        "input": 32,
        "batch": 8,
        "arch": "resnet18",
        "steps": 3,
        "warmup": 1,
    },
}
TARGET_WAIT = 0.05
TARGET_UTIL = 90.0


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class NvmlSampler:
    """Samples GPU 0's utilisation (percent) through NVML every ``every`` seconds.

    NVML is the driver's own library (``libnvidia-ml.so.1``), called through
    ctypes, so no Python package is needed. ``available`` is False without it.
    """

    def __init__(self, every: float = 0.1, index: int = 0) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.available = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._nvml = ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            return
        if self._nvml.nvmlInit_v2() != 0:
            return
        self._handle = ctypes.c_void_p()
        if self._nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(self._handle)) != 0:
            return
        self.available = True

    def _run(self) -> None:
        util = _Utilization()
        while not self._stop.wait(self.every):
            if self._nvml.nvmlDeviceGetUtilizationRates(self._handle, ctypes.byref(util)) == 0:
                self.samples.append((time.time(), float(util.gpu)))

    def start(self) -> None:
        if self.available:
            self._thread = threading.Thread(target=self._run, name="nvml", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.available:
            self._nvml.nvmlShutdown()

    def mean(self, start: float, end: float) -> float | None:
        window = [u for t, u in self.samples if start <= t <= end]
        return sum(window) / len(window) if window else None


def build_world(home: Path, images: int, size: int, workers: int) -> tuple[Any, str]:
    """Commit synthetic NIH PNGs, prepare them as raw uint8, cache the prepared commit.

    Returns (settings, "xray-prepared@<commit>"), with timings printed.
    """
    from lakecache import synth
    from lakecache.cache.service import CacheService
    from lakecache.data.dataset import Dataset
    from lakecache.data.hub import Hub
    from lakecache.library.prepare import prepare
    from lakecache.settings import Settings

    settings = Settings(home=home / "home", author="bench")
    hub = Hub(settings)
    try:
        t = time.perf_counter()
        synth.generate_nih(home / "src", images, size=size, images_per_folder=10_000, seed=7)
        _say(f"generated {images:,} NIH-layout PNGs of {size} px", t)
        t = time.perf_counter()
        raw = Dataset.create("xray", hub=hub, exist_ok=True)
        commit = raw.commit(home / "src", "synthetic NIH layout")
        _say(f"committed xray@{commit.id[:12]}", t)
        t = time.perf_counter()
        result = prepare(
            f"xray@{commit.id}",
            home / "prepared",
            size=size,
            fmt="u8",
            workers=workers,
            settings=settings,
        )
        _say(f"prepared {result.images:,} images as {size} px uint8", t)
        t = time.perf_counter()
        prepared = Dataset.create("xray-prepared", hub=hub, exist_ok=True)
        pcommit = prepared.commit(home / "prepared", f"prepared from xray@{commit.id}")
        _say(f"committed xray-prepared@{pcommit.id[:12]}", t)
        t = time.perf_counter()
        svc = CacheService(hub)
        now = svc.clock.now()
        svc.topology.add_site("gpu-site", "the GPU machine", now)
        (home / "cache").mkdir(exist_ok=True)
        svc.topology.add_volume("gpu-nvme", "gpu-site", str(home / "cache"), 10**13, 86_400, now)
        rec = svc.ensure_ready(svc.request("xray-prepared", pcommit.id, site="gpu-site"))
        if rec.state != "ready":
            raise SystemExit(f"the cache fill ended {rec.state}: {rec.error}")
        _say("cache of xray-prepared ready on gpu-site", t)
        return settings, f"xray-prepared@{pcommit.id}"
    finally:
        hub.close()


def steady_figures(out: Path, warmup: int) -> dict[str, float]:
    """images/s and data-wait share over the steps after ``warmup``, from metrics.jsonl."""
    steps = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        metrics = record.get("metrics", {})
        if "loss" in metrics and "images_per_s" in metrics:
            steps.append((record["step"], record["time"], metrics))
    steady = [s for s in steps if s[0] > warmup] or steps
    if not steady:
        raise SystemExit("training logged no step")
    seconds = sum(m["step_s"] for _, _, m in steady)
    images = sum(m["images_per_s"] * m["step_s"] for _, _, m in steady)
    waited = sum(m["data_wait_s"] for _, _, m in steady)
    # The window NVML is averaged over: from the start of the first measured step to the last.
    start = steady[0][1] - steady[0][2]["step_s"]
    return {
        "steps": float(len(steady)),
        "images_per_s": images / seconds if seconds else 0.0,
        "data_wait_fraction": waited / seconds if seconds else 0.0,
        "window_start": start,
        "window_end": steady[-1][1],
    }


def run(mode: str, home: Path, workers: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Build the world, train, and return the figures (and PASS/FAIL against the targets)."""
    import torch

    from lakecache.library.image_classifier import TrainConfig, train

    p = {**PROFILES[mode], **{k: v for k, v in overrides.items() if v is not None}}
    settings, ref = build_world(home, p["images"], p["size"], workers)
    sampler = NvmlSampler() if mode == "gpu" else None
    if sampler is not None:
        sampler.start()
    out = home / "train"
    t = time.perf_counter()
    try:
        config = TrainConfig(
            data=ref,
            out=str(out),
            arch=p["arch"],
            image_size=p["input"],
            batch_size=p["batch"],
            epochs=1,
            max_steps=p["steps"],
            workers=workers,
            cached=True,
            val=0.02 if mode == "gpu" else 0.2,
            test=0.0,
            allow_empty_class=True,
            device="cuda" if mode == "gpu" else "cpu",
        )
        result = train(config, settings=settings)
    finally:
        if sampler is not None:
            sampler.stop()
    _say(f"trained {p['steps']} steps of {p['arch']}", t)
    figures = steady_figures(out, p["warmup"])
    util = sampler.mean(figures["window_start"], figures["window_end"]) if sampler else None
    report: dict[str, Any] = {
        "mode": mode,
        "device": torch.cuda.get_device_name(0) if mode == "gpu" else "cpu",
        "arch": p["arch"],
        "batch": p["batch"],
        "input_px": p["input"],
        "amp": mode == "gpu",
        "workers": workers,
        "steps_measured": int(figures["steps"]),
        "images_per_s": figures["images_per_s"],
        "data_wait_fraction": figures["data_wait_fraction"],
        "gpu_utilization": util,
        "read_from": json.loads((out / "metrics.json").read_text())["data"]["read_from"],
        "skipped": result.skipped,
    }
    report["data_wait_ok"] = report["data_wait_fraction"] < TARGET_WAIT
    report["utilization_ok"] = None if util is None else util >= TARGET_UTIL
    return report


def _say(what: str, t0: float) -> None:
    print(f"  {what} ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu", action="store_true", help="a few CPU steps (the default without a GPU)"
    )
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--arch", default=None)
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: cores, up to 12)"
    )
    parser.add_argument("--home", type=Path, default=None, help="work folder (default: a temp one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    mode = "gpu" if torch.cuda.is_available() and not args.cpu else "cpu"
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    workers = args.workers if args.workers is not None else (min(12, cores) if mode == "gpu" else 0)
    overrides = {"images": args.images, "steps": args.steps, "batch": args.batch, "arch": args.arch}
    print(f"bench/gpu.py: {mode} mode, {workers} DataLoader workers", flush=True)
    with tempfile.TemporaryDirectory(prefix="lakecache-gpu-bench-") as tmp:
        report = run(mode, args.home or Path(tmp), workers, overrides)
    util = report["gpu_utilization"]
    print(f"  images/s:           {report['images_per_s']:,.1f}")
    print(
        f"  data wait:          {100 * report['data_wait_fraction']:.2f}% of step time "
        f"(target < {100 * TARGET_WAIT:.0f}%: {'PASS' if report['data_wait_ok'] else 'FAIL'})"
    )
    if util is None:
        print("  GPU utilisation:    - (no GPU or no NVML)")
    else:
        ok = "PASS" if report["utilization_ok"] else "FAIL"
        print(f"  GPU utilisation:    {util:.1f}% (target >= {TARGET_UTIL:.0f}%: {ok})")
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
