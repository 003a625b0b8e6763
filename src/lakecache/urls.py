"""URLs shown to people: never with the user or password they may carry."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``, query or fragment: safe to print or log.

    A database or lake URL can carry credentials (``postgresql://u:secret@db/x``);
    anything that shows one to a person goes through here first.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url  # a plain path (a folder lake, a SQLite file): nothing to hide
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
