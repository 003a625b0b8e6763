"""Resolving what users type after NAME@, the history walk, and tags."""

from __future__ import annotations

import itertools

import pytest

from catalog.helpers import commit_chain, make_commit
from lakecache.catalog import Catalog
from lakecache.errors import AlreadyExistsError, AmbiguousRefError, NotFoundError, UserError
from lakecache.lake.objects import Commit


@pytest.fixture
def xray(catalog: Catalog) -> str:
    catalog.create_dataset("xray", "alice")
    return "xray"


# -- resolve ---------------------------------------------------------------------------------


def test_head_aliases(catalog: Catalog, xray: str) -> None:
    ids = commit_chain(catalog, xray, 3)
    for ref in (None, "latest", "main", "HEAD"):
        assert catalog.resolve(xray, ref) == ids[-1]


def test_empty_dataset_has_no_head(catalog: Catalog, xray: str) -> None:
    with pytest.raises(NotFoundError, match="has no commits yet") as info:
        catalog.resolve(xray, "latest")
    assert "lakecache data commit xray" in info.value.hint
    assert catalog.log(xray) == []


def test_full_id_prefix_and_tag(catalog: Catalog, xray: str) -> None:
    ids = commit_chain(catalog, xray, 3)
    catalog.set_tag(xray, "v1", ids[0])
    assert catalog.resolve(xray, ids[1]) == ids[1]
    assert catalog.resolve(xray, ids[1][:8]) == ids[1]
    assert catalog.resolve(xray, ids[1][:8].upper()) == ids[1]
    assert catalog.resolve(xray, "v1") == ids[0]


def test_unknown_refs(catalog: Catalog, xray: str) -> None:
    ids = commit_chain(catalog, xray, 2)
    for ref in ("v9", ids[0][:3], "zzzz", "0" * 64, ids[0] + "0"):
        with pytest.raises(NotFoundError) as info:
            catalog.resolve(xray, ref)
        assert "lakecache data log xray" in info.value.hint


def test_commits_of_another_dataset_do_not_resolve(catalog: Catalog, xray: str) -> None:
    catalog.create_dataset("other", "bob")
    (foreign,) = commit_chain(catalog, "other", 1)
    commit_chain(catalog, xray, 1)
    with pytest.raises(NotFoundError):
        catalog.resolve(xray, foreign)
    with pytest.raises(NotFoundError):
        catalog.get_commit(xray, foreign)


def _two_commits_sharing_a_prefix(dataset: str) -> tuple[Commit, Commit]:
    """Two root commits whose ids start with the same 4 hex characters (birthday search)."""
    seen: dict[str, Commit] = {}
    for i in itertools.count():
        commit = make_commit(dataset, message=f"candidate {i}")
        prefix = commit.id[:4]
        if prefix in seen:
            return seen[prefix], commit
        seen[prefix] = commit
    raise AssertionError("unreachable")


def test_ambiguous_prefix_lists_the_candidates(catalog: Catalog, xray: str) -> None:
    a, b = _two_commits_sharing_a_prefix(xray)
    catalog.add_commit(a, expected_head=None)
    catalog.add_commit(b, expected_head=None, branch="other")
    with pytest.raises(AmbiguousRefError) as info:
        catalog.resolve(xray, a.id[:4])
    assert a.id[:12] in str(info.value) and b.id[:12] in str(info.value)
    assert "more characters" in info.value.hint
    # One more distinguishing character settles it.
    n = next(i for i in range(4, 64) if a.id[i] != b.id[i]) + 1
    assert catalog.resolve(xray, a.id[:n]) == a.id


# -- log -------------------------------------------------------------------------------------


