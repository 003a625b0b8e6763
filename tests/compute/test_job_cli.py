"""Compute from the command line and from Python: capacity, templates, queues, jobs, agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_files

import lakecache
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


def _world(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "data", "init", "xray")
    src = make_files(env / "src", n=6, size=500)
    ok(capsys, "data", "commit", "xray", str(src), "-m", "v1", "-q", "-t", "v1")
    for site, cpus in (("onprem", "1"), ("cloud", "4")):
        ok(capsys, "site", "add", site)
        root = str(env / f"vol-{site}")
        ok(capsys, "volume", "add", f"{site}-vol", "-s", site, "-r", root, "-c", "1GB")
        out = ok(
            capsys, "compute", "add", f"{site}-pool", "-s", site, "--cpu", cpus, "--memory", "8GB"
        )
        assert f"cpu {cpus}, memory 8.0 GB" in out
        ok(
            capsys,
            "template",
            "add",
            f"{site}-small",
            "-c",
            f"{site}-pool",
            "--cpu",
            "1",
            "--memory",
            "1GB",
        )
    ok(capsys, "queue", "add", "burst", "-t", "onprem-small", "-t", "cloud-small")


def test_jobs_from_the_command_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _world(env, capsys)
    templates = json.loads(ok(capsys, "template", "ls", "--json"))
    assert [(t["name"], t["site"], t["cpu"]) for t in templates] == [
        ("cloud-small", "cloud", 1.0),
        ("onprem-small", "onprem", 1.0),
    ]
    (queue,) = json.loads(ok(capsys, "queue", "ls", "--json"))
    assert queue["templates"] == ["onprem-small", "cloud-small"] and queue["policy"] == "order"

    first = json.loads(
        ok(
            capsys,
            "job",
            "run",
            "-q",
            "burst",
            "-i",
            "xray@v1",
            "--json",
            "-e",
            "GREETING=hello",
            "--",
            "sh",
            "-c",
            'ls -R "$LAKECACHE_INPUT_XRAY" | grep -c png; echo "$GREETING"',
        )
    )
    assert (first["state"], first["site"]) == ("placed", "onprem")
    second = json.loads(ok(capsys, "job", "run", "-q", "burst", "--json", "--", "true"))
    assert (second["state"], second["site"]) == ("placed", "cloud")  # onprem is full
    assert [v["verdict"] for v in second["placement"]] == ["full", "chosen"]

    comp = {c["name"]: c for c in json.loads(ok(capsys, "compute", "ls", "--json"))}
    assert comp["onprem-pool"]["used"]["cpu"] == 1.0 and comp["onprem-pool"]["jobs"] == 1

    ok(capsys, "agent", "--site", "onprem", "--once")
    shown = json.loads(ok(capsys, "job", "show", str(first["id"]), "--json"))
    assert (shown["state"], shown["exit_code"]) == ("succeeded", 0), shown["reason"]
    kinds = [e["kind"] for e in shown["timeline"]]
    assert kinds == [
        "queued",
        "placed",
        "claimed",
        "preparing",
        "data ready",
        "started",
        "succeeded",
    ]
    assert ok(capsys, "job", "logs", str(first["id"])).split() == ["6", "hello"]
    readable = ok(capsys, "job", "show", str(first["id"]))
    assert "verdict" in readable and "lower in order" in readable and "data ready" in readable

    listed = ok(capsys, "job", "ls", "--state", "placed")
    assert str(second["id"]) in listed and "cloud-small" in listed
    assert "cancelled" in ok(capsys, "job", "cancel", str(second["id"]))
    code, _, err = run(capsys, "job", "cancel", str(first["id"]))
    assert code == 1 and "already succeeded" in err


def test_bad_input_is_refused_with_hints(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _world(env, capsys)
    code, _, err = run(capsys, "job", "run", "-q", "nope", "--", "true")
    assert code == 1 and "no queue 'nope'" in err and "hint: List queues" in err
    code, _, err = run(capsys, "job", "run", "-q", "burst", "-i", "chest@v1", "--", "true")
    assert code == 1 and "chest" in err and "hint:" in err
    code, _, err = run(capsys, "job", "run", "-q", "burst", "-i", "xray@v9", "--", "true")
    assert code == 1 and "v9" in err and "hint:" in err
    code, _, err = run(capsys, "job", "run", "-q", "burst", "--cpu", "2", "--", "true")
    assert code == 1 and "larger than every template" in err
    code, _, err = run(capsys, "queue", "add", "q", "-t", "gpu-huge")
    assert code == 1 and "no template 'gpu-huge'" in err and "template ls" in err
    code, _, err = run(capsys, "template", "add", "big", "-c", "onprem-pool", "--cpu", "8")
    assert code == 1 and "larger than compute resource 'onprem-pool'" in err
    code, _, err = run(capsys, "compute", "rm", "onprem-pool")
    assert code == 1 and "onprem-small" in err
    assert json.loads(ok(capsys, "job", "ls", "--json")) == []


def test_submit_and_job_from_python(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _world(env, capsys)
    with lakecache.submit(["sh", "-c", "exit 4"], queue="burst", inputs=["xray@v1:stream"]) as job:
        assert job.state == "placed" and job.record.site == "onprem"
        ok(capsys, "agent", "--site", "onprem", "--once")
        done = job.wait(timeout=30)
        assert (done.state, done.exit_code, done.reason) == ("failed", 4, "exit code 4")
        assert [e.kind for e in job.timeline][-1] == "failed"
        assert job.logs() == ""
    with lakecache.Job(job.id) as again:
        assert again.record.inputs[0].mode == "stream"
    with pytest.raises(lakecache.LakecacheError, match="no job 999"):
        lakecache.Job(999)


def test_outputs_time_limits_and_agent_policy_from_the_command_line(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _world(env, capsys)
    out = ok(
        capsys,
        "queue",
        "add",
        "limited",
        "-t",
        "cloud-small",
        "--job-timeout",
        "1h",
        "--agent-down",
        "move",
    )
    assert "added queue limited" in out
    queues = {q["name"]: q for q in json.loads(ok(capsys, "queue", "ls", "--json"))}
    assert (queues["limited"]["job_timeout_seconds"], queues["limited"]["agent_down"]) == (
        3600,
        "move",
    )
    assert (queues["burst"]["job_timeout_seconds"], queues["burst"]["agent_down"]) == (None, "wait")
    table = ok(capsys, "queue", "ls")
    assert "job limit" in table and "agent down" in table

    wrote = json.loads(
        ok(
            capsys,
            "job",
            "run",
            "-q",
            "burst",
            "--timeout",
            "30s",
            "--json",
            "--",
            "sh",
            "-c",
            'mkdir "$LAKECACHE_OUTPUTS/sub" && echo 42 > "$LAKECACHE_OUTPUTS/sub/answer.txt"'
            ' && ln -s /etc/hostname "$LAKECACHE_OUTPUTS/host"',
        )
    )
    assert wrote["timeout_seconds"] == 30
    limited = json.loads(ok(capsys, "job", "run", "-q", "limited", "--json", "--", "true"))
    assert limited["timeout_seconds"] == 3600
    slow = json.loads(
        ok(capsys, "job", "run", "-q", "burst", "--timeout", "1s", "--json", "--", "sleep", "30")
    )
    code, _, err = run(capsys, "job", "run", "-q", "burst", "--timeout", "0s", "--", "true")
    assert code == 1 and "time limit" in err and "hint:" in err

    ok(capsys, "agent", "--site", "onprem", "--once")
    shown = ok(capsys, "job", "show", str(wrote["id"]))
    assert "outputs: 1 file(s)" in shown and f"lakecache job outputs {wrote['id']}" in shown
    assert "time limit: 30s" in shown or "time limit: 30 s" in shown
    listed = ok(capsys, "job", "outputs", str(wrote["id"]))
    assert "sub/answer.txt" in listed and "host" not in listed.replace("hostname", "")
    got = ok(capsys, "job", "outputs", str(wrote["id"]), "--to", str(env / "got"))
    assert "downloaded 1 file(s)" in got
    assert (env / "got" / "sub" / "answer.txt").read_text() == "42\n"
    assert not (env / "got" / "host").exists()

    assert json.loads(ok(capsys, "job", "show", str(slow["id"]), "--json"))["site"] == "cloud"
    ok(capsys, "agent", "--site", "cloud", "--once")
    timed_out = json.loads(ok(capsys, "job", "show", str(slow["id"]), "--json"))
    assert (timed_out["state"], timed_out["reason"]) == ("failed", "timed out after 1 s")
    assert "has no outputs" in ok(capsys, "job", "outputs", str(slow["id"]))
