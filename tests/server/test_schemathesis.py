"""Property-based checks of the server against its own OpenAPI spec (schemathesis).

Random requests for every operation, as an org admin (the most doors open):
no 500, every status and content type documented, every body matching its
schema. Bounded by a small number of examples per operation.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from server.live import World

# A job's outputs travel as one tar: fuzz it with arbitrary bytes, as raw uploads are.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_world(world_factory: Callable[..., World]) -> World:
    return world_factory(agents=False)


def test_api_keeps_to_its_spec(fuzz_world: World) -> None:
    # The spec is built on the first request (seconds of CPU): a loaded machine needs more than
    # schemathesis's 10 s default to get it.
    schema = schemathesis.openapi.from_url(f"{fuzz_world.url}/api/v1/openapi.json", timeout=120)
    accounts = fuzz_world.plane.accounts

    def admin_headers() -> dict[str, str]:
        # A fresh token per case: a random DELETE /tokens/{id} or logout may end the last one.
        now = fuzz_world.plane.clock.now()
        _, token = accounts.create_token("admin", "fuzz", now=now, expires_at=None)
        return {"Authorization": f"Bearer {token}"}

    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=admin_headers(), checks=CHECKS)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 40
    assert not failures, "\n\n".join(failures)


def test_the_fuzzing_got_past_the_login(fuzz_world: World) -> None:
    """Most requests reached the endpoints' logic (not only 401s)."""
    text = fuzz_world.call(None, "GET", "/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("lakecache_http_requests_total"):
            status = line.split('status="')[1][:3]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    assert sum(counts.values()) > 300
    assert counts.get("401", 0) < 0.2 * sum(counts.values()), counts
    assert not any(s.startswith("5") for s in counts), counts
