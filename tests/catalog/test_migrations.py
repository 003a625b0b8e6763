"""Opening a catalog migrates it: once, idempotently, and safely from several processes."""

from __future__ import annotations

import importlib
import pkgutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

import lakecache
import lakecache.catalog
from lakecache.catalog import Catalog
from lakecache.catalog.db import MIGRATIONS_DIR
from lakecache.catalog.tables import VERSION_TABLE, metadata
from lakecache.errors import CatalogError, UserError

SRC = Path(lakecache.__file__).resolve().parents[1]


def _head() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def _current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    finally:
        engine.dispose()


def test_open_migrates_to_head_and_reopen_is_idempotent(catalog_url: str) -> None:
    with Catalog.open(catalog_url) as cat:
        cat.create_dataset("kept", "alice")
    head = _head()
    assert head is not None and _current_revision(catalog_url) == head
    with Catalog.open(catalog_url) as cat:
        assert [d.name for d in cat.list_datasets()] == ["kept"]
    assert _current_revision(catalog_url) == head


def _import_table_modules() -> None:
    """Import every ``lakecache.catalog.*tables`` module, so ``metadata`` holds all tables."""
    for module in pkgutil.iter_modules(lakecache.catalog.__path__):
        if module.name.endswith("tables"):
            importlib.import_module(f"lakecache.catalog.{module.name}")
    # Domains outside catalog/ keep their tables next to their code, on the same metadata.
    importlib.import_module("lakecache.compute.tables")
    importlib.import_module("lakecache.tracking.tables")
    importlib.import_module("lakecache.flows.tables")


def test_table_modules_match_the_migrated_schema(catalog: Catalog, catalog_url: str) -> None:
    _import_table_modules()
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, metadata) if not _is_version_table(d)]
    finally:
        engine.dispose()
    assert diff == []


def _is_version_table(diff: object) -> bool:
    return isinstance(diff, tuple) and getattr(diff[1], "name", None) == VERSION_TABLE


def test_processes_opening_a_new_catalog_at_once_all_succeed(catalog_url: str) -> None:
    script = (
        "import sys\n"
        "from lakecache.catalog import Catalog\n"
        "with Catalog.open(sys.argv[1]) as cat:\n"
        "    cat.list_datasets()\n"
    )
    env = {"PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, catalog_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    assert [rc for rc, _ in results] == [0] * 6, [err for _, err in results if err]
    assert _current_revision(catalog_url) == _head()


def test_a_catalog_from_a_newer_lakecache_is_refused(catalog_url: str) -> None:
    Catalog.open(catalog_url).close()
    engine = create_engine(catalog_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(CatalogError, match="newer") as info:
        Catalog.open(catalog_url)
    assert "Upgrade lakecache" in info.value.hint


def test_sqlite_catalog_uses_wal_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "catalog.db"
    with Catalog.open(f"sqlite:///{path}") as cat:
        cat.create_dataset("x", "alice")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


@pytest.mark.parametrize(
    "url", ["not a url", "mysql+pymysql://u@h/db", "sqlite://", "sqlite:///:memory:"]
)
def test_unusable_urls_are_user_errors(url: str) -> None:
    with pytest.raises(UserError) as info:
        Catalog.open(url)
    assert info.value.hint


def test_unreachable_postgres_is_a_catalog_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with pytest.raises(CatalogError, match=f"127.0.0.1:{port}") as info:
        Catalog.open(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert "reachable" in info.value.hint
