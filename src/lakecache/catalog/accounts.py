"""Accounts in the catalog: users, API tokens, dashboard sessions, dataset members.

Reached as ``Accounts(catalog)``. Every method that depends on time takes
``now`` from the caller, so tests drive a clock of their own.

Secrets, and how each is kept:

* passwords: argon2id (argon2-cffi's RFC 9106 profile), a slow hash, since
  people choose guessable passwords;
* API tokens ``lct_<prefix>_<secret>`` and session cookies: 256 random bits,
  stored as SHA-256. A slow hash adds nothing against that much entropy and
  would cost every request; the prefix (public, unique) finds the row, and the
  hash is compared in constant time;
* nothing secret is ever returned except once, at creation.

Roles per dataset, each including the ones before it: ``reader`` (list,
browse, download, diff), ``writer`` (commit, tag, cache), ``admin``
(members, delete). Org admins hold every role on every dataset.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy import exc as sa_exc

from lakecache.catalog import accounts_tables as at
from lakecache.catalog import tables as t
from lakecache.catalog import topology_tables as tt
from lakecache.catalog.names import check_dataset_name
from lakecache.errors import AlreadyExistsError, ConflictError, NotFoundError, UserError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from lakecache.catalog.db import Catalog

ROLES = at.ROLES
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
TOKEN_PREFIX = "lct"
MIN_PASSWORD = 8
#: last_used_at / last_seen_at are written at most this often, so reads stay reads.
TOUCH_EVERY = timedelta(seconds=60)
_USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_USER_HINT = "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-'."
_LIVE_CACHE_STATES = ("pending", "filling", "ready", "evicting")


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    org_admin: bool
    disabled: bool
    created_at: datetime
    #: Set for the user a site's agent runs as: it may work only that site's caches.
    agent_site: str | None = None


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


@dataclass(frozen=True)
class SessionRecord:
    user: UserRecord
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Membership:
    dataset: str
    user: str
    role: str
    created_at: datetime


def check_user_name(name: str) -> str:
    """Return ``name`` if it can name a user, else raise :class:`UserError`."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise UserError(f"invalid user name {name!r}", hint=_USER_HINT)
    return name


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise UserError(f"unknown role {role!r}", hint=f"Choose one of: {', '.join(ROLES)}.")
    return role


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


