"""One lakecache server and one API token: JSON over HTTP, errors as lakecache errors.

Which server and token: :func:`lakecache.client.login.find_server`. The token
is sent as ``Authorization: Bearer``; it never appears in messages.

Scope. The lake endpoints need to know which datasets a request works for
(the server checks the caller's role on them, and that a key belongs to one of
them). Lake and blob-index calls carry no dataset name in lakecache's
interfaces, so the connection remembers every dataset the catalog was asked
about (:meth:`ServerConnection.touch`) and sends those: a commit or pull
always names its dataset to the catalog before it moves a byte.

Who. Commits through a server are by the logged-in user (the server refuses
any other author): :meth:`ServerConnection.user_name` asks the server once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from lakecache.client.errors import ServerUnreachableError, error_from_response
from lakecache.client.login import API_PREFIX, normalize_url
from lakecache.errors import UserError

API = API_PREFIX
#: Datasets sent with one request; the server takes up to 16.
MAX_SCOPE = 16
#: Attempts when the server cannot be connected to (the request never reached it).
CONNECT_ATTEMPTS = 3
#: Methods a request may be sent again with (RFC 9110 9.2.2), when its connection broke.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: POSTs that only ask (a batch too big for a query string) and change nothing: they may
#: be sent again too (see lakecache.server.routes.lake for what each does).
QUERIES = frozenset(
    {"/lake/known", "/lake/locate", "/lake/exists", "/lake/presign", "/lake/multipart/parts"}
)


class ServerConnection:
    """The REST API of one server, as one user. Thread-safe; one per :class:`Hub`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self._client = httpx.Client(
            base_url=self.url + API,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            trust_env=False,
        )
        self._datasets: dict[str, None] = {}
        self._user_name: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ServerConnection({self.url!r})"

    def close(self) -> None:
        self._client.close()

    def user_name(self) -> str:
        """The name of the user the token belongs to: asked of the server once, then kept.

        Raises what :meth:`call` raises (a 401 for a token the server no longer takes).
        """
        with self._lock:
            if self._user_name is not None:
                return self._user_name
        name = str(self.call("GET", "/auth/session")["user"]["name"])
        with self._lock:
            self._user_name = name
        return name

    # -- the datasets a request works for ------------------------------------------------

    def touch(self, dataset: str) -> None:
        """Remember that this hub works on ``dataset`` (most recent first)."""
        with self._lock:
            self._datasets.pop(dataset, None)
            self._datasets[dataset] = None

    def scope(self) -> list[str]:
        """The datasets to name in a lake request, most recently used first."""
        with self._lock:
            names = list(reversed(self._datasets))[:MAX_SCOPE]
        if not names:
            raise UserError(
                "a lake request through the server names no dataset",
                hint="Open the dataset first (lakecache.Dataset(NAME)), then read or write.",
            )
        return names

    # -- requests --------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, resend: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send one request; errors become lakecache errors naming the server.

        A request that could not be connected is retried (it never reached the
        server, so this is safe for any method). So is an idempotent one (GET, PUT,
        DELETE, a POST that only asks: :data:`QUERIES`; or any request the caller
        marks ``resend=True``, one the server takes twice as once) whose connection
        broke before the answer came: behind a load balancer, the replica it reached
        may have died mid-request, after or before it acted, and another one answers
        the retry. Its body must be one that can be sent again: none, bytes, a string,
        or a seekable file (sent again from where it stood). Anything else, and any
        answer (a 4xx or 5xx included), is not retried.
        """
        safe = (
            resend or method.upper() in IDEMPOTENT or (method.upper() == "POST" and path in QUERIES)
        )
        content: Any = kwargs.get("content")
        start = _rewind_point(content)
        retry_broken = safe and (isinstance(content, (type(None), bytes, str)) or start is not None)
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                if start is not None:
                    content.seek(start)
                r = self._client.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt + 1 == CONNECT_ATTEMPTS:
                    raise self._unreachable(method, path, exc) from None
                time.sleep(0.2 * 2**attempt)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if not retry_broken or attempt + 1 == CONNECT_ATTEMPTS:
                    raise self._unreachable(method, path, exc) from None
                time.sleep(0.2 * 2**attempt)
            except httpx.HTTPError as exc:
                raise self._unreachable(method, path, exc) from None
        if r.status_code >= 400:
            raise self._error(r)
        return r

    def call(self, method: str, path: str, *, resend: bool = False, **kwargs: Any) -> Any:
        """A request whose answer is JSON (or nothing: None); ``resend`` as for
        :meth:`request`."""
        r = self.request(method, path, resend=resend, **kwargs)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def pages(self, path: str, **params: Any) -> Iterator[Any]:
        """Every item of a paginated list, a page of 1000 at a time."""
        cursor: str | None = None
        while True:
            query = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", path, params=query)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def stream(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request whose body is read by the caller (``iter_bytes``, then ``close``)."""
        try:
            request = self._client.build_request(method, path, **kwargs)
            r = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(method, path, exc) from None
        if r.status_code >= 400:
            try:
                r.read()
            finally:
                r.close()
            raise self._error(r)
        return r

    def _error(self, r: httpx.Response) -> Exception:
        try:
            body = r.json()
        except ValueError:
            body = None
        return error_from_response(r.status_code, body, self.url)

    def _unreachable(self, method: str, path: str, exc: Exception) -> ServerUnreachableError:
        reason = str(exc) or type(exc).__name__
        return ServerUnreachableError(
            f"cannot reach the lakecache server at {self.url} ({method} {API}{path.split('?')[0]}):"
            f" {reason}"
        )


def _rewind_point(content: Any) -> int | None:
    """Where a seekable file body stands now (to send it again from there); else None."""
    seekable = getattr(content, "seekable", None)
    if seekable is None or not callable(seekable) or not seekable():
        return None
    return int(content.tell())


def path_part(value: str) -> str:
    """``value`` quoted as one URL path segment."""
    return quote(value, safe="")
