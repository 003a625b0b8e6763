"""What every part of :class:`~lakecache.catalog.accounts.Accounts` shares.

The catalog and the password hasher, the user record and the one lookup of a
user by name that tokens, sessions, memberships and datasets all start from.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from lakecache.catalog import accounts_tables as at
from lakecache.errors import NotFoundError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from lakecache.catalog.db import Catalog

#: last_used_at / last_seen_at are written at most this often, so reads stay reads.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    org_admin: bool
    disabled: bool
    created_at: datetime
    #: Set for the user a site's agent runs as: it may work only that site's caches.
    agent_site: str | None = None


def default_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's RFC 9106 profile (imported late: it costs start-up time)."""
    from argon2 import PasswordHasher

    return PasswordHasher()


class AccountsBase:
    """The catalog and the hasher; each concept of accounts is a mixin over this."""

    def __init__(self, catalog: Catalog, *, hasher: PasswordHasher | None = None) -> None:
        self._c = catalog
        self._ph = hasher or default_hasher()
        # Verified against when a user does not exist, so a login for a missing
        # user costs as long as one for a real user (no user enumeration by timing).
        self._dummy_hash = self._ph.hash(secrets.token_urlsafe(16))

    def get_user(self, name: str) -> UserRecord:
        """The user called ``name``; NotFoundError if there is none."""
        with self._c._read() as conn:
            row = conn.execute(select(at.users).where(at.users.c.name == name)).one_or_none()
        if row is None:
            raise NotFoundError(f"no user {name!r}", hint="List users with `lakecache user ls`.")
        return user_record(row)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def user_record(row: Any) -> UserRecord:
    """A :class:`UserRecord` from a row of the users table."""
    return UserRecord(
        int(row.id),
        row.name,
        bool(row.org_admin),
        bool(row.disabled),
        row.created_at,
        row.agent_site,
    )


#: The owning user's columns, selected beside a token's or a session's row.
OWNER_COLUMNS = (
    at.users.c.name.label("user_name"),
    at.users.c.org_admin,
    at.users.c.agent_site,
    at.users.c.disabled,
    at.users.c.created_at.label("user_created_at"),
)


def owner_record(row: Any) -> UserRecord:
    """The (enabled) user of a token or session row selected with :data:`OWNER_COLUMNS`."""
    return UserRecord(
        int(row.user_id),
        row.user_name,
        bool(row.org_admin),
        False,
        row.user_created_at,
        row.agent_site,
    )
