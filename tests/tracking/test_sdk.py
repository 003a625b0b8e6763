"""The SDK on its own: bounded memory with spill to disk, an unavailable sink, the flush at
exit, system samples, and what a run records about its code and environment."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lakecache.catalog import Catalog
from lakecache.errors import LakecacheError
from lakecache.settings import Settings
from lakecache.tracking.model import Batch
from lakecache.tracking.sampler import sample_between
from lakecache.tracking.sdk import Run
from lakecache.tracking.sink import Unavailable
from lakecache.tracking.store import TrackingStore

SRC = Path(__file__).resolve().parents[2] / "src"


class FlakySink:
    """A sink that is down while ``down`` is set (an outage we cannot cause for real here:
    the server-restart case is tested against a real server in test_server.py)."""

    def __init__(self) -> None:
        self.down = False
        self.points = 0
        self.batches: list[Batch] = []

    def send(self, run_id: int, batch: Batch) -> None:
        if self.down:
            raise Unavailable("down for the test")
        self.points += batch.points()
        self.batches.append(batch)

    def close(self) -> None:
        pass


class Backend:
    def __init__(self) -> None:
        self.sink = FlakySink()
        self.ended: list[str] = []

    def log_artifact(self, run_id: int, path: Path, name: str) -> None:
        raise AssertionError("not used")

    def record_input(self, run_id: int, fields: dict[str, object]) -> None:
        raise AssertionError("not used")

    def end(self, run_id: int, status: str) -> None:
        self.ended.append(status)

    def close(self) -> None:
        pass


def test_a_full_buffer_spills_to_disk_and_an_outage_loses_nothing(tmp_path: Path) -> None:
    backend = Backend()
    run = Run(7, backend, spool=tmp_path, flush_interval=0.05, flush_at=1000, max_buffer=5000)
    backend.sink.down = True
    for step in range(20_000):
        run.log_metric("loss", float(step), step=step)
        assert run._count <= 5000  # memory stays bounded: the buffer spills past max_buffer
    assert list(tmp_path.glob("7-*.jsonl")) or list(tmp_path.glob("7-*.sending"))
    assert not run.flush(timeout=0.3)
    backend.sink.down = False
    run.log_params({"lr": 0.1})
    with run:
        pass
    assert backend.sink.points == 20_000 and backend.ended == ["finished"]
    steps = sorted(s for b in backend.sink.batches for s in b.metrics.get("loss", ([], [], []))[0])
    assert steps == list(range(20_000))
    assert not list(tmp_path.iterdir())


def test_a_failing_block_ends_its_run_failed_and_bad_values_are_refused(tmp_path: Path) -> None:
    backend = Backend()
    with pytest.raises(RuntimeError), Run(1, backend, spool=tmp_path) as run:
        run.log_metric("ok", 1)
        with pytest.raises(LakecacheError, match="not a number"):
            run.log_metric("loss", "high")  # type: ignore[arg-type]
        with pytest.raises(LakecacheError, match="not valid UTF-8"):
            run.log_metric("bad\udcff", 1.0)
        with pytest.raises(LakecacheError, match=r"7000 characters long \(at most 6000\)"):
            run.log_params({"long": "x" * 7000})
        raise RuntimeError("training crashed")
    assert backend.ended == ["failed"] and backend.sink.points == 1


def test_the_points_of_a_process_that_exits_without_end_are_stored(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = textwrap.dedent(
        """
        import math, sys
        from pathlib import Path
        import lakecache.tracking as tracking
        from lakecache.settings import Settings
        run = tracking.start("atexit", settings=Settings(home=Path(sys.argv[1]), author="me"))
        for step in range(100_000):
            run.log_metric(f"m{step % 100}", step / 7, step=step // 100)
        run.log_metric("nan", math.nan)
        print(run.id)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(home)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = int(done.stdout.split()[-1])
    with Catalog.open(Settings(home=home).catalog_url) as catalog:
        store = TrackingStore(catalog)
        run = store.get_run(run_id)
        assert run.status == "finished" and run.user == "me"
        assert (
            sum(store.metric_series(run_id, f"m{k}", buckets=None).points_total for k in range(100))
            == 100_000
        )
        assert store.metric_series(run_id, "m3").steps == list(range(1000))
        assert math.isnan(store.latest_metrics(run_id)["nan"].value)
        assert run.code.get("kind") == "git" and len(run.code["commit"]) == 40
        assert run.env["python"] and run.command[0] == "-c"


def test_system_samples_from_two_readings() -> None:
    before = {"cpu_total": 100.0, "cpu_busy": 40.0, "disk_read": 0.0, "net_sent": 10.0}
    after = {
        "cpu_total": 200.0,
        "cpu_busy": 90.0,
        "memory_used": 2.0,
        "memory_total": 8.0,
        "disk_read": 4096.0,
        "net_sent": 5.0,  # a counter that went back (an interface reset): no negative rate
    }
    sample = dict(sample_between(before, after, 2.0))
    assert sample == {
        "cpu_percent": 50.0,
        "memory_used": 2.0,
        "memory_percent": 25.0,
        "disk_read_bps": 2048.0,
        "net_sent_bps": 0.0,
    }


def test_the_sampler_records_this_machine(tmp_path: Path) -> None:
    from lakecache.tracking.sampler import SystemSampler

    backend = Backend()
    run = Run(3, backend, spool=tmp_path)
    sampler = SystemSampler(run.log_system, interval=0.1).start()
    deadline = time.monotonic() + 30
    while sampler.samples < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sampler.stop()
    run.end()
    keys = {k for b in backend.sink.batches for k in b.system}
    assert {"cpu_percent", "memory_used", "memory_percent"} <= keys


def test_commits_read_while_a_run_is_open_are_recorded_with_it(tmp_path: Path) -> None:
    from lakecache.integrations.reads import ReadRecord, announce
    from lakecache.tracking import start

    settings = Settings(home=tmp_path / "home", author="reader")
    read = ReadRecord("xray", "c" * 64, "cache", files=9, bytes=9000, cache_id=3, reader="fsspec")
    with start("reads", settings=settings, system_metrics=False) as run:
        announce(read)
        announce(read)  # the same commit opened again: recorded once
    announce(ReadRecord("xray", "d" * 64, "stream", files=1, bytes=1))  # after the run: not its
    with Catalog.open(settings.catalog_url) as catalog:
        (got,) = TrackingStore(catalog).run_inputs(run.id)
    assert (got.dataset, got.commit_id, got.source, got.hit) == ("xray", "c" * 64, "cache", True)
    assert (got.files, got.bytes, got.reader) == (9, 9000, "fsspec")
