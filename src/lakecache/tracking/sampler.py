"""System metrics of a run, sampled every second by a background thread.

Per sample: CPU use (percent of all cores), memory used (bytes and percent),
disk read and write and network receive and send (bytes per second, machine
wide), and per GPU utilisation, memory used, power (W) and temperature (C)
through NVML when ``pynvml`` and a GPU are present. From ``psutil`` when it
is installed, else from Linux's ``/proc``; a figure that cannot be read is
left out, never guessed.

A sample costs a few file reads (about 0.1 ms): at one a second, well under
1% of a training loop's time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("lakecache.tracking")

#: (key, value) pairs of one sample.
Sample = list[tuple[str, float]]


class _Counters:
    """Cumulative machine counters: cpu (busy, total jiffies), disk and network bytes."""

    def __init__(self) -> None:
        try:
            import psutil  # type: ignore[import-untyped]

            self._psutil: Any = psutil
        except ImportError:
            self._psutil = None
        self._disks = _whole_disks()

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        ps = self._psutil
        if ps is not None:
            cpu = ps.cpu_times()
            idle = cpu.idle + getattr(cpu, "iowait", 0.0)
            out["cpu_total"] = sum(cpu)
            out["cpu_busy"] = out["cpu_total"] - idle
            mem = ps.virtual_memory()
            out["memory_used"], out["memory_total"] = float(mem.total - mem.available), mem.total
            disk = ps.disk_io_counters()
            if disk is not None:
                out["disk_read"], out["disk_write"] = disk.read_bytes, disk.write_bytes
            net = ps.net_io_counters()
            if net is not None:
                out["net_recv"], out["net_sent"] = net.bytes_recv, net.bytes_sent
            return out
        out.update(_proc_cpu())
        out.update(_proc_memory())
        out.update(_proc_disk(self._disks))
        out.update(_proc_net())
        return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _proc_cpu() -> dict[str, float]:
    text = _read("/proc/stat")
    if not text:
        return {}
    fields = [float(x) for x in text.split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return {"cpu_total": sum(fields[:8]), "cpu_busy": sum(fields[:8]) - idle}


def _proc_memory() -> dict[str, float]:
    text = _read("/proc/meminfo")
    if not text:
        return {}
    info = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            info[name] = float(parts[0]) * 1024
    if "MemTotal" not in info or "MemAvailable" not in info:
        return {}
    return {
        "memory_used": info["MemTotal"] - info["MemAvailable"],
        "memory_total": info["MemTotal"],
    }


def _whole_disks() -> frozenset[str]:
    """Whole block devices (partitions would count twice), without loop, ram and dm disks."""
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return frozenset()
    return frozenset(n for n in names if not n.startswith(("loop", "ram", "dm-")))


def _proc_disk(disks: frozenset[str]) -> dict[str, float]:
    text = _read("/proc/diskstats")
    if not text:
        return {}
    read = write = 0.0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or parts[2] not in disks:
            continue
        read += float(parts[5]) * 512
        write += float(parts[9]) * 512
    return {"disk_read": read, "disk_write": write}


def _proc_net() -> dict[str, float]:
    text = _read("/proc/net/dev")
    if not text:
        return {}
    recv = sent = 0.0
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name.strip() == "lo" or len(parts) < 9:
            continue
        recv += float(parts[0])
        sent += float(parts[8])
    return {"net_recv": recv, "net_sent": sent}


class _Gpus:
    """NVML, if it imports and finds GPUs; else nothing (and no error)."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
            self.nvml = pynvml
        except Exception:  # noqa: BLE001 - no pynvml, no driver, no GPU: no GPU metrics
            self.nvml = None

    def sample(self) -> Sample:
        nv, out = self.nvml, []
        if nv is None:
            return []
        for i, h in enumerate(self.handles):
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                out += [
                    (f"gpu{i}.utilization", float(util.gpu)),
                    (f"gpu{i}.memory_used", float(mem.used)),
                    (f"gpu{i}.memory_percent", 100.0 * mem.used / max(mem.total, 1)),
                    (f"gpu{i}.power_w", nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                    (f"gpu{i}.temperature_c", float(nv.nvmlDeviceGetTemperature(h, 0))),
                ]
            except Exception:  # noqa: BLE001 - a GPU that stops answering loses its sample
                continue
        return out

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - closing best effort
                pass


class SystemSampler:
    """Calls ``emit(sample)`` every ``interval`` seconds from a daemon thread until
    :meth:`stop`. The first sample comes one interval after :meth:`start` (rates
    need two readings)."""

    def __init__(self, emit: Callable[[Sample], None], interval: float = 1.0) -> None:
        self.emit = emit
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counters = _Counters()
        self._gpus: _Gpus | None = None
        self.samples = 0
        #: CPU seconds this sampler's thread has used: its whole cost to the process.
        self.cpu_seconds = 0.0

    def start(self) -> SystemSampler:
        self._gpus = _Gpus()
        self._thread = threading.Thread(target=self._loop, name="lakecache-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._gpus is not None:
            self._gpus.close()

    def _loop(self) -> None:
        last = self._counters.read()
        last_t = time.monotonic()
        while not self._stop.wait(self.interval):
            cpu = time.thread_time()
            now = self._counters.read()
            now_t = time.monotonic()
            try:
                self.emit(sample_between(last, now, now_t - last_t) + self._gpu_sample())
                self.samples += 1
            except Exception:  # noqa: BLE001 - a sampler failure must not stop the run
                log.exception("system sample failed")
            last, last_t = now, now_t
            self.cpu_seconds += time.thread_time() - cpu

    def _gpu_sample(self) -> Sample:
        return self._gpus.sample() if self._gpus is not None else []


def sample_between(before: dict[str, float], after: dict[str, float], seconds: float) -> Sample:
    """The sample from two counter readings ``seconds`` apart (pure: tested directly)."""
    out: Sample = []
    if "cpu_total" in before and "cpu_total" in after:
        total = after["cpu_total"] - before["cpu_total"]
        if total > 0:
            out.append(("cpu_percent", 100.0 * (after["cpu_busy"] - before["cpu_busy"]) / total))
    if "memory_used" in after:
        out.append(("memory_used", after["memory_used"]))
        out.append(("memory_percent", 100.0 * after["memory_used"] / max(after["memory_total"], 1)))
    seconds = max(seconds, 1e-6)
    for key in ("disk_read", "disk_write", "net_recv", "net_sent"):
        if key in before and key in after:
            out.append((f"{key}_bps", max(0.0, after[key] - before[key]) / seconds))
    return out