def test_linear_log_newest_first_with_start_and_limit(catalog: Catalog, xray: str) -> None:
    ids = commit_chain(catalog, xray, 5)
    assert [c.id for c in catalog.log(xray)] == ids[::-1]
    assert [c.id for c in catalog.log(xray, limit=2)] == ids[:2:-1]
    assert [c.id for c in catalog.log(xray, start=ids[2][:10])] == ids[2::-1]
    assert catalog.log(xray, limit=0) == []
    assert catalog.log(xray)[0] == catalog.get_commit(xray, ids[-1])


def test_log_follows_every_parent_of_a_merge_once(catalog: Catalog, xray: str) -> None:
    #   root -- a1 -- a2 --- merge
    #      \                /
    #       b1 ------------
    root = make_commit(xray, message="root", minute=0)
    a1 = make_commit(xray, (root.id,), "a1", minute=1)
    b1 = make_commit(xray, (root.id,), "b1", minute=2)
    a2 = make_commit(xray, (a1.id,), "a2", minute=3)
    merge = make_commit(xray, (a2.id, b1.id), "merge", minute=4)
    catalog.add_commit(root, expected_head=None)
    catalog.add_commit(a1, expected_head=root.id)
    catalog.add_commit(b1, expected_head=None, branch="side")
    catalog.add_commit(a2, expected_head=a1.id)
    catalog.add_commit(merge, expected_head=a2.id)

    log = catalog.log(xray)
    assert [c.message for c in log] == ["merge", "a2", "b1", "a1", "root"]
    assert log[0].parents == (a2.id, b1.id)
    assert [c.message for c in catalog.log(xray, start="side")] == ["b1", "root"]
    catalog.set_tag(xray, "before-merge", a2.id)
    assert [c.message for c in catalog.log(xray, start="before-merge")] == ["a2", "a1", "root"]


def test_log_orders_by_time_across_utc_offsets(catalog: Catalog, xray: str) -> None:
    base = make_commit(xray, message="base")
    # 05:30+05:00 is 00:30 UTC: older than 01:00 UTC although it sorts later as text.
    early = Commit(
        **{
            **make_commit(xray, (base.id,), "early").__dict__,
            "created_at": "2024-01-01T05:30:00+05:00",
        }
    )
    late = Commit(
        **{
            **make_commit(xray, (base.id,), "late").__dict__,
            "created_at": "2024-01-01T01:00:00+00:00",
        }
    )
    merge = make_commit(xray, (early.id, late.id), "merge", minute=120)
    catalog.add_commit(base, expected_head=None)
    catalog.add_commit(early, expected_head=base.id)
    catalog.add_commit(late, expected_head=None, branch="b")
    catalog.add_commit(merge, expected_head=early.id)
    assert [c.message for c in catalog.log(xray)] == ["merge", "late", "early", "base"]


def test_log_of_hundreds_of_commits(catalog: Catalog, xray: str) -> None:
    # Its speed (target: under 100 ms) is measured by `make bench`, not asserted here.
    ids = commit_chain(catalog, xray, 300)
    log = catalog.log(xray)
    assert [c.id for c in log] == ids[::-1]
    assert [c.id for c in catalog.log(xray, limit=5)] == ids[::-1][:5]


# -- tags ------------------------------------------------------------------------------------


def test_set_move_and_delete_tags(catalog: Catalog, xray: str) -> None:
    ids = commit_chain(catalog, xray, 3)
    catalog.set_tag(xray, "v1", ids[0])
    catalog.set_tag(xray, "best", ids[0][:8])
    catalog.set_tag(xray, "v2", "latest")
    catalog.set_tag(xray, "v1", ids[0])  # same place: nothing to do
    assert catalog.tags(xray) == {ids[0]: ["best", "v1"], ids[2]: ["v2"]}

    with pytest.raises(AlreadyExistsError, match="already points at") as info:
        catalog.set_tag(xray, "v1", ids[1])
    assert "--force" in info.value.hint
    catalog.set_tag(xray, "v1", ids[1], force=True)
    assert catalog.resolve(xray, "v1") == ids[1]

    catalog.delete_tag(xray, "v1")
    assert catalog.tags(xray) == {ids[0]: ["best"], ids[2]: ["v2"]}
    with pytest.raises(NotFoundError):
        catalog.resolve(xray, "v1")
    with pytest.raises(NotFoundError, match="no tag 'v1'"):
        catalog.delete_tag(xray, "v1")
    # Deleting a tag never deletes the commit.
    assert catalog.get_commit(xray, ids[1]).id == ids[1]


