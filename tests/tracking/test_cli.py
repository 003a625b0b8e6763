"""``lakecache run ls|show`` and ``lakecache experiment ls`` on a real catalog."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lakecache.cli.main import main
from lakecache.settings import Settings
from lakecache.tracking import start


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    for k in ("LAKECACHE_SERVER", "LAKECACHE_TOKEN", "LAKECACHE_CATALOG", "LAKECACHE_LAKE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAKECACHE_AUTHOR", "cli-tester")
    return tmp_path / "home"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_are_listed_sorted_filtered_and_shown(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.load()
    ids = []
    for lr, loss in ((0.1, 0.5), (0.2, 0.25), (0.3, math.nan)):
        with start("cli-exp", settings=settings, system_metrics=False) as run:
            run.log_params({"lr": lr})
            run.log_metric("loss", loss, step=3)
            (tmp_path / "w.bin").write_bytes(b"w" * 2048)
            run.log_artifact(tmp_path / "w.bin")
            ids.append(run.id)
    code, out, _ = _cli(capsys, "experiment", "ls")
    assert code == 0 and "cli-exp" in out and "3" in out
    code, out, _ = _cli(capsys, "run", "ls", "--experiment", "cli-exp", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] == 3
    code, out, _ = _cli(
        capsys, "run", "ls", "--sort", "metric:loss", "--asc", "--filter", "param:lr!=0.1", "--json"
    )
    assert [r["id"] for r in json.loads(out)["items"]] == [ids[1], ids[2]]  # NaN sorts last
    code, out, _ = _cli(capsys, "run", "ls", "--sort", "metric:loss")
    assert code == 0 and "NaN" in out and "lr" in out
    code, out, _ = _cli(capsys, "run", "show", str(ids[0]))
    assert code == 0 and "cli-tester" in out and "w.bin" in out and "0.5" in out
    assert "python" in out
    code, _, err = _cli(capsys, "run", "show", "999")
    assert code == 1 and "no run 999" in err and "lakecache run ls" in err
    code, _, err = _cli(capsys, "run", "ls", "--sort", "colour")
    assert code == 1 and "cannot sort runs by 'colour'" in err
