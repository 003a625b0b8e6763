"""Which lakecache server to work through, and with which token; no network, no heavy imports.

``settings.server_url`` (``LAKECACHE_SERVER``) with ``settings.token``
(``LAKECACHE_TOKEN``) or, without a token, the one ``lakecache login URL``
saved for that URL; with no server configured, the server ``lakecache login``
saved last. The hub asks this on every start, so it must stay cheap: only the
standard library is imported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lakecache.errors import UserError

if TYPE_CHECKING:
    from lakecache.settings import Settings

#: The file ``lakecache login`` writes in the home folder (see :mod:`lakecache.cli.auth`).
CREDENTIALS = "credentials.json"


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
