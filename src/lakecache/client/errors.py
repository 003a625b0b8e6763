"""Errors of the client: the server's error bodies, turned back into lakecache's own classes.

The server answers every error with ``{"error": {"code", "message", "hint"}}``.
The client raises the lakecache class the code stands for, so callers catch
the same errors whether they work directly or through a server (a commit that
loses a race is a :class:`~lakecache.errors.ConflictError` either way). Each
raised class also derives from :class:`ServerError`, which keeps the HTTP
status and the code::

    LakecacheError
    ├── ServerError                 the server said no; ``status`` and ``code``
    │   └── AccessDeniedError       401 / 403: log in again, or ask for a role
    └── ServerUnreachableError      no answer from the server; names its URL

A ``not_found`` is raised as a class deriving from both ``ServerError`` and
:class:`~lakecache.errors.NotFoundError`, and so on for every mapped code.
"""

from __future__ import annotations

from typing import Any

from lakecache.errors import (
    AlreadyExistsError,
    AmbiguousRefError,
    CatalogError,
    ConflictError,
    DatasetNotFoundError,
    InsufficientStorageError,
    IntegrityError,
    InvalidPathError,
    LakecacheError,
    LakeError,
    LakeUnreachableError,
    LeaseLostError,
    NotFoundError,
    ObjectNotFoundError,
    TakenOverError,
    TooLargeError,
    UserError,
)


class ServerError(LakecacheError):
    """The server refused or failed a request; message and hint are the server's."""

    def __init__(self, message: str, *, status: int, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class AccessDeniedError(ServerError):
    """Not logged in (401), or the role does not allow it (403)."""

    default_hint = "Log in again with `lakecache login URL`, or ask an admin for a role."


class ServerUnreachableError(LakecacheError):
    """No answer from the server (refused, reset, timed out)."""

    default_hint = (
        "Check that `lakecache server` runs at that address and the network reaches it, "
        "then run the command again: uploaded data is kept and reused."
    )


_BY_CODE: dict[str, type[LakecacheError]] = {
    "not_found": NotFoundError,
    "already_exists": AlreadyExistsError,
    "ambiguous_ref": AmbiguousRefError,
    "invalid_path": InvalidPathError,
    "invalid_request": UserError,
    "invalid_cursor": UserError,
    "validation_error": UserError,
    "source_error": UserError,
    "conflict": ConflictError,
    "taken_over": TakenOverError,
    "lease_lost": LeaseLostError,
    "lake_object_missing": ObjectNotFoundError,
    "lake_unreachable": LakeUnreachableError,
    "lake_error": LakeError,
    "integrity_error": IntegrityError,
    "catalog_unavailable": CatalogError,
    "too_large": TooLargeError,
    "insufficient_storage": InsufficientStorageError,
}


_REMOTE: dict[str, type[ServerError]] = {}


def _remote(base: type[LakecacheError]) -> type[ServerError]:
    """A class that is both a ServerError and ``base``, so either ``except`` catches it."""
    cls = _REMOTE.get(base.__name__)
    if cls is None:
        name = f"Remote{base.__name__}"
        cls = _REMOTE[base.__name__] = type(name, (ServerError, base), {"__module__": __name__})
    return cls


def error_from_response(status: int, body: Any, url: str) -> ServerError:
    """The exception for an error response with JSON ``body`` (or anything else) from ``url``."""
    try:
        err = body["error"]
        message, code, hint = str(err["message"]), str(err["code"]), err.get("hint") or None
    except (KeyError, TypeError):
        message, code, hint = (
            f"HTTP {status} from the lakecache server at {url}",
            "http_error",
            None,
        )
    if status in (401, 403):
        return AccessDeniedError(message, status=status, code=code, hint=hint)
    base = _BY_CODE.get(code)
    if base is NotFoundError and message.startswith("no dataset named"):
        base = DatasetNotFoundError
    if base is None:
        return ServerError(message, status=status, code=code, hint=hint)
    return _remote(base)(message, status=status, code=code, hint=hint)
