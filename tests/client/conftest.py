"""Fixtures for the client tests; the servers themselves are built in :mod:`client.world`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.seaweed import drop_bucket, new_bucket

from client.world import LakeWorld, MiB, Recorder, make_lake_world
from lakecache.settings import Settings


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LakeWorld]:
    base = tmp_path_factory.mktemp(f"world-{request.param}")
    # Parts of 5 MiB (S3's smallest) so that multipart uploads stay small in tests.
    common: dict[str, Any] = {"workers": 4, "author": "tester", "part_size": 5 * MiB}
    bucket = None
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        bucket = new_bucket(seaweed)
        settings = Settings(
            home=base / "home",
            lake_url=f"s3://{bucket}/lake",
            s3_endpoint=seaweed.endpoint,
            s3_access_key=seaweed.access_key,
            s3_secret_key=seaweed.secret_key,
            **common,
        )
        secrets = [seaweed.secret_key]
    else:
        settings = Settings(home=base / "home", **common)
        secrets = []
    lw = make_lake_world(base, settings, request.param, secrets)
    try:
        yield lw
    finally:
        lw.world.server.stop()
        lw.world.plane.close()
        if bucket is not None:
            drop_bucket(request.getfixturevalue("seaweed"), bucket)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder().install(monkeypatch)
