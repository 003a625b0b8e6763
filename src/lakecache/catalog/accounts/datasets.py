"""Datasets as accounts see them: created with an owner who is their admin, deleted whole."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy import exc as sa_exc

from lakecache.catalog import accounts_tables as at
from lakecache.catalog import tables as t
from lakecache.catalog import topology_tables as tt
from lakecache.catalog.accounts.base import AccountsBase
from lakecache.catalog.names import check_dataset_name
from lakecache.errors import AlreadyExistsError, ConflictError

_LIVE_CACHE_STATES = ("pending", "filling", "ready", "evicting")


class OwnedDatasets(AccountsBase):
    """Creating a dataset with its first admin, and deleting one with its members."""

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
                if self._c.journal is not None:  # the lake's ref log, inside the transaction
                    self._c.journal.dataset_created(name, owner, description, now)
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
            if self._c.journal is not None:  # a tombstone in the lake's ref log
                self._c.journal.dataset_deleted(dataset)
