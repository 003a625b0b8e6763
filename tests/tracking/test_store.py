"""The tracking store on SQLite and PostgreSQL: runs, batches, NaN/inf, sorting, downsampling."""

from __future__ import annotations

import math

import pytest

from lakecache.errors import NotFoundError, UserError
from lakecache.tracking.model import Batch, RunFilter, check_key
from lakecache.tracking.store import TrackingStore


def test_run_roundtrip_with_params_tags_and_special_values(store: TrackingStore) -> None:
    run = store.create_run("exp", user="alice", command=["python", "train.py"], env={"python": "3"})
    assert run.name == f"run-{run.id}" and run.status == "running" and run.experiment == "exp"
    store.log_batch(
        run.id,
        Batch.of(
            params={"lr": "0.1"},
            tags={"team": "vision"},
            metrics=[
                ("loss", 1.0, 0, 1000),
                ("loss", math.nan, 1, 1001),
                ("gain", math.inf, 0, 1000),
                ("drop", -math.inf, 0, 1000),
            ],
        ),
    )
    store.log_batch(run.id, Batch.of(params={"lr": "0.2"}))
    assert store.run_params(run.id) == {"lr": "0.2"}
    assert store.run_tags(run.id) == {"team": "vision"}
    latest = store.latest_metrics(run.id)
    assert math.isnan(latest["loss"].value) and latest["loss"].step == 1
    assert latest["gain"].value == math.inf and latest["drop"].value == -math.inf
    series = store.metric_series(run.id, "loss")
    assert series.steps == [0, 1] and series.values[0] == 1.0 and math.isnan(series.values[1])
    store.end_run(run.id, "failed", exit_code=3)
    ended = store.get_run(run.id)
    assert ended.status == "failed" and ended.exit_code == 3 and ended.duration_s is not None
    assert ended.command == ["python", "train.py"]


def test_latest_point_only_moves_forward(store: TrackingStore) -> None:
    run = store.create_run("exp", user="alice")
    store.log_batch(run.id, Batch.of(metrics=[("acc", 0.9, 10, 5)]))
    store.log_batch(run.id, Batch.of(metrics=[("acc", 0.1, 3, 9)]))  # an older step, late
    assert store.latest_metrics(run.id)["acc"].value == 0.9


def test_runs_sort_filter_and_page_by_param_and_metric(store: TrackingStore) -> None:
    ids = []
    for i in range(7):
        run = store.create_run("sweep", user="alice" if i % 2 == 0 else "bob")
        store.log_batch(
            run.id,
            Batch.of(params={"lr": f"0.{i}"}, metrics=[("loss", 10.0 - i, 0, 0)]),
        )
        ids.append(run.id)
    page = store.list_runs("sweep", order_by="metric:loss", descending=False, limit=3)
    assert page.total == 7 and [s.run.id for s in page.items] == ids[::-1][:3]
    assert page.items[0].metrics == {"loss": 4.0} and page.items[0].params == {"lr": "0.6"}
    second = store.list_runs("sweep", order_by="metric:loss", descending=False, limit=3, offset=3)
    assert [s.run.id for s in second.items] == ids[::-1][3:6]
    cheap = store.list_runs("sweep", filters=[RunFilter.parse("metric:loss<6.5")])
    assert sorted(s.run.id for s in cheap.items) == ids[4:]
    by_param = store.list_runs("sweep", filters=[RunFilter.parse("param:lr=0.2")])
    assert [s.run.id for s in by_param.items] == [ids[2]]
    bobs = store.list_runs("sweep", visible_to="bob")
    assert {s.run.user for s in bobs.items} == {"bob"} and bobs.total == 3
    only = store.list_runs("sweep", order_by="param:lr", limit=1, params=[], metrics=["loss"])
    assert only.items[0].params == {} and only.items[0].metrics == {"loss": 4.0}


