"""A cache is never evicted under a training run that reads it, and is evicted once it ends.

The volume's TTL is one second, so an unused cache is past it almost at once:
a TTL pass (what a site agent runs) and ``lakecache cache rm`` (not forced)
are tried while a reader holds the cache, and again after it is done. The
readers are the training component itself (its datasets lease the cache for
the run) and lakecache.torch's two datasets in forked DataLoader workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

from lakecache.cache.service import CacheService
from lakecache.catalog.topology import CacheRecord
from lakecache.cli.main import main as lakecache_main
from lakecache.data.hub import Hub
from lakecache.library import image_classifier as ic
from lakecache.settings import Settings
from lakecache.torch import CommitDataset, StreamingDataset

TTL_S = 1


@pytest.fixture
def cached(nih_commit: str, lake_env: Settings, tmp_path: Path) -> Iterator[CacheService]:
    """``xray@v1`` cached on site onprem, on a volume (mounted here) with a 1 s TTL."""
    hub = Hub(lake_env)
    try:
        svc = CacheService(hub)
        now = svc.clock.now()
        (tmp_path / "vol").mkdir()
        svc.topology.add_site("onprem", "GPU cluster", now)
        svc.topology.add_volume("onprem-nfs", "onprem", str(tmp_path / "vol"), 10**9, TTL_S, now)
        rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
        assert rec.state == "ready"
        yield svc
    finally:
        hub.close()


def _the_cache(svc: CacheService) -> CacheRecord:
    (rec,) = svc.topology.list_caches(dataset="xray")
    return rec


def _try_to_evict(svc: CacheService, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Past the TTL, a TTL pass and then `lakecache cache rm ID`: what they left."""
    time.sleep(TTL_S + 0.3)
    svc.gc()
    capsys.readouterr()
    code = lakecache_main(["cache", "rm", str(_the_cache(svc).id)])
    err = capsys.readouterr().err
    rec = svc.topology.get_cache(_the_cache(svc).id, svc.clock.now())
    return {
        "state": rec.state,
        "leases": rec.leases,
        "files": svc.cache_path(rec).is_dir(),
        "rm": code,
        "err": err,
    }


def _assert_kept(tried: dict[str, Any]) -> None:
    assert tried["state"] == "ready" and tried["leases"] >= 1 and tried["files"], tried
    assert tried["rm"] == 1 and "in use by" in tried["err"] and "lease" in tried["err"], tried


def _assert_evicted_after(svc: CacheService, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _the_cache(svc)
    assert svc.topology.get_cache(rec.id, svc.clock.now()).leases == 0
    time.sleep(TTL_S + 0.3)
    svc.gc()  # the TTL pass alone takes it now
    assert _the_cache(svc).state == "evicted"
    assert not svc.cache_path(rec).exists()


def test_a_training_run_holds_its_cache_until_it_ends(
    cached: CacheService,
    lake_env: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    svc = cached
    tries: list[dict[str, Any]] = []
    real_predict = ic.predict

    def evict_at_first_validation(*args: Any, **kw: Any) -> Any:
        # The end of epoch 1 of 2: the run has read from the cache and will read again.
        if not tries:
            tries.append(_try_to_evict(svc, capsys))
        return real_predict(*args, **kw)

    monkeypatch.setattr(ic, "predict", evict_at_first_validation)
    out = tmp_path / "run"
    config = ic.TrainConfig(
        data="xray@v1",
        out=str(out),
        arch="resnet18",
        image_size=16,
        batch_size=8,
        epochs=2,
        max_steps=2,
        workers=0,
        val=0.25,
        test=0.0,
        allow_empty_class=True,
    )
    result = ic.train(config, settings=lake_env)
    assert len(tries) == 1
    _assert_kept(tries[0])
    # Epoch 2 read from the cache after the attempts, and both epochs were scored.
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["data"]["read_from"] == "cache"
    _assert_evicted_after(svc, capsys)


@pytest.mark.parametrize("kind", ["CommitDataset", "StreamingDataset"])
def test_a_torch_dataset_holds_its_cache_while_it_lives(
    kind: str, cached: CacheService, lake_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = cached
    ds: Any
    if kind == "CommitDataset":
        ds = CommitDataset("xray@v1", decode="bytes", label=None, settings=lake_env)
    else:
        ds = StreamingDataset("xray@v1", settings=lake_env)
    assert ds.source == "cache"
    files = ds.selection.files
    for _ in range(2):  # two epochs, each after an attempt to evict
        _assert_kept(_try_to_evict(svc, capsys))
        loader = DataLoader(
            ds, batch_size=None, num_workers=2, multiprocessing_context="fork", shuffle=None
        )
        assert sum(1 for _ in loader) == files
    ds.close()  # training over: the lease goes, and with it the protection
    _assert_evicted_after(svc, capsys)
