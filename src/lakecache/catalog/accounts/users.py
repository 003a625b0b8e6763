"""Users: names, passwords, org admins, and never an organisation without one.

Concurrency: taking away an org admin (demoting or disabling one) locks the
rows of every enabled org admin (``SELECT ... FOR UPDATE``, in id order so two
such changes cannot deadlock) before counting them. On PostgreSQL two
transactions each demoting a different one of the last two admins then run
one after the other, and the second counts one admin, not two, and is refused.
SQLite needs no row lock: every write transaction holds the database's write
lock from its first statement (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy import exc as sa_exc

from lakecache.catalog import accounts_tables as at
from lakecache.catalog.accounts.base import AccountsBase, UserRecord, user_record
from lakecache.errors import AccountDisabledError, AlreadyExistsError, ConflictError, UserError

MIN_PASSWORD = 8
_USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_USER_HINT = "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-'."


def check_user_name(name: str) -> str:
    """Return ``name`` if it can name a user, else raise :class:`UserError`."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise UserError(f"invalid user name {name!r}", hint=_USER_HINT)
    return name


def check_password_rules(password: str) -> None:
    """Raise :class:`UserError` for a password too short or too long to accept."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(
            f"a password needs at least {MIN_PASSWORD} characters",
            hint="Choose a longer one, or let lakecache generate one.",
        )
    if len(password) > 1024:
        raise UserError("a password may have at most 1024 characters")


class Users(AccountsBase):
    """Adding, listing, changing users, and checking their passwords."""

    def count_users(self) -> int:
        """How many users there are (disabled ones included)."""
        with self._c._read() as conn:
            return int(conn.scalar(select(func.count()).select_from(at.users)) or 0)

    def create_user(
        self,
        name: str,
        password: str,
        *,
        org_admin: bool = False,
        agent_site: str | None = None,
        now: datetime,
    ) -> UserRecord:
        """Add a user. AlreadyExistsError if the name is taken; UserError for a short password.

        ``agent_site``: a user for the agent of that site, which may work only the
        caches on its volumes (never an org admin).
        """
        check_user_name(name)
        if agent_site is not None and org_admin:
            raise UserError("an agent user cannot be an org admin", hint="Drop one of the two.")
        check_password_rules(password)
        digest = self._ph.hash(password)
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    at.users.insert().values(
                        name=name,
                        password_hash=digest,
                        org_admin=org_admin,
                        disabled=False,
                        created_at=now,
                        agent_site=agent_site,
                    )
                )
                (uid,) = res.inserted_primary_key or (0,)
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"user {name!r} already exists", hint="Choose another name."
            ) from None
        return UserRecord(int(uid), name, org_admin, False, now, agent_site)

    def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        with self._c._read() as conn:
            rows = conn.execute(select(at.users).order_by(at.users.c.name)).all()
        return [user_record(r) for r in rows]

    def update_user(
        self,
        name: str,
        *,
        org_admin: bool | None = None,
        disabled: bool | None = None,
        password: str | None = None,
        now: datetime | None = None,
    ) -> UserRecord:
        """Change a user, in one transaction.

        Disabling one ends their sessions. A new password ends their sessions
        and revokes their API tokens (at ``now``; default: the current time),
        since whoever changes a password may be shutting out someone who
        learnt the old one. Refuses (ConflictError) to take away the last
        enabled org admin, so the organisation can never lock itself out; see
        the module's note on concurrency.
        """
        values: dict[str, Any] = {}
        if org_admin is not None:
            values["org_admin"] = org_admin
        if disabled is not None:
            values["disabled"] = disabled
        if password is not None:
            check_password_rules(password)
            values["password_hash"] = self._ph.hash(password)
        user = self.get_user(name)
        if org_admin and user.agent_site is not None:
            raise UserError(
                f"{name!r} is the agent user of site {user.agent_site!r}; "
                "it cannot be an org admin",
                hint="Make another user the org admin.",
            )
        if not values:
            return user
        with self._c._write() as conn:
            if org_admin is False or disabled is True:
                self._keep_an_org_admin(conn, user)
            conn.execute(update(at.users).where(at.users.c.id == user.id).values(**values))
            if disabled or password is not None:
                conn.execute(delete(at.sessions).where(at.sessions.c.user_id == user.id))
            if password is not None:
                conn.execute(
                    update(at.api_tokens)
                    .where(at.api_tokens.c.user_id == user.id, at.api_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=now or datetime.now(UTC))
                )
        return self.get_user(name)

    @staticmethod
    def _keep_an_org_admin(conn: Any, user: UserRecord) -> None:
        """ConflictError if ``user`` is the last enabled org admin (checked under row locks)."""
        admins = conn.scalars(
            select(at.users.c.id)
            .where(at.users.c.org_admin.is_(True), at.users.c.disabled.is_(False))
            .order_by(at.users.c.id)
            .with_for_update()
        ).all()
        if user.id in admins and len(admins) <= 1:
            raise ConflictError(
                f"{user.name!r} is the last org admin",
                hint="Make another user an org admin first.",
            )

    def check_password(self, name: str, password: str) -> UserRecord | None:
        """The user, if ``password`` is theirs; else None. AccountDisabledError if the
        password is right but the account is disabled.

        Costs one argon2 verification whether or not the user exists.
        """
        from argon2.exceptions import InvalidHashError, VerificationError

        with self._c._read() as conn:
            row = conn.execute(select(at.users).where(at.users.c.name == name)).one_or_none()
        digest = row.password_hash if row is not None else self._dummy_hash
        try:
            self._ph.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if row.disabled:
            # Only someone who knows the password learns this: tell them what to do.
            raise AccountDisabledError(f"the account {name!r} is disabled")
        if self._ph.check_needs_rehash(digest):
            with self._c._write() as conn:
                conn.execute(
                    update(at.users)
                    .where(at.users.c.id == row.id)
                    .values(password_hash=self._ph.hash(password))
                )
        return user_record(row)
