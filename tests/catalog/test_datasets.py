"""Datasets: create, get, list, and the errors a user sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from catalog.helpers import commit_chain, make_commit
from lakecache.catalog import Catalog, DatasetRecord
from lakecache.errors import AlreadyExistsError, DatasetNotFoundError, UserError


def test_create_get_and_list(catalog: Catalog) -> None:
    before = datetime.now(UTC)
    created = catalog.create_dataset("xray", "alice", "chest x-rays")
    catalog.create_dataset("audio.v2", "bob")
    catalog.create_dataset("0-mnist_small", "carol")

    assert isinstance(created, DatasetRecord)
    assert (created.name, created.owner, created.description) == ("xray", "alice", "chest x-rays")
    assert created.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= created.created_at <= datetime.now(UTC)
    assert catalog.get_dataset("xray") == created
    assert [d.name for d in catalog.list_datasets()] == ["0-mnist_small", "audio.v2", "xray"]
    assert catalog.get_dataset("audio.v2").description == ""


def test_duplicate_name_is_refused(catalog: Catalog) -> None:
    catalog.create_dataset("xray", "alice")
    with pytest.raises(AlreadyExistsError, match="'xray' already exists") as info:
        catalog.create_dataset("xray", "bob")
    assert "lakecache data commit xray" in info.value.hint
    assert catalog.get_dataset("xray").owner == "alice"
    assert len(catalog.list_datasets()) == 1


@pytest.mark.parametrize(
    "name", ["", "X-ray", "-lead", ".hidden", "a/b", "a b", "ü", "a" * 65, "x\n", "x@1"]
)
def test_invalid_names_are_refused_with_the_rule(catalog: Catalog, name: str) -> None:
    with pytest.raises(UserError, match="invalid dataset name") as info:
        catalog.create_dataset(name, "alice")
    assert "lowercase letters" in info.value.hint
    assert catalog.list_datasets() == []


def test_longest_valid_name(catalog: Catalog) -> None:
    name = "a" * 64
    assert catalog.create_dataset(name, "alice").name == name


def test_owner_is_required(catalog: Catalog) -> None:
    with pytest.raises(UserError, match="needs an owner"):
        catalog.create_dataset("xray", "  ")


def test_missing_dataset_is_reported_everywhere(catalog: Catalog) -> None:
    calls = [
        lambda: catalog.get_dataset("nope"),
        lambda: catalog.dataset_stats("nope"),
        lambda: catalog.head("nope"),
        lambda: catalog.resolve("nope", None),
        lambda: catalog.log("nope"),
        lambda: catalog.tags("nope"),
        lambda: catalog.get_commit("nope", "0" * 64),
    ]
    for call in calls:
        with pytest.raises(DatasetNotFoundError, match="no dataset named 'nope'") as info:
            call()
        assert "lakecache data init" in info.value.hint


def test_stats_follow_the_head(catalog: Catalog) -> None:
    catalog.create_dataset("xray", "alice")
    assert catalog.dataset_stats("xray") == {
        "commit_count": 0,
        "head": None,
        "file_count": 0,
        "bytes": 0,
    }
    ids = commit_chain(catalog, "xray", 3)
    head = catalog.get_commit("xray", ids[-1])
    assert catalog.dataset_stats("xray") == {
        "commit_count": 3,
        "head": ids[-1],
        "file_count": head.file_count,
        "bytes": head.bytes,
    }


def test_stats_of_many_at_once_are_each_ones_stats(catalog: Catalog) -> None:
    """The dataset list's one query says what dataset_stats says of each dataset: empty,
    with a history on main, and with commits only on another branch (no head)."""
    for name in ("empty", "history", "side", "other"):
        catalog.create_dataset(name, "alice")
    commit_chain(catalog, "history", 3)
    commit_chain(catalog, "other", 1, start_minute=10)
    side = make_commit("side", (), "on a branch", 20)
    catalog.add_commit(side, expected_head=None, branch="dev")
    records = {r.name: r for r in catalog.list_datasets()}
    wanted = ["empty", "history", "side"]  # not "other": only the ids asked for come back
    many = catalog.datasets_stats([records[n].id for n in wanted])
    assert many == {records[n].id: catalog.dataset_stats(n) for n in wanted}
    assert many[records["side"].id] == {
        "commit_count": 1,
        "head": None,
        "file_count": 0,
        "bytes": 0,
    }
    assert many[records["history"].id]["commit_count"] == 3
    assert catalog.datasets_stats([]) == {}