class Accounts:
    """Users, tokens, sessions and memberships. Thread-safe; one per process is enough."""

    def __init__(self, catalog: Catalog, *, hasher: PasswordHasher | None = None) -> None:
        self._c = catalog
        self._ph = hasher or _hasher()
        # Verified against when a user does not exist, so a login for a missing
        # user costs as long as one for a real user (no user enumeration by timing).
        self._dummy_hash = self._ph.hash(secrets.token_urlsafe(16))

    # -- users -------------------------------------------------------------------------

    def count_users(self) -> int:
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
        _check_password(password)
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

    def get_user(self, name: str) -> UserRecord:
        with self._c._read() as conn:
            row = conn.execute(select(at.users).where(at.users.c.name == name)).one_or_none()
        if row is None:
            raise NotFoundError(f"no user {name!r}", hint="List users with `lakecache user ls`.")
        return _user(row)

    def list_users(self) -> list[UserRecord]:
        with self._c._read() as conn:
            rows = conn.execute(select(at.users).order_by(at.users.c.name)).all()
        return [_user(r) for r in rows]

    def update_user(
        self,
        name: str,
        *,
        org_admin: bool | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> UserRecord:
        """Change a user. Disabling one, or changing the password, ends their sessions.

        Refuses (ConflictError) to take away the last enabled org admin, so the
        organisation can never lock itself out.
        """
        values: dict[str, Any] = {}
        if org_admin is not None:
            values["org_admin"] = org_admin
        if disabled is not None:
            values["disabled"] = disabled
        if password is not None:
            _check_password(password)
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
            if user.org_admin and not user.disabled and (org_admin is False or disabled is True):
                admins = conn.scalar(
                    select(func.count()).where(
                        at.users.c.org_admin.is_(True), at.users.c.disabled.is_(False)
                    )
                )
                if int(admins or 0) <= 1:
                    raise ConflictError(
                        f"{name!r} is the last org admin",
                        hint="Make another user an org admin first.",
                    )
            conn.execute(update(at.users).where(at.users.c.id == user.id).values(**values))
            if disabled or password is not None:
                conn.execute(delete(at.sessions).where(at.sessions.c.user_id == user.id))
        return self.get_user(name)

    def check_password(self, name: str, password: str) -> UserRecord | None:
        """The user, if ``password`` is theirs and they are enabled; else None.

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
        if row is None or row.disabled:
            return None
        if self._ph.check_needs_rehash(digest):
            with self._c._write() as conn:
                conn.execute(
                    update(at.users)
                    .where(at.users.c.id == row.id)
                    .values(password_hash=self._ph.hash(password))
                )
        return _user(row)

    # -- API tokens --------------------------------------------------------------------

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
                    token_hash=_sha256(secret),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            (tid,) = res.inserted_primary_key or (0,)
        return TokenRecord(int(tid), u.name, name, prefix, now, expires_at, None, None), secret

    def authenticate_token(self, token: str, now: datetime) -> UserRecord | None:
        """The enabled user a live (not revoked, not expired) token belongs to, else None."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1]:
            return None
        q = (
            select(at.api_tokens, *_OWNER_COLUMNS)
            .join(at.users, at.users.c.id == at.api_tokens.c.user_id)
            .where(at.api_tokens.c.prefix == parts[1])
        )
        with self._c._read() as conn:
            row = conn.execute(q).one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, _sha256(token)):
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
        return _owner(row)

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

    # -- sessions ----------------------------------------------------------------------

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
                    id_hash=_sha256(cookie),
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
            select(at.sessions, *_OWNER_COLUMNS)
            .join(at.users, at.users.c.id == at.sessions.c.user_id)
            .where(at.sessions.c.id_hash == _sha256(cookie))
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
        return SessionRecord(_owner(row), row.csrf_token, row.expires_at)

    def delete_session(self, cookie: str) -> None:
        with self._c._write() as conn:
            conn.execute(delete(at.sessions).where(at.sessions.c.id_hash == _sha256(cookie)))

    def purge(self, *, now: datetime, keep_attempts: timedelta = timedelta(days=1)) -> None:
        """Delete expired sessions and old login attempts (housekeeping; safe at any time)."""
        with self._c._write() as conn:
            conn.execute(delete(at.sessions).where(at.sessions.c.expires_at <= now))
            conn.execute(
                delete(at.login_attempts).where(at.login_attempts.c.at < now - keep_attempts)
            )

    # -- login attempts ----------------------------------------------------------------

    def record_login(self, user_name: str, ip: str, *, ok: bool, now: datetime) -> None:
        """Note one login attempt; a success clears the failures of that name from that address."""
        with self._c._write() as conn:
            if ok:
                conn.execute(
                    delete(at.login_attempts).where(
                        at.login_attempts.c.user_name == user_name[:255],
                        at.login_attempts.c.ip == ip[:64],
                    )
                )
            else:
                conn.execute(
                    at.login_attempts.insert().values(
                        user_name=user_name[:255], ip=ip[:64], ok=False, at=now
                    )
                )

    def recent_failures(self, *, ip: str, since: datetime, user_name: str | None = None) -> int:
        """Failed logins from ``ip`` since ``since`` (for one name, or for all names)."""
        q = select(func.count()).where(
            at.login_attempts.c.ip == ip[:64],
            at.login_attempts.c.ok.is_(False),
            at.login_attempts.c.at >= since,
        )
        if user_name is not None:
            q = q.where(at.login_attempts.c.user_name == user_name[:255])
        with self._c._read() as conn:
            return int(conn.scalar(q) or 0)

    def oldest_failure(
        self, *, ip: str, since: datetime, user_name: str | None = None
    ) -> datetime | None:
        q = select(func.min(at.login_attempts.c.at)).where(
            at.login_attempts.c.ip == ip[:64],
            at.login_attempts.c.ok.is_(False),
            at.login_attempts.c.at >= since,
        )
        if user_name is not None:
            q = q.where(at.login_attempts.c.user_name == user_name[:255])
        with self._c._read() as conn:
            value: datetime | None = conn.scalar(q)
        return value

    # -- memberships -------------------------------------------------------------------

    def set_member(self, dataset: str, user: str, role: str, *, now: datetime) -> Membership:
        """Give ``user`` ``role`` on ``dataset`` (adding or changing it).

        ConflictError if this would leave the dataset without an admin.
        """
        check_role(role)
        u = self.get_user(user)
        with self._c._write() as conn:
            dataset_id = self._c._dataset_id(conn, dataset)
            current = conn.scalar(
                select(at.dataset_members.c.role).where(
                    at.dataset_members.c.dataset_id == dataset_id,
                    at.dataset_members.c.user_id == u.id,
                )
            )
            if current is None:
                conn.execute(
                    at.dataset_members.insert().values(
                        dataset_id=dataset_id, user_id=u.id, role=role, created_at=now
                    )
                )
            elif current != role:
                if current == "admin":
                    self._keep_an_admin(conn, dataset_id, dataset, user)
                conn.execute(
                    update(at.dataset_members)
                    .where(
                        at.dataset_members.c.dataset_id == dataset_id,
                        at.dataset_members.c.user_id == u.id,
                    )
                    .values(role=role)
                )
        return self.get_member(dataset, user)

    def remove_member(self, dataset: str, user: str) -> None:
        """Take ``user`` off ``dataset``. NotFoundError if not a member; ConflictError for the
        last admin."""
        u = self.get_user(user)
        with self._c._write() as conn:
            dataset_id = self._c._dataset_id(conn, dataset)
            role = conn.scalar(
                select(at.dataset_members.c.role).where(
                    at.dataset_members.c.dataset_id == dataset_id,
                    at.dataset_members.c.user_id == u.id,
                )
            )
            if role is None:
                raise NotFoundError(f"{user!r} is not a member of dataset {dataset!r}")
            if role == "admin":
                self._keep_an_admin(conn, dataset_id, dataset, user)
            conn.execute(
                delete(at.dataset_members).where(
                    at.dataset_members.c.dataset_id == dataset_id,
                    at.dataset_members.c.user_id == u.id,
                )
            )

    @staticmethod
    def _keep_an_admin(conn: Any, dataset_id: int, dataset: str, user: str) -> None:
        admins = conn.scalar(
            select(func.count()).where(
                at.dataset_members.c.dataset_id == dataset_id,
                at.dataset_members.c.role == "admin",
            )
        )
        if int(admins or 0) <= 1:
            raise ConflictError(
                f"{user!r} is the last admin of dataset {dataset!r}",
                hint="Make another member an admin first.",
            )

    def _member_query(self) -> Any:
        return (
            select(
                t.datasets.c.name.label("dataset"),
                at.users.c.name.label("user"),
                at.dataset_members.c.role,
                at.dataset_members.c.created_at,
            )
            .join(t.datasets, t.datasets.c.id == at.dataset_members.c.dataset_id)
            .join(at.users, at.users.c.id == at.dataset_members.c.user_id)
        )

    def get_member(self, dataset: str, user: str) -> Membership:
        with self._c._read() as conn:
            row = conn.execute(
                self._member_query().where(t.datasets.c.name == dataset, at.users.c.name == user)
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"{user!r} is not a member of dataset {dataset!r}")
        return Membership(row.dataset, row.user, row.role, row.created_at)

    def list_members(self, dataset: str) -> list[Membership]:
        """Members of ``dataset`` sorted by user name. DatasetNotFoundError if it does not exist."""
        with self._c._read() as conn:
            self._c._dataset_id(conn, dataset)
            rows = conn.execute(
                self._member_query().where(t.datasets.c.name == dataset).order_by(at.users.c.name)
            ).all()
        return [Membership(r.dataset, r.user, r.role, r.created_at) for r in rows]

    def role_of(self, user_id: int, dataset: str) -> str | None:
        """``user_id``'s role on ``dataset``; None if not a member or no such dataset."""
        with self._c._read() as conn:
            role: str | None = conn.scalar(
                select(at.dataset_members.c.role)
                .join(t.datasets, t.datasets.c.id == at.dataset_members.c.dataset_id)
                .where(at.dataset_members.c.user_id == user_id, t.datasets.c.name == dataset)
            )
        return role

    def roles_of(self, user_id: int) -> dict[str, str]:
        """Every dataset ``user_id`` is a member of -> role."""
        with self._c._read() as conn:
            rows = conn.execute(
                select(t.datasets.c.name, at.dataset_members.c.role)
                .join(t.datasets, t.datasets.c.id == at.dataset_members.c.dataset_id)
                .where(at.dataset_members.c.user_id == user_id)
            ).all()
        return {name: role for name, role in rows}

    # -- datasets ----------------------------------------------------------------------

    def create_owned_dataset(
        self, name: str, owner: str, description: str = "", *, now: datetime
    ) -> None:
        """Create a dataset whose owner is the user ``owner``, made its admin in the same
        transaction. AlreadyExistsError if the name is taken."""
        check_dataset_name(name)
        u = self.get_user(owner)
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    t.datasets.insert().values(
                        name=name, owner=owner, description=description, created_at=now
                    )
                )
                (dataset_id,) = res.inserted_primary_key or (0,)
                conn.execute(
                    at.dataset_members.insert().values(
                        dataset_id=dataset_id, user_id=u.id, role="admin", created_at=now
                    )
                )
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"dataset {name!r} already exists", hint="Choose another name."
            ) from None

    def delete_dataset(self, dataset: str) -> None:
        """Remove a dataset from the catalog: its commits, refs, members and dead caches.

        Refused (ConflictError) while a cache of it is pending, filling, ready or
        evicting: clear its caches first, so no files are left orphaned on a volume.
        The lake's objects stay (they are content-addressed and may be shared with
        other datasets); a lake garbage collection reclaims them.
        """
        with self._c._write() as conn:
            dataset_id = self._c._dataset_id(conn, dataset)
            live = conn.scalar(
                select(func.count()).where(
                    tt.caches.c.dataset_id == dataset_id, tt.caches.c.state.in_(_LIVE_CACHE_STATES)
                )
            )
            if live:
                raise ConflictError(
                    f"dataset {dataset!r} still has {live} cache(s) on cache volumes",
                    hint="Clear its caches first (`lakecache cache rm`), then delete it.",
                )
            commit_ids = select(t.commits.c.id).where(t.commits.c.dataset_id == dataset_id)
            conn.execute(delete(tt.caches).where(tt.caches.c.dataset_id == dataset_id))
            conn.execute(delete(t.refs).where(t.refs.c.dataset_id == dataset_id))
            conn.execute(
                delete(t.commit_parents).where(t.commit_parents.c.commit_id.in_(commit_ids))
            )
            conn.execute(delete(t.commits).where(t.commits.c.dataset_id == dataset_id))
            conn.execute(
                delete(at.dataset_members).where(at.dataset_members.c.dataset_id == dataset_id)
            )
            conn.execute(delete(t.datasets).where(t.datasets.c.id == dataset_id))


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(
            f"a password needs at least {MIN_PASSWORD} characters",
            hint="Choose a longer one, or let lakecache generate one.",
        )
    if len(password) > 1024:
        raise UserError("a password may have at most 1024 characters")


#: The owning user's columns, selected beside a token's or a session's row.
_OWNER_COLUMNS = (
    at.users.c.name.label("user_name"),
    at.users.c.org_admin,
    at.users.c.agent_site,
    at.users.c.disabled,
    at.users.c.created_at.label("user_created_at"),
)


def _owner(row: Any) -> UserRecord:
    """The (enabled) user of a token or session row selected with :data:`_OWNER_COLUMNS`."""
    return UserRecord(
        int(row.user_id),
        row.user_name,
        bool(row.org_admin),
        False,
        row.user_created_at,
        row.agent_site,
    )


def _user(row: Any) -> UserRecord:
    return UserRecord(
        int(row.id),
        row.name,
        bool(row.org_admin),
        bool(row.disabled),
        row.created_at,
        row.agent_site,
    )


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
