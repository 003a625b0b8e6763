"""Fixtures for the server tests; the servers themselves are built in :mod:`server.live`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server.live import World, build_world


@pytest.fixture(scope="module")
def world_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(settings: Any = None, **config: Any) -> World:
        base = tmp_path_factory.mktemp("world")
        w = build_world(base / "home", base / "src", settings=settings, **config)
        made.append(w)
        return w

    yield make
    for w in made:
        w.server.stop()
        w.plane.close()


@pytest.fixture(scope="module")
def world(world_factory: Callable[..., World]) -> World:
    """A server whose agent fills caches (the embedded default)."""
    return world_factory()
