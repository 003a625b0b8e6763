"""API tokens: ``lct_<prefix>_<secret>``, stored as a SHA-256, shown once.

256 random bits need no slow hash, and a fast one keeps every request cheap;
the prefix (public, unique) finds the row and the hash of the whole token is
compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from lakecache.catalog import accounts_tables as at
from lakecache.catalog.accounts.base import (
    OWNER_COLUMNS,
    TOUCH_EVERY,
    AccountsBase,
    UserRecord,
    owner_record,
    sha256,
)
from lakecache.errors import NotFoundError, UserError

TOKEN_PREFIX = "lct"


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Tokens(AccountsBase):
    """Creating, checking, listing and revoking API tokens."""

    def create_token(
        self, user: str, name: str, *, now: datetime, expires_at: datetime | None
    ) -> tuple[TokenRecord, str]:
        """A new token for ``user``: the record, and the secret (shown once, never stored)."""
        if not name or len(name) > 128:
            raise UserError(
                "a token needs a name of 1 to 128 characters", hint="Say what it is for."
            )
        if expires_at is not None and expires_at <= now:
            raise UserError("a token's expiry must be in the future")
        u = self.get_user(user)
        prefix = secrets.token_hex(6)
        secret = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        with self._c._write() as conn:
            res = conn.execute(
                at.api_tokens.insert().values(
                    user_id=u.id,
                    name=name,
                    prefix=prefix,
                    token_hash=sha256(secret),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            (tid,) = res.inserted_primary_key or (0,)
        return TokenRecord(int(tid), u.name, name, prefix, now, expires_at, None, None), secret

    def authenticate_token(self, token: str, now: datetime) -> UserRecord | None:
        """The enabled user a live (not revoked, not expired) token belongs to, else None."""
        found = self.authenticate_token_until(token, now)
        return None if found is None else found[0]

    def authenticate_token_until(
        self, token: str, now: datetime
    ) -> tuple[UserRecord, datetime | None] | None:
        """:meth:`authenticate_token`, with the token's end (None if it has none): whoever
        keeps the answer must not serve it past that."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1]:
            return None
        q = (
            select(at.api_tokens, *OWNER_COLUMNS)
            .join(at.users, at.users.c.id == at.api_tokens.c.user_id)
            .where(at.api_tokens.c.prefix == parts[1])
        )
        with self._c._read() as conn:
            row = conn.execute(q).one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, sha256(token)):
            return None
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        if row.disabled:
            return None
        if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
            with self._c._write() as conn:
                conn.execute(
                    update(at.api_tokens)
                    .where(at.api_tokens.c.id == row.id)
                    .values(last_used_at=now)
                )
        return owner_record(row), row.expires_at

    def _token_query(self) -> Any:
        return select(at.api_tokens, at.users.c.name.label("user_name")).join(
            at.users, at.users.c.id == at.api_tokens.c.user_id
        )

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        """Tokens of ``user`` (every user's when None), newest first; never their secrets."""
        q = self._token_query().order_by(at.api_tokens.c.id.desc())
        if user is not None:
            q = q.where(at.users.c.name == user)
        with self._c._read() as conn:
            return [_token(r) for r in conn.execute(q).all()]

    def get_token(self, token_id: int) -> TokenRecord:
        """One token by id; NotFoundError if there is none."""
        with self._c._read() as conn:
            row = conn.execute(
                self._token_query().where(at.api_tokens.c.id == token_id)
            ).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no token {token_id}", hint="List tokens with `lakecache token ls`."
            )
        return _token(row)

    def revoke_token(self, token_id: int, *, now: datetime) -> TokenRecord:
        """Revoke a token for good (idempotent: revoking twice keeps the first time)."""
        with self._c._write() as conn:
            conn.execute(
                update(at.api_tokens)
                .where(at.api_tokens.c.id == token_id, at.api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return self.get_token(token_id)


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        int(row.id),
        row.user_name,
        row.name,
        row.prefix,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )
