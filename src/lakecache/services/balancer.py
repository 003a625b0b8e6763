"""A round-robin TCP balancer on 127.0.0.1, standing for a Kubernetes Service in tests
and the bench: each new connection goes to the next backend that accepts it.

Like kube-proxy, it balances connections, not requests (a client's keep-alive connection
stays on one replica), and a backend that refuses a connection is skipped for that one.
A connection whose backend dies is closed, so its client sees the failure and retries.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Sequence


class RoundRobinBalancer:
    """Listens on ``127.0.0.1:port`` (0: a free one) and forwards to ``backends``."""

    def __init__(self, backends: Sequence[tuple[str, int]], port: int = 0) -> None:
        self.backends = list(backends)
        #: The backend each new connection tries first: the next one each time.
        self._first = itertools.cycle(range(len(self.backends)))
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="balancer", daemon=True)
        self.connections = [0] * len(self.backends)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RoundRobinBalancer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        n = len(self.backends)
        with self._lock:
            first = next(self._first)
        # The others after it in turn, for when it is down. (Taking n items of the cycle
        # per connection instead started every connection at the same backend.)
        for index in ((first + i) % n for i in range(n)):
            try:
                upstream = socket.create_connection(self.backends[index], timeout=2)
            except OSError:
                continue  # that replica is down: the next one
            upstream.settimeout(None)
            with self._lock:
                self.connections[index] += 1
            return upstream
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            client.close()
            return
        for one, other in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(one, other), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        # Either side gone: close both, so the other direction ends too.
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
