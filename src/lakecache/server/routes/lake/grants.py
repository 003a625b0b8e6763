"""Knowing a digest grants nothing: which blobs a caller may name, find, or skip uploading.

A dataset may name (in a commit), and its readers may locate, the blobs its
commits hold and those its writers uploaded for it, bytes the server read back
and hashed (:mod:`lakecache.catalog.blobs` keeps these grants). ``known`` and
``locate`` answer for the blobs of every dataset the caller can read; a new
commit may name a blob granted to its own dataset or to any dataset its writer
can read. A digest copied from a listing the caller cannot see gets "unknown"
everywhere, so the bytes must be uploaded, and then the writer holds them.

Commits made without a server (a writer holding the lake's credentials) never
wrote grants: their blobs are folded in the first time a server needs them,
one pass over each such commit's manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lakecache.server.auth import Principal, visible_datasets
from lakecache.server.routes.commits import open_index
from lakecache.server.routes.lake.access import allowed

if TYPE_CHECKING:
    from lakecache.server.runtime import ControlPlane


def readable(plane: ControlPlane, principal: Principal, datasets: list[str]) -> list[str]:
    """Every dataset the caller can read, the named ones first, their grants brought up to
    date. 404 / 403 (:func:`.access.allowed`) if it can read none of the named ones."""
    names = allowed(plane, principal, datasets, "reader")
    everything = list(dict.fromkeys([*names, *_all_readable(plane, principal)]))
    fold_in(plane, everything)
    return everything


def _all_readable(plane: ControlPlane, principal: Principal) -> list[str]:
    roles = visible_datasets(plane, principal)
    if roles is None:  # an org admin reads every dataset
        return [d.name for d in plane.hub.catalog.list_datasets()]
    return list(roles)


def fold_in(plane: ControlPlane, datasets: Sequence[str]) -> None:
    """Grant ``datasets`` the blobs of their commits that were made without a server."""
    catalog = plane.hub.catalog
    for dataset, commit_id, manifest in catalog.commits_to_grant(datasets):
        with open_index(plane, manifest) as index:
            digests = {e.digest for e in index.entries()}
        catalog.grant_blobs([dataset], digests, commit_id=commit_id)


def ungranted(
    plane: ControlPlane, principal: Principal, dataset: str, digests: set[str]
) -> tuple[set[str], set[str]]:
    """(granted elsewhere, not granted at all): the digests a new commit of ``dataset``
    names that ``dataset`` may not name yet, split by whether another dataset the
    writer can read holds them (then the commit may name them too)."""
    catalog = plane.hub.catalog
    fold_in(plane, [dataset])
    missing = digests - catalog.granted_blobs([dataset], digests)
    if not missing:
        return set(), set()
    others = [d for d in _all_readable(plane, principal) if d != dataset]
    fold_in(plane, others)
    elsewhere = catalog.granted_blobs(others, missing) if others else set()
    return elsewhere, missing - elsewhere
