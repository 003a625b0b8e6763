"""Lake garbage collection over the lake of A and B plus three deleted datasets.

Runs after lakecache-a and lakecache-b, on their lake and catalog: commits three
more datasets (each a few hundred files of its own), deletes them, then times
one ``lakecache lake gc`` (grace 0: the whole sweep in one run) in a child
process, for its wall time and peak memory.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO, Bench, BenchError, say, timed
from lakecache_ops import _settings_dict

#: Deleted datasets and the files of each.
DELETED = 3
FILES_EACH = 300


def lake_gc(bench: Bench) -> None:
    """Time a collection of a lake holding A and B and three deleted datasets."""
    for i in range(DELETED):
        folder = bench.scratch(f"gc-deleted-{i}")
        for n in range(FILES_EACH):
            (folder / f"{n:04}.bin").write_bytes(os.urandom(4096))
        say(f"lake gc: dataset deleted-{i} ({FILES_EACH} files), committed then deleted")
        _child(bench, "make-deleted", dataset=f"deleted-{i}", path=str(folder))
    say("lake gc: one collection (grace 0)")
    run, out = _child(bench, "gc")
    if out["deleted"] == 0:
        raise BenchError("lake gc deleted nothing although three datasets were deleted")
    bench.record("gc.s", run.seconds, "s", "lake gc of A, B and 3 deleted datasets")
    bench.record("gc.peak_mib", run.peak_mib, "MiB", "lake gc peak memory")
    bench.record("gc.deleted", out["deleted"], "", "objects lake gc deleted")
    bench.record("gc.freed_mib", out["bytes_freed"] / (1 << 20), "MiB", "bytes lake gc freed")


def _child(bench: Bench, op: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    config = json.dumps({"settings": _settings_dict(bench), **args})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    run = timed([sys.executable, Path(__file__), op, config], env=env, cwd=REPO, check=False)
    if run.returncode != 0:
        raise BenchError(f"lake gc {op} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return run, json.loads(run.stdout.strip().splitlines()[-1])


def _child_main(op: str, config_json: str) -> None:
    from datetime import timedelta

    from lakecache import Dataset, Settings
    from lakecache.catalog.accounts import Accounts
    from lakecache.data.gc import collect
    from lakecache.data.hub import Hub

    config = json.loads(config_json)
    s = config["settings"]
    hub = Hub(Settings(home=Path(s.pop("home")), **s), remote=False)
    try:
        t = time.perf_counter()
        if op == "make-deleted":
            ds = Dataset.create(config["dataset"], hub=hub, exist_ok=True)
            ds.commit(config["path"], message="to be deleted")
            Accounts(hub.catalog).delete_dataset(config["dataset"])
            result: dict[str, Any] = {}
        elif op == "gc":
            done = collect(hub.lake, hub.catalog, grace=timedelta(0))
            result = {"deleted": done.deleted, "bytes_freed": done.bytes_freed}
        else:
            raise SystemExit(f"unknown op {op!r}")
        result["op_seconds"] = time.perf_counter() - t
        print(json.dumps(result))
    finally:
        hub.close()


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
