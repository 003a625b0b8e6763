"""Name rules, without a database."""

from __future__ import annotations

import pytest

from lakecache.catalog import check_dataset_name, check_ref_name
from lakecache.errors import UserError


@pytest.mark.parametrize("name", ["a", "xray", "x-ray_2.v1", "0", "a" * 64])
def test_valid_dataset_names(name: str) -> None:
    assert check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "_a", "a" * 65, "a/b", "é"])
def test_invalid_dataset_names(name: str) -> None:
    with pytest.raises(UserError) as info:
        check_dataset_name(name)
    assert "1 to 64 characters" in info.value.hint


@pytest.mark.parametrize("name", ["v1.0", "RC-2", "main2", "latest-good", "cafe"])
def test_valid_tag_names(name: str) -> None:
    assert check_ref_name(name, "tag") == name


def test_main_is_a_branch_name_but_not_a_tag_name() -> None:
    assert check_ref_name("main", "branch") == "main"
    with pytest.raises(UserError, match="reserved"):
        check_ref_name("main", "tag")
    with pytest.raises(UserError, match="reserved"):
        check_ref_name("HEAD", "branch")


def test_full_commit_ids_cannot_be_names() -> None:
    with pytest.raises(UserError, match="looks like a commit id"):
        check_ref_name("AB" * 32, "tag")