def test_long_series_is_downsampled_with_min_and_max(store: TrackingStore) -> None:
    run = store.create_run("exp", user="alice")
    points = [("x", float(i % 100), i, i) for i in range(20_000)]
    points[12_345] = ("x", 1e6, 12_345, 12_345)  # a spike survives downsampling
    store.log_batch(run.id, Batch.of(metrics=points))
    series = store.metric_series(run.id, "x", buckets=100)
    assert series.downsampled and series.points_total == 20_000
    assert len(series.steps) == 100 and series.steps[0] == 0
    assert max(series.maxs) == 1e6 and min(series.mins) == 0.0
    full = list(store.iter_metric_points(run.id, "x"))
    assert len(full) == 20_000 and full[12_345].value == 1e6


def test_experiments_visibility_and_errors(store: TrackingStore) -> None:
    store.create_experiment("private", "alice")
    store.create_run("private", user="alice")
    store.create_run("jobs", user="bob")
    names = {e.name: e.run_count for e in store.list_experiments(visible_to="bob")}
    assert names == {"jobs": 1}
    assert {e.name for e in store.list_experiments()} == {"private", "jobs"}
    with pytest.raises(NotFoundError):
        store.get_run(999_999)
    with pytest.raises(NotFoundError):
        store.log_batch(999_999, Batch.of(params={"a": "b"}))


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("x" * 251, "251 characters long \\(at most 250\\)"),
        ("", "empty"),
        ("bad\udcffname", "not valid UTF-8"),
        (b"\xff\xfe", "not UTF-8"),
        ("a\nb", "control characters"),
    ],
)
def test_bad_names_get_clear_errors(name: object, words: str) -> None:
    with pytest.raises(UserError, match=words) as info:
        check_key("metric", name)
    assert info.value.hint


def test_artifacts_and_logs_are_content_addressed(store: TrackingStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lakecache.lake.local import LocalLake
    from lakecache.tracking import objects

    lake = LocalLake(tmp_path / "lake")
    run = store.create_run("exp", user="alice")
    f = tmp_path / "model.bin"
    f.write_bytes(b"weights" * 1000)
    d1 = objects.log_artifact(store, lake, run.id, f, "ckpt/model.bin")
    d2 = objects.log_artifact(store, lake, run.id, f, "ckpt/copy.bin")
    assert d1 == d2 and len(list(lake.list(objects.PREFIX))) == 1
    assert objects.read_artifact(store, lake, run.id, "ckpt/model.bin") == b"weights" * 1000
    assert [a.path for a in store.list_artifacts(run.id, "ckpt")] == [
        "ckpt/copy.bin",
        "ckpt/model.bin",
    ]
    objects.append_log(store, lake, run.id, "stdout", b"hello ")
    objects.append_log(store, lake, run.id, "stdout", b"world\n")
    assert objects.read_log(store, lake, run.id, "stdout") == b"hello world\n"
    assert objects.read_log(store, lake, run.id, "stdout", offset=3, limit=5) == b"lo wo"
    assert store.list_logs(run.id) == {"stdout": 12}
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b"):
        with pytest.raises(UserError):
            objects.log_artifact(store, lake, run.id, f, bad)


def test_downsampling_with_and_without_numpy_agree() -> None:
    from lakecache.tracking import points

    n = 5000
    steps = [i * 3 for i in range(n)]
    vals = [math.nan if i % 97 == 0 else math.sin(i / 50) for i in range(n)]
    vals[10:20] = [math.nan] * 10
    cols = {"k": (steps[::-1], steps[::-1], vals[::-1])}  # logged backwards: sorted on read
    (chunk,) = points.pack(cols)
    fast = points.series([(chunk.steps, chunk.times, chunk.vals)], 100)
    slow = points.downsample(steps, steps, vals, 100)
    assert fast.downsampled and fast.steps == slow.steps and fast.times == slow.times
    for a, b in ((fast.mins, slow.mins), (fast.maxs, slow.maxs), (fast.means, slow.means)):
        assert len(a) == len(b)
        assert all(
            (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)
            for x, y in zip(a, b, strict=True)
        )
