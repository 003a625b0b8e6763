"""Every component's command explains itself, and ``lakecache lib`` reaches them all."""

from __future__ import annotations

import pytest

from lakecache.cli.main import main as lakecache_main
from lakecache.library import cli as libcli


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["split", "--help"], ["by patient", "--seed", "--commit"]),
        (["prepare", "--help"], ["--size", "--format", "--on-corrupt", "--profile"]),
        (["image-classifier", "train", "--help"], ["--arch", "--weights", "--no-resume"]),
        (["image-classifier", "evaluate", "--help"], ["--threshold", "--model"]),
        (["pick-best", "--help"], ["--metric", "--upstream"]),
    ],
)
def test_help(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        lakecache_main(["lib", *argv])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in words:
        assert word in text, word


def test_overview_and_unknown_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert libcli.dispatch(["--help"]) == 0
    overview = capsys.readouterr().out
    assert all(name in overview for name in libcli.COMPONENTS)
    assert libcli.dispatch(["train"]) == 2
    err = capsys.readouterr().err
    assert "no component 'train'" in err and "image-classifier" in err
