"""The round-robin balancer that stands for a Kubernetes Service in the replica tests and the
deploy bench: new connections go to each backend in turn, and a dead one is skipped."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from lakecache.services.balancer import RoundRobinBalancer


@pytest.fixture
def backends() -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        listeners = [stack.enter_context(socket.create_server(("127.0.0.1", 0))) for _ in range(3)]
        yield listeners


def connect(balancer: RoundRobinBalancer, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", balancer.port), timeout=5) for _ in range(n)]


def settled(balancer: RoundRobinBalancer, total: int) -> list[int]:
    deadline = time.monotonic() + 10
    while sum(balancer.connections) < total:
        assert time.monotonic() < deadline, balancer.connections
        time.sleep(0.02)
    return list(balancer.connections)


def test_new_connections_go_to_each_backend_in_turn(backends: list[socket.socket]) -> None:
    balancer = RoundRobinBalancer([s.getsockname() for s in backends]).start()
    clients = connect(balancer, 9)
    try:
        assert settled(balancer, 9) == [3, 3, 3]
    finally:
        for c in clients:
            c.close()
        balancer.close()


def test_a_backend_that_refuses_is_skipped(backends: list[socket.socket]) -> None:
    balancer = RoundRobinBalancer([s.getsockname() for s in backends]).start()
    backends[1].close()  # that replica is down: its port refuses
    clients = connect(balancer, 6)
    try:
        counts = settled(balancer, 6)
        assert counts[1] == 0 and counts[0] > 0 and counts[2] > 0
    finally:
        for c in clients:
            c.close()
        balancer.close()
