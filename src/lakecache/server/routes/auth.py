"""Logging in and out: dashboard sessions, and tokens for the CLI."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from lakecache.catalog.accounts import UserRecord
from lakecache.errors import AccountDisabledError
from lakecache.server.auth import SESSION_COOKIE, Plane, User
from lakecache.server.errors import (
    COMMON_RESPONSES,
    AuthenticationError,
    ErrorBody,
    RateLimitedError,
    Responses,
)
from lakecache.server.models import LoginIn, SessionOut, TokenCreated, TokenLoginIn
from lakecache.server.runtime import ControlPlane
from lakecache.server.views import token_out, user_out

router = APIRouter(prefix="/auth", tags=["auth"], responses=COMMON_RESPONSES)

_RATE: Responses = {
    429: {"model": ErrorBody, "description": "Too many failed logins; see Retry-After"}
}


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


#: What a refusal says, per limit: the account's lock must say that any address is refused.
_REFUSED = {
    "name at address": "too many failed logins for this user name from {ip}",
    "address": "too many failed logins from {ip}",
    "name": "too many failed logins for this user name, from any address",
}


def _check_password(plane: ControlPlane, name: str, password: str, ip: str) -> UserRecord:
    """The user behind a name and password, with failed attempts limited per name and
    address, per address, and per name from any address (see catalog.accounts.throttle)."""
    accounts = plane.accounts
    now = plane.clock.now()
    refusal = accounts.login_refusal(name, ip, plane.config.login_limits(), now=now)
    if refusal is not None:
        wait = refusal.retry_after
        raise RateLimitedError(
            _REFUSED[refusal.limit.scope].format(ip=ip) + f"; try again in {wait} s",
            retry_after=wait,
            hint=f"Wait {wait} s. API tokens and open sessions keep working meanwhile.",
        )
    try:
        user = accounts.check_password(name, password)
    except AccountDisabledError:
        accounts.record_login(name, ip, ok=False, now=now)
        raise
    accounts.record_login(name, ip, ok=user is not None, now=now)
    if user is None:
        raise AuthenticationError(
            "wrong user name or password",
            hint="Check both; an org admin can reset the password with `lakecache user passwd`.",
        )
    return user


@router.post("/login", response_model=SessionOut, responses=_RATE)
def login(body: LoginIn, request: Request, response: Response, plane: Plane) -> SessionOut:
    """Start a dashboard session: sets an HttpOnly cookie and returns the CSRF token."""
    user = _check_password(plane, body.name, body.password, _client_ip(request))
    ttl: timedelta = plane.config.session_ttl
    cookie, session = plane.accounts.create_session(user.name, now=plane.clock.now(), ttl=ttl)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=plane.config.cookie_secure,
        path="/",
    )
    return SessionOut(
        user=user_out(user),
        via="session",
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
    )


@router.post("/logout", status_code=204, response_class=Response)
def logout(request: Request, principal: User, plane: Plane) -> Response:
    """End the dashboard session (a token stays valid: revoke it with DELETE /tokens/{id})."""
    response = Response(status_code=204)
    cookie = request.cookies.get(SESSION_COOKIE)
    if principal.via == "session" and cookie:
        plane.accounts.delete_session(cookie)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/session", response_model=SessionOut)
def session(principal: User) -> SessionOut:
    """Who is logged in, and (for a session) the CSRF token to send on unsafe requests."""
    return SessionOut(
        user=user_out(principal.user), via=principal.via, csrf_token=principal.csrf_token
    )


@router.post("/token", response_model=TokenCreated, status_code=201, responses=_RATE)
def token_login(body: TokenLoginIn, request: Request, plane: Plane) -> TokenCreated:
    """Trade a name and password for a new API token (what `lakecache login` does).

    The token is in the response once; the server keeps only its hash.
    """
    user = _check_password(plane, body.name, body.password, _client_ip(request))
    now = plane.clock.now()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    record, secret = plane.accounts.create_token(
        user.name, body.token_name, now=now, expires_at=expires
    )
    return TokenCreated(**token_out(record, now).model_dump(), token=secret)
