"""The tracking routes against the server's own OpenAPI spec (schemathesis): random
requests as an org admin, no 500, every status, content type and body as documented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from server.live import World, build_world

from lakecache.server.app import create_app
from lakecache.tracking.store import TrackingStore

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("tracking-fuzz")
    w = build_world(base / "home", base / "src")
    yield w
    w.server.stop()
    w.plane.close()


def test_tracking_routes_keep_to_the_spec(world: World) -> None:
    # A run with points, so that generated ids (small integers) often hit a real one.
    store = TrackingStore(world.plane.hub.catalog)
    for _ in range(3):
        store.create_run("Default", user="admin")
    app = create_app(world.settings, world.plane.config, plane=world.plane)
    spec = app.openapi()  # in process: the spec of ~100 routes is slow to build on a busy box
    schema = schemathesis.openapi.from_dict(spec)
    accounts = world.plane.accounts

    def admin_headers() -> dict[str, str]:
        _, token = accounts.create_token(
            "admin", "fuzz", now=world.plane.clock.now(), expires_at=None
        )
        return {"Authorization": f"Bearer {token}"}

    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if "/tracking/" not in operation.path:
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=world.url, headers=admin_headers(), checks=CHECKS)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)
