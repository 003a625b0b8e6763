"""The ref log: datasets, branch moves and tags, written to the lake as they happen.

The lake is the source of truth (a lost catalog is rebuilt from it alone), so
everything the catalog knows that the lake's content-addressed objects do not
say is also written here, one immutable object per event::

    refs/<dataset>/<stamp>-<hash>.json

``stamp`` is the event's time in microseconds since the epoch, zero-padded to
20 digits, so keys sort in time order; ``hash`` is the start of the record's
BLAKE3, so two events in the same microsecond never share a key. Each object is
written with one PUT, which every store makes atomic: a reader sees the whole
record or nothing.

Records, by ``kind``:

* ``dataset``: a dataset was created (owner, description, creation time);
* ``commit``: a commit was added and ``branch`` moved to it (from ``previous``);
* ``tag`` / ``untag``: a tag was set or removed;
* ``deleted``: a tombstone. Records before the newest tombstone of a name belong
  to a deleted dataset; a dataset created again under the name starts after it.

Ordering. The catalog writes each record inside the transaction that makes the
change, after its compare-and-swap succeeded (see
:class:`lakecache.catalog.journal.Journal`), so two changes of one ref are
recorded in the order the catalog made them; within one process stamps never go
backwards. If the database fails to commit after the record was written, the
lake holds one event the catalog never saw (a commit whose objects are all in
the lake); a rebuild then shows that commit too, which loses nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from lakecache.errors import IntegrityError
from lakecache.lake.objects import hash_bytes

if TYPE_CHECKING:
    from lakecache.lake.base import Lake

REFS_PREFIX = "refs/"
REF_FORMAT = "lakecache-ref/1"
#: Records fetched at once when a log is read.
READ_THREADS = 16

RecordKind = Literal["dataset", "commit", "tag", "untag", "deleted"]


@dataclass(frozen=True)
class RefRecord:
    """One event of one dataset, as stored under ``refs/``."""

    dataset: str
    kind: RecordKind
    #: Microseconds since the epoch; the record's place in its dataset's history.
    stamp: int
    #: ``dataset``: the owner's user name.
    owner: str = ""
    description: str = ""
    #: ``dataset``: when it was created (ISO 8601, UTC).
    created_at: str = ""
    #: ``commit`` and ``tag``: the commit id.
    commit: str = ""
    #: ``commit``: the branch moved; ``tag``/``untag``: the tag.
    name: str = ""
    #: ``commit``: where the branch was before (None: a first commit).
    previous: str | None = None

    def to_json(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, with the format."""
        body: dict[str, Any] = {
            "format": REF_FORMAT,
            "dataset": self.dataset,
            "kind": self.kind,
            "stamp": self.stamp,
        }
        if self.kind == "dataset":
            body.update(owner=self.owner, description=self.description, created_at=self.created_at)
        elif self.kind == "commit":
            body.update(commit=self.commit, name=self.name, previous=self.previous)
        elif self.kind == "tag":
            body.update(commit=self.commit, name=self.name)
        elif self.kind == "untag":
            body.update(name=self.name)
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def key(self) -> str:
        """Where the record lives in the lake."""
        return (
            f"{REFS_PREFIX}{self.dataset}/{self.stamp:020d}-{hash_bytes(self.to_json())[:16]}.json"
        )

    @classmethod
    def from_json(cls, data: bytes) -> RefRecord:
        """Parse a stored record; IntegrityError if it is not one."""
        try:
            body = json.loads(data)
            if body.pop("format") != REF_FORMAT:
                raise ValueError("unknown format")
            return cls(**body)
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"not a lakecache ref record: {exc}") from None


@dataclass
class DatasetHistory:
    """What the ref log says about one live dataset (after its newest tombstone)."""

    name: str
    owner: str = ""
    description: str = ""
    created_at: str = ""
    #: Commit ids in the order they were added.
    commits: list[str] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RefLogState:
    """The ref log replayed: live datasets, and the record keys of deleted ones."""

    datasets: dict[str, DatasetHistory]
    #: Keys of records at or before a dataset's newest tombstone (garbage once old).
    dead_keys: tuple[str, ...]


