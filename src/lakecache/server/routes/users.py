"""Users (org admins manage them) and API tokens (each user manages their own)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, Path, Response

from lakecache.errors import NotFoundError
from lakecache.server.auth import OrgAdmin, Plane, User
from lakecache.server.errors import COMMON_RESPONSES, AuthenticationError, PermissionDeniedError
from lakecache.server.models import (
    TokenCreated,
    TokenIn,
    TokenOut,
    UserCreated,
    UserIn,
    UserOut,
    UserPatch,
)
from lakecache.server.pagination import Page, Paging, paginate
from lakecache.server.views import token_out, user_out

router = APIRouter(tags=["accounts"], responses=COMMON_RESPONSES)

UserName = Path(min_length=1, max_length=64)


@router.get("/users", response_model=Page[UserOut])
def list_users(_: OrgAdmin, plane: Plane, paging: Paging) -> Page[UserOut]:
    """Every user (org admins only)."""
    page = paginate(plane.accounts.list_users(), paging)
    return Page[UserOut](
        items=[user_out(u) for u in page.items], next_cursor=page.next_cursor, total=page.total
    )


@router.post("/users", response_model=UserCreated, status_code=201)
def create_user(body: UserIn, _: OrgAdmin, plane: Plane) -> UserCreated:
    """Add a user (org admins only). Without a password one is generated and returned once."""
    password = body.password or secrets.token_urlsafe(15)
    if body.agent_site is not None:
        plane.topology.get_site(body.agent_site)
    user = plane.accounts.create_user(
        body.name,
        password,
        org_admin=body.org_admin,
        agent_site=body.agent_site,
        now=plane.clock.now(),
    )
    return UserCreated(user=user_out(user), password=None if body.password else password)


@router.get("/users/{name}", response_model=UserOut)
def get_user(principal: User, plane: Plane, name: str = UserName) -> UserOut:
    """A user: yourself, or anyone for an org admin."""
    if name != principal.user.name and not principal.org_admin:
        raise PermissionDeniedError("only org admins may look at other users")
    return user_out(plane.accounts.get_user(name))


@router.patch("/users/{name}", response_model=UserOut)
def update_user(body: UserPatch, principal: User, plane: Plane, name: str = UserName) -> UserOut:
    """Change a user. Org admins: anything of anyone. Others: their own password, given the
    current one. A new password ends the user's sessions and revokes their API tokens."""
    accounts = plane.accounts
    if not principal.org_admin:
        if name != principal.user.name:
            raise PermissionDeniedError("only org admins may change other users")
        if body.org_admin is not None or body.disabled is not None:
            raise PermissionDeniedError("only org admins may change roles or disable users")
        if body.password is not None and (
            body.current_password is None
            or accounts.check_password(name, body.current_password) is None
        ):
            raise AuthenticationError(
                "the current password is wrong", hint="Send current_password with the new one."
            )
    else:
        accounts.get_user(name)
    user = accounts.update_user(
        name,
        org_admin=body.org_admin,
        disabled=body.disabled,
        password=body.password,
        now=plane.clock.now(),
    )
    return user_out(user)


@router.get("/tokens", response_model=Page[TokenOut])
def list_tokens(principal: User, plane: Plane, paging: Paging) -> Page[TokenOut]:
    """Your API tokens (never their secrets), newest first."""
    now = plane.clock.now()
    page = paginate(plane.accounts.list_tokens(principal.user.name), paging)
    return Page[TokenOut](
        items=[token_out(t, now) for t in page.items],
        next_cursor=page.next_cursor,
        total=page.total,
    )


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenIn, principal: User, plane: Plane) -> TokenCreated:
    """A new API token for yourself; the secret is in this response only."""
    now = plane.clock.now()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    record, secret = plane.accounts.create_token(
        principal.user.name, body.name, now=now, expires_at=expires
    )
    return TokenCreated(**token_out(record, now).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(principal: User, plane: Plane, token_id: int = Path(ge=1, le=2**62)) -> Response:
    """Revoke one of your tokens (org admins: anyone's). Takes effect at once."""
    accounts = plane.accounts
    try:
        token = accounts.get_token(token_id)
    except NotFoundError:
        token = None
    if token is None or (token.user != principal.user.name and not principal.org_admin):
        raise NotFoundError(
            f"no token {token_id}", hint="List your tokens with `lakecache token ls`."
        )
    accounts.revoke_token(token_id, now=plane.clock.now())
    return Response(status_code=204)
