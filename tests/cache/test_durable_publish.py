"""A fill's files are on disk before the rename that publishes them, and before the cache is ready.

A power loss cannot be caused here, so the flushes are recorded (the real
calls still run) relative to the rename (``os.replace`` or ``os.rename``)
and to the catalog's ``ready``.
A fill flushes its whole staging tree with one syncfs, not one fsync per
file: the count of flushes does not grow with the number of files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import lakecache.cache.seal as seal_module
import lakecache.cache.service as service_module
from lakecache.cache.service import CacheService
from lakecache.data.dataset import Dataset
from lakecache.durable import sync_filesystem


@pytest.fixture
def events(svc: CacheService, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def syncfs(path: str | os.PathLike[str]) -> None:
        out.append(("syncfs", os.fspath(path)))
        sync_filesystem(path)

    def fsync(fd: int) -> None:
        out.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        out.append(("rename", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        real_replace(src, dst)

    def rename(src: Any, dst: Any) -> None:
        out.append(("rename", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        real_rename(src, dst)

    monkeypatch.setattr(service_module, "sync_filesystem", syncfs)
    monkeypatch.setattr(seal_module, "sync_filesystem", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    topo = svc.topology
    real_complete = topo.complete_fill

    def complete_fill(*args: Any, **kwargs: Any) -> Any:
        out.append(("ready", str(args[0])))
        return real_complete(*args, **kwargs)

    monkeypatch.setattr(topo, "complete_fill", complete_fill)
    return out


def _first(events: list[tuple[str, str]], kind: str, what: str = "") -> int:
    return next(i for i, (k, w) in enumerate(events) if k == kind and what in w)


def test_a_fill_is_flushed_before_its_publish_and_its_publish_before_ready(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, events: list[tuple[str, str]]
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    final = str(svc.cache_path(rec))
    publish = _first(events, "rename", f" -> {final}")
    staging = events[publish][1].split(" -> ")[0]
    assert "/.lakecache/staging/" in staging
    assert _first(events, "syncfs", staging) < publish  # the bytes, before the name
    assert publish < _first(events, "syncfs", final) < _first(events, "ready")  # name and modes
    # Batched: 60 files, yet no fsync per file (only the seal record's folder, if new).
    assert sum(1 for k, _ in events if k == "fsync") <= 3, events


def test_repair_flushes_each_file_before_its_rename_and_the_folder_after(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, events: list[tuple[str, str]]
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    damaged = svc.cache_path(rec) / "Mass" / "00001.png"
    damaged.chmod(0o644)
    damaged.write_bytes(b"tampered")
    events.clear()
    assert svc.verify(rec.id, repair=True).repaired == 1
    rename = _first(events, "rename", f" -> {damaged}")
    tmp = events[rename][1].split(" -> ")[0]
    assert _first(events, "fsync", tmp) < rename
    folder = [i for i, e in enumerate(events) if e == ("fsync", str(damaged.parent))]
    assert folder and folder[0] > rename, events
