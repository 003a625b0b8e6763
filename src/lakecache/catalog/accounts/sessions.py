"""Dashboard sessions: a random cookie value kept only as its SHA-256, and a CSRF token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from lakecache.catalog import accounts_tables as at
from lakecache.catalog.accounts.base import (
    OWNER_COLUMNS,
    TOUCH_EVERY,
    AccountsBase,
    UserRecord,
    owner_record,
    sha256,
)


@dataclass(frozen=True)
class SessionRecord:
    user: UserRecord
    csrf_token: str
    expires_at: datetime


class Sessions(AccountsBase):
    """Starting, finding and ending dashboard sessions."""

    def create_session(
        self, user: str, *, now: datetime, ttl: timedelta
    ) -> tuple[str, SessionRecord]:
        """A dashboard session; returns the cookie value (kept only as a hash) and the record."""
        u = self.get_user(user)
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + ttl
        with self._c._write() as conn:
            conn.execute(
                at.sessions.insert().values(
                    id_hash=sha256(cookie),
                    user_id=u.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=expires,
                    last_seen_at=now,
                )
            )
        return cookie, SessionRecord(u, csrf, expires)

    def get_session(self, cookie: str, now: datetime) -> SessionRecord | None:
        """The live session of an enabled user behind a cookie value, else None."""
        q = (
            select(at.sessions, *OWNER_COLUMNS)
            .join(at.users, at.users.c.id == at.sessions.c.user_id)
            .where(at.sessions.c.id_hash == sha256(cookie))
        )
        with self._c._read() as conn:
            row = conn.execute(q).one_or_none()
        if row is None or row.expires_at <= now or row.disabled:
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            with self._c._write() as conn:
                conn.execute(
                    update(at.sessions)
                    .where(at.sessions.c.id_hash == row.id_hash)
                    .values(last_seen_at=now)
                )
        return SessionRecord(owner_record(row), row.csrf_token, row.expires_at)

    def delete_session(self, cookie: str) -> None:
        """End the session behind a cookie value (nothing happens if there is none)."""
        with self._c._write() as conn:
            conn.execute(delete(at.sessions).where(at.sessions.c.id_hash == sha256(cookie)))

    def purge(self, *, now: datetime, keep_attempts: timedelta = timedelta(days=1)) -> None:
        """Delete expired sessions and old login attempts (housekeeping; safe at any time)."""
        with self._c._write() as conn:
            conn.execute(delete(at.sessions).where(at.sessions.c.expires_at <= now))
            conn.execute(
                delete(at.login_attempts).where(at.login_attempts.c.at < now - keep_attempts)
            )