@pytest.mark.parametrize("tag", ["latest", "main", "HEAD", "head", "Latest"])
def test_reserved_tag_names(catalog: Catalog, xray: str, tag: str) -> None:
    (head,) = commit_chain(catalog, xray, 1)
    with pytest.raises(UserError, match="reserved"):
        catalog.set_tag(xray, tag, head)
    assert catalog.tags(xray) == {}


@pytest.mark.parametrize("tag", ["", "-x", "a/b", "a b", "t" * 129, "a" * 64])
def test_invalid_tag_names(catalog: Catalog, xray: str, tag: str) -> None:
    (head,) = commit_chain(catalog, xray, 1)
    with pytest.raises(UserError):
        catalog.set_tag(xray, tag, head)


def test_tags_and_branches_share_one_namespace(catalog: Catalog, xray: str) -> None:
    (head,) = commit_chain(catalog, xray, 1)
    catalog.add_commit(make_commit(xray, (head,), "dev"), expected_head=None, branch="dev")
    with pytest.raises(AlreadyExistsError, match="is a branch"):
        catalog.set_tag(xray, "dev", head, force=True)
    with pytest.raises(NotFoundError):
        catalog.delete_tag(xray, "dev")
    assert catalog.head(xray, "dev") is not None

    catalog.set_tag(xray, "v1", head)
    with pytest.raises(UserError, match="is a tag"):
        catalog.add_commit(make_commit(xray, (head,), "x"), expected_head=head, branch="v1")
    assert catalog.resolve(xray, "v1") == head


def test_tag_on_unknown_commit(catalog: Catalog, xray: str) -> None:
    commit_chain(catalog, xray, 1)
    with pytest.raises(NotFoundError):
        catalog.set_tag(xray, "v1", "f" * 64)
    assert catalog.tags(xray) == {}


def test_short_prefix_and_unknown_names_say_what_a_ref_is(catalog: Catalog, xray: str) -> None:
    ids = commit_chain(catalog, xray, 1)
    with pytest.raises(NotFoundError) as short:
        catalog.resolve(xray, ids[0][:3])
    assert "at least 4 hex characters" in short.value.message
    with pytest.raises(NotFoundError) as unknown:
        catalog.resolve(xray, "dev")
    assert "no tag or commit 'dev'" in unknown.value.message
    assert "tags, not branches" in unknown.value.hint


def test_tags_and_head_in_one_read_say_what_each_says(catalog: Catalog, xray: str) -> None:
    """The commit pages' one read of tags and head, for this dataset only."""
    catalog.create_dataset("other", "bob")
    ids = commit_chain(catalog, xray, 3)
    other = commit_chain(catalog, "other", 1, start_minute=10)
    catalog.set_tag(xray, "v1", ids[0])
    catalog.set_tag(xray, "best", ids[0])
    catalog.set_tag(xray, "v2", ids[2])
    catalog.set_tag("other", "elsewhere", other[0])
    catalog.create_dataset("empty", "carol")
    for name in (xray, "other", "empty"):
        record = catalog.get_dataset(name)
        tags, head = catalog.tags_and_head(record.id)
        assert tags == catalog.tags(name) and head == catalog.head(name)
    assert catalog.tags_and_head(catalog.get_dataset(xray).id) == (
        {ids[0]: ["best", "v1"], ids[2]: ["v2"]},
        ids[2],
    )
    assert catalog.tags_and_head(catalog.get_dataset("empty").id) == ({}, None)
