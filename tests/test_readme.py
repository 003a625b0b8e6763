"""The README's quickstarts run as written, on a small chest-X-ray-shaped folder.

Each code block under a quickstart heading is taken from README.md itself, so
a command renamed or an argument changed in the code fails here until the
README says the same. Only what cannot run in a test is adapted, and said so:
``pip install`` is skipped, the mount path ``/mnt/lakecache`` becomes a
temporary folder, ``lakecache agent`` does one pass (``--once``), and the
"fix some labels" comment becomes a real change to the folder.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import write

from lakecache.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"


def section_blocks(heading: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block under the ``## heading`` section."""
    text = README.read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", section, re.S)]


def make_chest_xray(root: Path) -> Path:
    for i in range(120):
        write(root, f"train/{i:05d}.png", f"train image {i}".encode() * 40, age=10)
    for i in range(6):
        write(root, f"PNEUMONIA/{i:05d}.png", f"pneumonia {i}".encode() * 40, age=10)
        write(root, f"NORMAL/{i:05d}.png", f"normal {i}".encode() * 40, age=10)
    write(root, "labels.csv", b"path,label\n", age=10)
    return root


def run_cli_block(
    code: str, capsys: pytest.CaptureFixture[str], on_comment: dict[str, object]
) -> list[str]:
    """Run every ``lakecache`` line of a shell block in-process; returns what they printed."""
    outputs = []
    for line in code.splitlines():
        for marker, action in on_comment.items():
            if marker in line:
                action()  # type: ignore[operator]
        words = shlex.split(line, comments=True)
        if not words or words[0] == "pip":
            continue
        assert words[0] == "lakecache", f"not a lakecache command: {line!r}"
        if words[1:3] == ["agent", "--site"] and "--once" not in words:
            words.append("--once")  # the README's agent runs forever
        code_ = main(words[1:])
        out, err = capsys.readouterr()
        assert code_ == 0, f"{line!r} failed:\n{out}\n{err}"
        outputs.append(out)
    return outputs


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAKECACHE_AUTHOR", "readme")
    for k in ("LAKECACHE_LAKE", "LAKECACHE_CATALOG", "LAKECACHE_S3_ENDPOINT", "LAKECACHE_SERVER"):
        monkeypatch.delenv(k, raising=False)
    make_chest_xray(tmp_path / "chest-xray")
    return tmp_path


def test_the_cli_and_cache_quickstarts(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fix_labels() -> None:
        write(workdir / "chest-xray", "labels.csv", b"path,label\ntrain/00001.png,1\n", age=5)
        write(workdir / "chest-xray", "PNEUMONIA/00100.png", b"a new image", age=5)

    [(_, cli)] = section_blocks("Quickstart: the CLI")
    out = run_cli_block(cli, capsys, {"fix some labels": fix_labels})
    assert any("2 files" in o or "modified" in o for o in out)
    assert sorted(p.name for p in (workdir / "out" / "PNEUMONIA").iterdir())[:1] == ["00000.png"]

    # The caches quickstart names commits v3 and v4 of the same dataset.
    assert main(["data", "tag", "xray", "v3"]) == 0
    write(workdir / "chest-xray", "train/00002.png", b"relabelled", age=5)
    assert main(["data", "commit", "xray", "./chest-xray", "-m", "v4", "-q", "-t", "v4"]) == 0
    capsys.readouterr()
    blocks = section_blocks("Quickstart: caches")
    shell = next(code for lang, code in blocks if lang != "python")
    shell = shell.replace("/mnt/lakecache", str(workdir / "mnt-lakecache"))
    run_cli_block(shell, capsys, {})
    python = next(code for lang, code in blocks if lang == "python")
    trained: list[Path] = []
    exec(compile(python, "README.md (caches)", "exec"), {"train": trained.append})
    assert trained and trained[0].is_dir() and any(trained[0].iterdir())


def test_the_python_quickstart(workdir: Path) -> None:
    [(lang, code)] = section_blocks("Quickstart: Python")
    assert lang == "python"
    exec(compile(code, "README.md (Python)", "exec"), {})
    assert (workdir / "out" / "PNEUMONIA" / "00000.png").is_file()
