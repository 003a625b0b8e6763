"""Which lakecache server to work through, and with which token; no network, no heavy imports.

``settings.server_url`` (``LAKECACHE_SERVER``) with ``settings.token``
(``LAKECACHE_TOKEN``) or, without a token, the one ``lakecache login URL``
saved for that URL; with no server configured, the server ``lakecache login``
saved last. The hub asks this on every start, so it must stay cheap: only the
standard library is imported here.

The login file itself is read and written only here: ``lakecache login`` and
``logout`` (:mod:`lakecache.cli.auth`) keep it through :func:`save_login` and
:func:`forget_login`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lakecache.errors import UserError

if TYPE_CHECKING:
    from lakecache.settings import Settings

#: The file ``lakecache login`` writes in the home folder (see :mod:`lakecache.cli.auth`).
CREDENTIALS = "credentials.json"
#: Where every route of the REST API lives on a server.
API_PREFIX = "/api/v1"


def normalize_url(url: str, *, userinfo_hint: str = "Use a token.") -> str:
    """``http(s)://host:port[/path]`` without a trailing slash or ``/api/v1``; refuses the rest.

    A user or password in the URL is refused with ``userinfo_hint``: what to
    give instead depends on the caller (a token; ``--user`` for ``lakecache login``).
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"not a server URL: {url!r}", hint="Write it as http://HOST:PORT.")
    if parts.username or parts.password:
        raise UserError("put no user or password in the server URL", hint=userinfo_hint)
    path = parts.path.rstrip("/")
    # People paste the API's address as often as the dashboard's: both name the server.
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return f"{parts.scheme}://{parts.netloc}{path}"


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


def save_login(home: Path, url: str, login: dict[str, Any]) -> Path:
    """Keep ``login`` (user, token...) for the server at ``url`` and make it the default.

    Returns the login file's path. Read, change, write: two logins at the same
    moment on one machine may lose one, but the file is never half-written.
    """
    logins = saved_logins(home)
    logins["servers"][url] = login
    logins["default"] = url
    return _write_logins(home, logins)


def forget_login(home: Path, url: str) -> None:
    """Drop the saved login for ``url``; the default moves to another saved server, if any."""
    logins = saved_logins(home)
    logins["servers"].pop(url, None)
    if logins.get("default") == url:
        logins["default"] = next(iter(logins["servers"]), None)
    _write_logins(home, logins)


def chosen_server(
    logins: dict[str, Any], server_url: str | None, *, userinfo_hint: str = "Use a token."
) -> str | None:
    """``server_url`` normalized if given, else the server logged in to last; None if neither."""
    if server_url:
        return normalize_url(server_url, userinfo_hint=userinfo_hint)
    default: str | None = logins.get("default")
    return default


def find_server(settings: Settings) -> tuple[str, str] | None:
    """``(url, token)`` of the server to work through, or None to use the lake directly."""
    logins = saved_logins(settings.home)
    url = chosen_server(logins, settings.server_url)
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


def _write_logins(home: Path, logins: dict[str, Any]) -> Path:
    """Write the file readable by its owner only: created 0600 under a temp name, then renamed,
    so it is never visible with wider permissions, nor half-written."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / CREDENTIALS
    # A temp name per process: two writers never write into the same temp file.
    tmp = path.with_name(f".{CREDENTIALS}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or a leftover temp file said
        with os.fdopen(fd, "w") as f:
            json.dump(logins, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path
