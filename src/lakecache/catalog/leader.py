"""Periodic work done by one process at a time, however many replicas share the catalog.

Several ``lakecache server`` replicas (and several agents of a site) run the same
loops: maintenance and lake gc in the servers, cache gc (TTL eviction planning) and job
scheduling in the agents. Each pass is safe to run twice (claims and publishes are
compare-and-set), but twice is wasted work, and two lake collections at once race for
the same objects. :func:`exclusive` makes a pass run in one process at a time:

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection
  held for the pass. A process that dies mid-pass loses its connection and so the lock:
  another replica takes the work at its next pass, with no lease to expire first.
* SQLite: ``flock`` on a file beside the database (all its processes share a machine).
  An in-memory database has one process: a lock per name in this process.
* A catalog reached through a server: no lock here (the server fences what it is asked).

It never waits: a pass that finds the lock taken is skipped (``held`` is False), since
another process is doing the same work right now.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from lakecache.catalog.db import Catalog

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for ``name`` (signed, as PostgreSQL takes it)."""
    digest = hashlib.blake2b(f"lakecache:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def exclusive(catalog: Any, name: str) -> Iterator[bool]:
    """Hold the cluster-wide lock ``name`` for the block if it is free; yield whether held.

    ``catalog`` is the hub's catalog (a remote one yields True: the server fences).
    Raises what the database raises when it cannot be reached (the caller's pass fails
    as it would have anyway).
    """
    if not isinstance(catalog, Catalog):
        yield True
        return
    engine = catalog._engine
    if engine.dialect.name == "postgresql":
        with _advisory(engine, lock_key(name)) as held:
            yield held
        return
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        with _in_process(f"{id(engine)}:{name}") as held:
            yield held
        return
    with _file_lock(Path(f"{database}.{_slug(name)}.lock")) as held:
        yield held


@contextlib.contextmanager
def _advisory(engine: Any, key: int) -> Iterator[bool]:
    with engine.connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()  # not inside a transaction for the whole pass
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _in_process(name: str) -> Iterator[bool]:
    with _local_guard:
        lock = _local_locks.setdefault(name, threading.Lock())
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
