"""Commits and branch heads: the compare-and-swap that keeps concurrent writers honest."""

from __future__ import annotations

import threading

import pytest

from catalog.helpers import commit_chain, make_commit
from lakecache.catalog import Catalog
from lakecache.errors import ConflictError, NotFoundError, UserError
from lakecache.lake.objects import Commit


@pytest.fixture
def xray(catalog: Catalog) -> str:
    catalog.create_dataset("xray", "alice")
    return "xray"


def test_first_commit_then_a_chain(catalog: Catalog, xray: str) -> None:
    assert catalog.head(xray) is None
    first = make_commit(xray, message="first import", minute=1)
    assert catalog.add_commit(first, expected_head=None) == first.id
    assert catalog.head(xray) == first.id

    second = make_commit(xray, (first.id,), "more files", minute=2)
    assert catalog.add_commit(second, expected_head=first.id) == second.id
    assert catalog.head(xray) == second.id
    # Round trip is exact, created_at text included, so the id is the same.
    assert catalog.get_commit(xray, second.id) == second
    assert catalog.get_commit(xray, second.id).id == second.id


def test_created_at_text_round_trips_exactly(catalog: Catalog, xray: str) -> None:
    commit = make_commit(xray, message="odd time")
    odd = type(commit)(**{**commit.__dict__, "created_at": "2024-05-06T07:08:09.123456+02:00"})
    catalog.add_commit(odd, expected_head=None)
    assert catalog.get_commit(xray, odd.id).created_at == "2024-05-06T07:08:09.123456+02:00"


def test_first_commit_conflicts_if_the_branch_exists(catalog: Catalog, xray: str) -> None:
    (head,) = commit_chain(catalog, xray, 1)
    other = make_commit(xray, message="also first")
    with pytest.raises(ConflictError) as info:
        catalog.add_commit(other, expected_head=None)
    assert head[:12] in str(info.value) and "no commit" in str(info.value)
    assert "run the same commit again" in info.value.hint
    assert catalog.head(xray) == head
    with pytest.raises(NotFoundError):
        catalog.get_commit(xray, other.id)


def test_two_commits_on_the_same_parent_conflict(catalog: Catalog, xray: str) -> None:
    (parent,) = commit_chain(catalog, xray, 1)
    mine = make_commit(xray, (parent,), "mine", minute=5)
    theirs = make_commit(xray, (parent,), "theirs", minute=5)
    catalog.add_commit(theirs, expected_head=parent)

    with pytest.raises(ConflictError) as info:
        catalog.add_commit(mine, expected_head=parent)
    message = str(info.value)
    assert theirs.id[:12] in message and parent[:12] in message
    assert catalog.head(xray) == theirs.id
    # Rolled back: the losing commit is not in the catalog.
    assert [c.id for c in catalog.log(xray)] == [theirs.id, parent]
    with pytest.raises(NotFoundError):
        catalog.get_commit(xray, mine.id)
    # Rebased on the new head, it goes in.
    rebased = make_commit(xray, (theirs.id,), "mine", minute=6)
    assert catalog.add_commit(rebased, expected_head=theirs.id) == catalog.head(xray)


def test_adding_the_head_again_is_harmless(catalog: Catalog, xray: str) -> None:
    (head,) = commit_chain(catalog, xray, 1)
    again = catalog.get_commit(xray, head)
    assert catalog.add_commit(again, expected_head=head) == head
    assert catalog.dataset_stats(xray)["commit_count"] == 1


def test_parents_must_exist_in_the_dataset(catalog: Catalog, xray: str) -> None:
    catalog.create_dataset("other", "bob")
    (foreign,) = commit_chain(catalog, "other", 1)
    orphan = make_commit(xray, (foreign,), "orphan")
    with pytest.raises(NotFoundError, match="parent commit") as info:
        catalog.add_commit(orphan, expected_head=None)
    assert "lakecache data log xray" in info.value.hint
    assert catalog.head(xray) is None


def test_branches_move_independently(catalog: Catalog, xray: str) -> None:
    (base,) = commit_chain(catalog, xray, 1)
    dev = make_commit(xray, (base,), "dev work", minute=3)
    catalog.add_commit(dev, expected_head=None, branch="dev")
    assert catalog.head(xray, "dev") == dev.id
    assert catalog.head(xray) == base
    assert catalog.resolve(xray, "dev") == dev.id
    with pytest.raises(UserError, match="invalid branch name"):
        catalog.add_commit(dev, expected_head=None, branch="no/slash")
    with pytest.raises(UserError, match="reserved"):
        catalog.add_commit(dev, expected_head=None, branch="latest")


def test_unknown_dataset_in_commit(catalog: Catalog) -> None:
    with pytest.raises(NotFoundError, match="no dataset named 'ghost'"):
        catalog.add_commit(make_commit("ghost"), expected_head=None)


def _race(catalogs: list[Catalog], commits: list[Commit], parent: str | None) -> list[object]:
    """Each catalog adds its commit on ``parent`` at the same moment; returns id or error each."""
    barrier = threading.Barrier(len(catalogs))
    outcomes: list[object] = [None] * len(catalogs)

    def write(w: int) -> None:
        barrier.wait()
        try:
            outcomes[w] = catalogs[w].add_commit(commits[w], expected_head=parent)
        except ConflictError as exc:
            outcomes[w] = exc

    threads = [threading.Thread(target=write, args=(w,)) for w in range(len(catalogs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_racing_writers_on_the_same_parent_exactly_one_wins(catalog_url: str) -> None:
    """Separate Catalog objects (separate connections) commit on one parent at the same time."""
    writers, rounds = 4, 8
    catalogs = [Catalog.open(catalog_url) for _ in range(writers)]
    try:
        catalogs[0].create_dataset("race", "alice")
        head: str | None = None
        for r in range(rounds):
            commits = [
                make_commit("race", (head,) if head else (), f"round {r} writer {w}", minute=r)
                for w in range(writers)
            ]
            outcomes = _race(catalogs, commits, head)
            winners = [o for o in outcomes if isinstance(o, str)]
            losers = [o for o in outcomes if isinstance(o, ConflictError)]
            assert len(winners) == 1 and len(losers) == writers - 1, outcomes
            assert catalogs[0].head("race") == winners[0]
            head = winners[0]
        assert catalogs[0].dataset_stats("race")["commit_count"] == rounds
        assert len(catalogs[0].log("race")) == rounds
    finally:
        for cat in catalogs:
            cat.close()
