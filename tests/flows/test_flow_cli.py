"""``lakecache flow`` from the command line, directly on the catalog, with a real agent."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lakecache.cli.main import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT", "LAKECACHE_SERVER"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


FLOW = """\
name: cli
params: {word: hello}
tasks:
  make:
    command: mkdir "$LAKECACHE_OUTPUTS/w" && echo {params.word} > "$LAKECACHE_OUTPUTS/w/word"
    queue: q
    outputs: [w]
  shout:
    command: >-
      tr a-z A-Z < "$LAKECACHE_INPUT_W/w/word"
      && test "$(cat $LAKECACHE_INPUT_W/w/word)" = bye
    queue: q
    inputs: {w: {task: make}}
"""


def test_flow_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "site", "add", "onprem")
    ok(capsys, "volume", "add", "v", "-s", "onprem", "-r", str(env / "vol"), "-c", "1GB")
    ok(capsys, "compute", "add", "pool", "-s", "onprem", "--cpu", "2", "--memory", "4GB")
    ok(capsys, "template", "add", "small", "-c", "pool", "--cpu", "1", "--memory", "1GB")
    ok(capsys, "queue", "add", "q", "-t", "small")
    path = env / "cli.yaml"
    path.write_text(FLOW)

    checked = ok(capsys, "flow", "check", str(path))
    assert "make" in checked and "shout" in checked and "no mistakes" in checked

    started = ok(capsys, "flow", "run", str(path), "-p", "word=bye")
    assert started.startswith("flow run 1 (cli, 2 task(s)) started")
    for _ in range(6):
        ok(capsys, "agent", "--site", "onprem", "--once")
        shown = json.loads(ok(capsys, "flow", "show", "1", "--json"))
        if shown["state"] != "running":
            break
    assert shown["state"] == "succeeded", shown
    assert shown["params"] == {"word": "bye"}
    assert [(t["name"], t["depth"], t["state"]) for t in shown["tasks"]] == [
        ("make", 0, "succeeded"),
        ("shout", 1, "succeeded"),
    ]
    assert ok(capsys, "job", "logs", str(shown["tasks"][1]["job_id"])).strip() == "BYE"

    readable = ok(capsys, "flow", "show", "1")
    assert "flow run 1: cli succeeded" in readable and "└ shout" in readable
    listed = ok(capsys, "flow", "ls")
    assert "cli" in listed and "2 succeeded" in listed

    code, _, err = run(capsys, "flow", "cancel", "1")
    assert code == 1 and "already succeeded" in err
    code, _, err = run(capsys, "flow", "resume", "1")
    assert code == 1 and "nothing to re-run" in err and "hint:" in err


def test_a_bad_flow_file_runs_nothing_and_lists_every_mistake(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = env / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: bad
            tasks:
              a: {command: "echo {params.x}", queue: nowhere, after: [b]}
              b: {command: "true", queue: nowhere, after: [a]}
            """
        )
    )
    code, _, err = run(capsys, "flow", "run", str(path))
    assert code == 1
    assert "bad.yaml: 4 mistakes; nothing was run" in err
    assert "bad.yaml:3 tasks.a.queue: unknown queue 'nowhere'" in err
    assert "cycle: a -> b -> a" in err or "cycle: b -> a -> b" in err
    assert "{params.x} names no param" in err and "hint: Fix each line" in err
    assert json.loads(ok(capsys, "flow", "ls", "--json")) == []
    code, _, err = run(capsys, "flow", "run", str(env / "missing.yaml"))
    assert code == 1 and "cannot read flow file" in err
    code, _, err = run(capsys, "flow", "run", str(path), "-p", "oops")
    assert code == 1 and "is not KEY=VALUE" in err