def replay(records: Iterable[tuple[str, RefRecord]]) -> RefLogState:
    """Fold (key, record) pairs, in key order, into each live dataset's state.

    Pure. Per dataset name, everything up to its newest tombstone is dead; a
    branch ends where its newest ``commit`` record put it; a tag is its newest
    ``tag`` record unless an ``untag`` came later.
    """
    by_name: dict[str, list[tuple[str, RefRecord]]] = {}
    for key, record in records:
        by_name.setdefault(record.dataset, []).append((key, record))
    live: dict[str, DatasetHistory] = {}
    dead: list[str] = []
    for name, items in by_name.items():
        items.sort(key=lambda kr: (kr[1].stamp, kr[0]))
        last_tomb = max((i for i, (_, r) in enumerate(items) if r.kind == "deleted"), default=-1)
        dead.extend(k for k, _ in items[: last_tomb + 1])
        rest = [r for _, r in items[last_tomb + 1 :]]
        if not rest:
            continue
        history = DatasetHistory(name)
        seen: set[str] = set()
        for r in rest:
            if r.kind == "dataset":
                history.owner, history.description = r.owner, r.description
                history.created_at = r.created_at
            elif r.kind == "commit":
                if r.commit not in seen:
                    seen.add(r.commit)
                    history.commits.append(r.commit)
                history.branches[r.name] = r.commit
            elif r.kind == "tag":
                history.tags[r.name] = r.commit
            elif r.kind == "untag":
                history.tags.pop(r.name, None)
        live[name] = history
    return RefLogState(live, tuple(sorted(dead)))


class RefLog:
    """Writes and reads the ref log of one lake. Thread-safe.

    The lake is asked for lazily (``lake()`` is called at the first record),
    so a catalog that journals here does not open the lake before it must.
    Every write raises what the lake raises; the catalog transaction around it
    then rolls back, so the catalog never holds a change the lake lacks.
    """

    def __init__(self, lake: Callable[[], Lake]) -> None:
        self._lake = lake
        self._last = 0
        self._lock = threading.Lock()

    def _stamp(self) -> int:
        # Never backwards within a process, even if the wall clock is stepped back.
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last

    def _write(self, record: RefRecord) -> None:
        self._lake().put(record.key, record.to_json())

    # -- the journal (see lakecache.catalog.journal.Journal) -----------------------------------

    def dataset_created(
        self, name: str, owner: str, description: str, created_at: datetime
    ) -> None:
        """Record a new dataset."""
        iso = created_at.astimezone(UTC).isoformat(timespec="microseconds")
        self._write(RefRecord(name, "dataset", self._stamp(), owner, description, iso))

    def commit_added(self, dataset: str, commit_id: str, branch: str, previous: str | None) -> None:
        """Record a commit and the move of ``branch`` to it."""
        self._write(
            RefRecord(
                dataset, "commit", self._stamp(), commit=commit_id, name=branch, previous=previous
            )
        )

    def tag_set(self, dataset: str, tag: str, commit_id: str) -> None:
        """Record a tag set (or moved) to ``commit_id``."""
        self._write(RefRecord(dataset, "tag", self._stamp(), commit=commit_id, name=tag))

    def tag_deleted(self, dataset: str, tag: str) -> None:
        """Record a tag removed."""
        self._write(RefRecord(dataset, "untag", self._stamp(), name=tag))

    def dataset_deleted(self, dataset: str) -> None:
        """Record a tombstone: the dataset and its history are gone (gc reclaims the bytes)."""
        self._write(RefRecord(dataset, "deleted", self._stamp()))

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> Iterator[tuple[str, RefRecord]]:
        """Every record in the lake as (key, record), in key order; fetched in parallel."""
        lake = self._lake()
        keys = [o.key for o in lake.list(REFS_PREFIX) if o.key.endswith(".json")]

        def fetch(key: str) -> tuple[str, RefRecord]:
            return key, RefRecord.from_json(lake.get(key))

        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="lakecache-refs") as pool:
            yield from pool.map(fetch, keys)

    def state(self) -> RefLogState:
        """The ref log replayed (see :func:`replay`)."""
        return replay(self.read())
