"""Errors of the web layer, and the one JSON body every error response has.

::

    {"error": {"code": "not_found", "message": "no dataset named 'x'", "hint": "..."}}

Every :class:`~lakecache.errors.LakecacheError` maps to a status by its class
(first match in :data:`_STATUS`); anything else is a 500. The body of every
5xx (but for an error whose class is marked ``public``: its message names only
what the client sent) says only "internal error" and the request id (also in the
``X-Request-ID`` header of every response): what went wrong, which can name
the catalog's host or database, goes to the server log with that id and the
traceback, never to the client, who may not even be logged in.
The authentication errors below extend the project's hierarchy::

    LakecacheError
    └── AccessError
        ├── AuthenticationError   401: no, unknown, expired or revoked credentials
        ├── PermissionDeniedError 403: known user, not allowed
        └── RateLimitedError      429: too many failed logins; says when to retry
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from lakecache.errors import (
    AccountDisabledError,
    AlreadyExistsError,
    AmbiguousRefError,
    CatalogError,
    ConflictError,
    InsufficientStorageError,
    IntegrityError,
    InvalidPathError,
    LakecacheError,
    LakeError,
    LakeUnreachableError,
    LeaseLostError,
    NotFoundError,
    ObjectNotFoundError,
    SourceError,
    TakenOverError,
    TooLargeError,
    UserError,
)

log = logging.getLogger("lakecache.server")


class AccessError(LakecacheError):
    """Who is asking, or what they may do."""


class AuthenticationError(AccessError):
    default_hint = "Log in with `lakecache login URL`, or send 'Authorization: Bearer <token>'."


class PermissionDeniedError(AccessError):
    default_hint = "Ask an admin of the dataset (or an org admin) for a role that allows it."


class RateLimitedError(AccessError):
    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or f"Wait {retry_after} s, then try again.")
        self.retry_after = retry_after


class InvalidCursorError(UserError):
    default_hint = "Pass the next_cursor of the previous page unchanged, or no cursor for page 1."


class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str = ""
    #: The id of the request in the server's log (and in the X-Request-ID header).
    request_id: str = ""


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


# (class, HTTP status, code); the first class an error is an instance of wins.
_STATUS: list[tuple[type[LakecacheError], int, str]] = [
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (AccountDisabledError, 403, "account_disabled"),
    (RateLimitedError, 429, "rate_limited"),
    (InvalidPathError, 400, "invalid_path"),
    (InvalidCursorError, 400, "invalid_cursor"),
    (NotFoundError, 404, "not_found"),
    (AlreadyExistsError, 409, "already_exists"),
    (AmbiguousRefError, 400, "ambiguous_ref"),
    (TooLargeError, 413, "too_large"),
    (UserError, 400, "invalid_request"),
    (TakenOverError, 409, "taken_over"),
    (LeaseLostError, 409, "lease_lost"),
    (ConflictError, 409, "conflict"),
    (ObjectNotFoundError, 502, "lake_object_missing"),
    (LakeUnreachableError, 503, "lake_unreachable"),
    (LakeError, 502, "lake_error"),
    (IntegrityError, 502, "integrity_error"),
    (CatalogError, 503, "catalog_unavailable"),
    (SourceError, 400, "source_error"),
    (InsufficientStorageError, 507, "insufficient_storage"),
]

#: What FastAPI takes as ``responses=``: extra statuses for the OpenAPI spec.
Responses = dict[int | str, dict[str, Any]]

#: Responses every API route can give, for the OpenAPI spec.
COMMON_RESPONSES: Responses = {
    400: {"model": ErrorBody, "description": "Invalid request or path"},
    401: {"model": ErrorBody, "description": "Not logged in, or the token is expired or revoked"},
    403: {"model": ErrorBody, "description": "Logged in, but the role does not allow this"},
    404: {"model": ErrorBody, "description": "No such thing, or not visible to this user"},
    409: {"model": ErrorBody, "description": "Already exists, or conflicts with the state"},
    422: {"model": ErrorBody, "description": "The request does not match the schema"},
    502: {"model": ErrorBody, "description": "The lake lost, damaged or refused the data"},
    503: {"model": ErrorBody, "description": "The catalog or the lake is unavailable"},
}


#: The response header that carries the request id, on every response.
REQUEST_ID_HEADER = "X-Request-ID"


def status_of(exc: LakecacheError) -> tuple[int, str]:
    """The HTTP status and error code for ``exc`` (500, "internal" if no class matches)."""
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"


def request_id_of(conn: HTTPConnection) -> str:
    """The id the server gave this request (see :mod:`lakecache.server.app`), or ""."""
    return str(conn.scope.get("state", {}).get("request_id", ""))


def error_response(
    status: int,
    code: str,
    message: str,
    hint: str = "",
    headers: dict[str, str] | None = None,
    *,
    request_id: str = "",
) -> JSONResponse:
    """The one error body, as a response."""
    detail = ErrorDetail(code=code, message=message, hint=hint, request_id=request_id)
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=status, headers=headers)


def internal_error_response(status: int, code: str, request_id: str) -> JSONResponse:
    """A 5xx body that names nothing but the kind of failure and where the log has it."""
    return error_response(
        status,
        code,
        f"internal error (request id {request_id})",
        f"Try again later. If it persists, give the server's operator the request id "
        f"{request_id}: the server log has the details.",
        request_id=request_id,
    )


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one body, and never a traceback."""

    @app.exception_handler(LakecacheError)
    async def _lakecache_error(request: Request, exc: LakecacheError) -> JSONResponse:
        status, code = status_of(exc)
        request_id = request_id_of(request)
        if status >= 500 and not exc.public:
            log.error(
                "request %s: %s %s -> %d %s: %s",
                request_id,
                request.method,
                request.url.path,
                status,
                code,
                exc.message,
                exc_info=exc,
            )
            return internal_error_response(status, code, request_id)
        headers = None
        if isinstance(exc, RateLimitedError):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, AuthenticationError):
            headers = {"WWW-Authenticate": 'Bearer realm="lakecache"'}
        return error_response(status, code, exc.message, exc.hint, headers, request_id=request_id)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, hint = explain_validation(exc.errors(), request.url.path)
        return error_response(
            422, "validation_error", message, hint, request_id=request_id_of(request)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}
        code = codes.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.url.path}"
        return error_response(
            exc.status_code,
            code,
            message,
            "See /api/v1/openapi.json for the API.",
            dict(exc.headers) if exc.headers else None,
            request_id=request_id_of(request),
        )

    # What no handler above takes is answered by the app's guard (lakecache.server.app),
    # which holds the request id; this is the last resort for a failure of the guard itself.
    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request_id_of(request)
        log.error(
            "request %s: internal error on %s %s",
            request_id,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return internal_error_response(500, "internal", request_id)


#: What a name in each collection of the API names, for messages.
_KINDS = {
    "datasets": "dataset",
    "users": "user",
    "sites": "site",
    "volumes": "volume",
    "compute": "compute resource",
    "templates": "template",
    "queues": "queue",
}


def explain_validation(errors: Sequence[Any], path: str) -> tuple[str, str]:
    """A request the models refused, in the words the CLI uses: (message, hint).

    A name that breaks the naming rule gets the rule in words, as in local
    mode; anything else names the field and what it must be, without pydantic's
    internal locations.
    """
    from lakecache.catalog.names import NAME_RULE, REF_RULE

    problems: list[str] = []
    hint = "Check the request against the API reference at /api/v1/docs."
    for err in list(errors)[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "the request"
        value = err.get("input")
        kind = err.get("type", "")
        if kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
            segments = [s for s in path.split("/") if s]
            what = next((_KINDS[s] for s in reversed(segments) if s in _KINDS), "")
            problems.append(f"invalid {what + ' ' if what else ''}name {value!r}")
            hint = NAME_RULE
        elif loc and loc[-1] in ("tag", "ref") and kind.startswith("string"):
            problems.append(f"invalid {loc[-1]} {value!r}")
            hint = REF_RULE
        elif kind == "missing":
            problems.append(f"{field} is missing")
        else:
            problems.append(f"{field}: {str(err.get('msg', 'invalid')).lower()}")
    return "; ".join(problems) or "invalid request", hint
