"""One lakecache server and one API token: JSON over HTTP, errors as lakecache errors.

Which server: ``settings.server_url`` (``LAKECACHE_SERVER``) with
``settings.token`` (``LAKECACHE_TOKEN``) or, without a token, the one
``lakecache login URL`` saved for that URL; with no server configured, the
server ``lakecache login`` saved last (``$LAKECACHE_HOME/credentials.json``).
The token is sent as ``Authorization: Bearer``; it never appears in messages.

Scope. The lake endpoints need to know which datasets a request works for
(the server checks the caller's role on them, and that a key belongs to one of
them). Lake and blob-index calls carry no dataset name in lakecache's
interfaces, so the connection remembers every dataset the catalog was asked
about (:meth:`ServerConnection.touch`) and sends those: a commit or pull
always names its dataset to the catalog before it moves a byte.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from lakecache.client.errors import ServerUnreachableError, error_from_response
from lakecache.errors import UserError

if TYPE_CHECKING:
    from lakecache.settings import Settings

#: The file ``lakecache login`` writes in the home folder (see :mod:`lakecache.cli.auth`).
CREDENTIALS = "credentials.json"
API = "/api/v1"
#: Datasets sent with one request; the server takes up to 16.
MAX_SCOPE = 16
#: Attempts when the server cannot be connected to (the request never reached it).
CONNECT_ATTEMPTS = 3


def normalize_url(url: str) -> str:
    """``http(s)://host:port[/path]`` without a trailing slash; refuses anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"not a server URL: {url!r}", hint="Write it as http://HOST:PORT.")
    if parts.username or parts.password:
        raise UserError("put no user or password in the server URL", hint="Use a token.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def saved_logins(home: Path) -> dict[str, Any]:
    """What ``lakecache login`` saved: ``{"default": URL | None, "servers": {URL: {...}}}``."""
    path = home / CREDENTIALS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"default": None, "servers": {}}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}", hint="Remove it and log in again.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a login file", hint="Remove it and log in again.")
    data.setdefault("servers", {})
    data.setdefault("default", None)
    return data


def find_server(settings: Settings) -> tuple[str, str] | None:
    """``(url, token)`` of the server to work through, or None to use the lake directly."""
    logins = saved_logins(settings.home)
    url = normalize_url(settings.server_url) if settings.server_url else logins.get("default")
    if not url:
        if settings.token:
            raise UserError(
                "an API token is set (LAKECACHE_TOKEN) but no server",
                hint="Set LAKECACHE_SERVER to the server's URL, or log in with `lakecache login`.",
            )
        return None
    token = settings.token or (logins["servers"].get(url) or {}).get("token")
    if not token:
        raise UserError(
            f"no API token for the lakecache server at {url}",
            hint=f"Log in with `lakecache login {url}`, or set LAKECACHE_TOKEN.",
        )
    return url, str(token)


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
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ServerConnection({self.url!r})"

    def close(self) -> None:
        self._client.close()

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

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; errors become lakecache errors naming the server.

        A request that could not be connected is retried (it never reached the
        server, so this is safe for any method); anything after that is not.
        """
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                r = self._client.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt + 1 == CONNECT_ATTEMPTS:
                    raise self._unreachable(method, path, exc) from None
                time.sleep(0.2 * 2**attempt)
            except httpx.HTTPError as exc:
                raise self._unreachable(method, path, exc) from None
        if r.status_code >= 400:
            raise self._error(r)
        return r

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON (or nothing: None)."""
        r = self.request(method, path, **kwargs)
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


def path_part(value: str) -> str:
    """``value`` quoted as one URL path segment."""
    return quote(value, safe="")
