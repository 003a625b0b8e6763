"""What a failure tells a client: a request id and "internal error", nothing of its cause.

The cause goes to the server log under the same request id, with the traceback.
Fails on the code before: a catalog that could not be reached answered 503 with
the database's URL (user, host, port, database) in the body, to anyone, before
login.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from lakecache.server import ControlPlane, ServerConfig, create_app
from lakecache.settings import Settings
from server.live import ADMIN_PASSWORD, LiveServer

pytestmark = pytest.mark.postgres

#: The ``postgres`` fixture's server (tests/fixtures/postgres.py): ``.port`` is all we use.
PostgresServer = Any

ROLE = "lc_catalog_owner"
SECRET = "Pw-never-in-a-body-7f3a9c"
DATABASE = "lc_errors_catalog"


def _admin(postgres: PostgresServer) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", dbname="postgres", autocommit=True
    )


@pytest.fixture
def catalog_url(postgres: PostgresServer) -> Iterator[str]:
    """A catalog database owned by a role with a password, both named in its URL."""
    with _admin(postgres) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(SECRET)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(ROLE)
            )
        )
    yield f"postgresql+psycopg://{ROLE}:{SECRET}@127.0.0.1:{postgres.port}/{DATABASE}"
    with _admin(postgres) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def _break(postgres: PostgresServer) -> None:
    """Take the catalog's database away for real: no new connections, open ones cut."""
    with _admin(postgres) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(DATABASE))
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (DATABASE,),
        )


def test_a_broken_catalog_answers_internal_error_and_a_request_id_and_logs_the_rest(
    tmp_path: Path,
    postgres: PostgresServer,
    catalog_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(home=tmp_path / "home", catalog_url=catalog_url, workers=2)
    config = ServerConfig(agents=False, admin_password=ADMIN_PASSWORD)
    plane = ControlPlane.open(settings, config)
    server = LiveServer(create_app(settings, config, plane=plane))
    caplog.set_level(logging.INFO, logger="lakecache.server")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            ok = c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD})
            assert ok.status_code == 200 and len(ok.headers["x-request-id"]) == 16
            csrf = {"X-CSRF-Token": ok.json()["csrf_token"]}
            _break(postgres)
            failures = [
                # Before any login: what anyone on the network can reach.
                httpx.post(
                    f"{server.url}/api/v1/auth/login",
                    json={"name": "admin", "password": "wrong-password"},
                ),
                httpx.post(
                    f"{server.url}/api/v1/auth/token",
                    json={"name": "admin", "password": ADMIN_PASSWORD},
                ),
                # Logged in (the session's own lookup fails first).
                c.get("/api/v1/datasets"),
                c.post("/api/v1/datasets", json={"name": "new"}, headers=csrf),
            ]
    finally:
        server.stop()
        plane.close()
    ids = set()
    for r in failures:
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        request_id = r.headers["x-request-id"]
        assert error["code"] == "catalog_unavailable"
        assert error["message"] == f"internal error (request id {request_id})"
        assert error["request_id"] == request_id and request_id in error["hint"]
        for secret in (SECRET, ROLE, DATABASE, str(postgres.port), "127.0.0.1", "postgresql"):
            assert secret not in r.text
        ids.add(request_id)
        # The server log has what went wrong, under that id, with the traceback.
        logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
        assert logged and logged[0].levelno == logging.ERROR and logged[0].exc_info
        assert DATABASE in logged[0].getMessage()
    assert len(ids) == len(failures)  # one id per request


def test_every_response_carries_its_own_request_id(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", workers=2)
    config = ServerConfig(agents=False, admin_password=ADMIN_PASSWORD)
    plane = ControlPlane.open(settings, config)
    server = LiveServer(create_app(settings, config, plane=plane))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            responses = [
                c.get("/healthz"),
                c.get("/api/v1/datasets"),  # 401
                c.get("/api/v1/nothing-here"),  # 404
                c.get("/api/v1/datasets/a%2fb"),  # refused before routing
                c.get("/login"),
            ]
    finally:
        server.stop()
        plane.close()
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    for r in responses[1:4]:
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
