"""Dataset members and their roles, and never a dataset without an admin.

Roles, each including the ones before it: ``reader`` (list, browse, download,
diff), ``writer`` (commit, tag, cache), ``admin`` (members, delete). Org
admins hold every role on every dataset without a row here.

Concurrency: demoting or removing a dataset admin locks the admin rows of that
dataset (``SELECT ... FOR UPDATE``, in user id order) before counting them, so
on PostgreSQL two such changes to the same dataset run one after the other and
the second sees the first's result; on SQLite the write transaction already
holds the database's write lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from lakecache.catalog import accounts_tables as at
from lakecache.catalog import tables as t
from lakecache.catalog.accounts.base import AccountsBase
from lakecache.catalog.db import DatasetRecord
from lakecache.errors import ConflictError, DatasetNotFoundError, NotFoundError, UserError

ROLES = at.ROLES
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}


@dataclass(frozen=True)
class Membership:
    dataset: str
    user: str
    role: str
    created_at: datetime


def check_role(role: str) -> str:
    """Return ``role`` if it is one of :data:`ROLES`, else raise :class:`UserError`."""
    if role not in ROLE_RANK:
        raise UserError(f"unknown role {role!r}", hint=f"Choose one of: {', '.join(ROLES)}.")
    return role


class Memberships(AccountsBase):
    """Who holds which role on which dataset."""

    def set_member(self, dataset: str, user: str, role: str, *, now: datetime) -> Membership:
        """Give ``user`` ``role`` on ``dataset`` (adding or changing it).

        ConflictError if this would leave the dataset without an admin.
        """
        check_role(role)
        u = self.get_user(user)
        with self._c._write() as conn:
            dataset_id = self._c._dataset_id(conn, dataset)
            current = _role(conn, dataset_id, u.id)
            if current is None:
                conn.execute(
                    at.dataset_members.insert().values(
                        dataset_id=dataset_id, user_id=u.id, role=role, created_at=now
                    )
                )
            elif current != role:
                if current == "admin":
                    _keep_an_admin(conn, dataset_id, dataset, u.id, user)
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
            role = _role(conn, dataset_id, u.id)
            if role is None:
                raise NotFoundError(f"{user!r} is not a member of dataset {dataset!r}")
            if role == "admin":
                _keep_an_admin(conn, dataset_id, dataset, u.id, user)
            conn.execute(
                delete(at.dataset_members).where(
                    at.dataset_members.c.dataset_id == dataset_id,
                    at.dataset_members.c.user_id == u.id,
                )
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
        """``user``'s membership of ``dataset``; NotFoundError if none."""
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

    def dataset_and_role(self, user_id: int, dataset: str) -> tuple[DatasetRecord, str | None]:
        """``dataset``'s record and ``user_id``'s role on it (None if not a member), in one
        query (each API request asks). DatasetNotFoundError if there is no such dataset."""
        member = at.dataset_members
        q = select(t.datasets, member.c.role).outerjoin(
            member, (member.c.dataset_id == t.datasets.c.id) & (member.c.user_id == user_id)
        )
        with self._c._read() as conn:
            row = conn.execute(q.where(t.datasets.c.name == dataset)).one_or_none()
        if row is None:
            raise DatasetNotFoundError(f"no dataset named {dataset!r}")
        record = DatasetRecord(int(row.id), row.name, row.owner, row.description, row.created_at)
        return record, row.role

    def roles_of(self, user_id: int) -> dict[str, str]:
        """Every dataset ``user_id`` is a member of -> role."""
        with self._c._read() as conn:
            rows = conn.execute(
                select(t.datasets.c.name, at.dataset_members.c.role)
                .join(t.datasets, t.datasets.c.id == at.dataset_members.c.dataset_id)
                .where(at.dataset_members.c.user_id == user_id)
            ).all()
        return {name: role for name, role in rows}


def _role(conn: Any, dataset_id: int, user_id: int) -> str | None:
    role: str | None = conn.scalar(
        select(at.dataset_members.c.role).where(
            at.dataset_members.c.dataset_id == dataset_id,
            at.dataset_members.c.user_id == user_id,
        )
    )
    return role


def _keep_an_admin(conn: Any, dataset_id: int, dataset: str, user_id: int, user: str) -> None:
    """ConflictError if ``user`` is the dataset's last admin (checked under row locks)."""
    admins = conn.scalars(
        select(at.dataset_members.c.user_id)
        .where(
            at.dataset_members.c.dataset_id == dataset_id,
            at.dataset_members.c.role == "admin",
        )
        .order_by(at.dataset_members.c.user_id)
        .with_for_update()
    ).all()
    if user_id in admins and len(admins) <= 1:
        raise ConflictError(
            f"{user!r} is the last admin of dataset {dataset!r}",
            hint="Make another member an admin first.",
        )
