"""A throwaway PostgreSQL server for tests and demos, from the Debian ``postgresql`` package.

:func:`start_postgres` runs ``initdb`` and ``pg_ctl`` from the newest
``/usr/lib/postgresql/*/bin`` in a fresh folder, on a free port of 127.0.0.1
only, with ``fsync=off`` (the data is thrown away, so durability only costs
time). ``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` user through ``runuser``; that user must then be able to reach the
folder, which is why it lives directly under a world-traversable base such as
``/tmp`` and not inside pytest's private (mode 0700) temporary tree.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "Install PostgreSQL with `apt-get install -y postgresql`."
_START_ATTEMPTS = 3


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL binaries are missing, or the server would not start."""


class PostgresServer:
    """A running server; :meth:`stop` shuts it down and deletes its files."""

    def __init__(self, root: Path, bindir: Path, port: int, run_as: str | None) -> None:
        self.root = root
        self.bindir = bindir
        self.port = port
        self._run_as = run_as
        self._stopped = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (superuser, trust auth)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            _run(
                self._run_as,
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                cwd=self.root,
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, root={str(self.root)!r})"


def find_bindir() -> Path:
    """The ``bin`` folder of the newest installed PostgreSQL, or PostgresUnavailableError."""
    candidates = []
    if PG_ROOT.is_dir():
        for version in PG_ROOT.iterdir():
            bindir = version / "bin"
            if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
                key = tuple(int(p) if p.isdigit() else 0 for p in version.name.split("."))
                candidates.append((key, bindir))
    if not candidates:
        raise PostgresUnavailableError(
            f"no PostgreSQL server under {PG_ROOT}/*/bin. {INSTALL_HINT}"
        )
    return max(candidates)[1]


def start_postgres(base: Path | str | None = None) -> PostgresServer:
    """Initialise and start a new server in a fresh folder under ``base`` (default: /tmp).

    About a second. As root, ``base`` and all its parents must be traversable
    by others (mode o+x) so that the ``postgres`` user can reach the folder.
    """
    bindir = find_bindir()
    base = Path(base if base is not None else tempfile.gettempdir())
    run_as = "postgres" if os.geteuid() == 0 else None
    if run_as is not None:
        _check_traversable(base)
    root = Path(tempfile.mkdtemp(prefix="lakecache-pg-", dir=base))
    try:
        if run_as is not None:
            shutil.chown(root, run_as, run_as)
        _run(
            run_as,
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=root,
        )
        for attempt in range(_START_ATTEMPTS):
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _run(
                    run_as,
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(root / "data"),
                        "-l",
                        str(root / "log"),
                        "-w",
                        "-o",
                        options,
                        "start",
                    ],
                    cwd=root,
                )
            except PostgresUnavailableError:
                # Most likely another process took the port between the probe and the bind.
                if attempt == _START_ATTEMPTS - 1:
                    raise
                time.sleep(0.2)
                continue
            return PostgresServer(root, bindir, port, run_as)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise AssertionError("unreachable")


def _run(run_as: str | None, argv: list[str], cwd: Path) -> None:
    if run_as is not None:
        argv = ["runuser", "-u", run_as, "--", *argv]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        log = cwd / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise PostgresUnavailableError(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_traversable(base: Path) -> None:
    for folder in [base.resolve(), *base.resolve().parents]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            raise PostgresUnavailableError(
                f"{folder} is not traversable by other users, so the postgres user cannot "
                f"reach a server folder under {base}; start it under /tmp instead"
            )
