"""The user-id metadata helper: the form an id must have, and how it is added to and read from metadata."""

from __future__ import annotations

import pytest

from common.identity import (
    USER_ID_METADATA_KEY,
    check_user_id,
    current_user_id,
    user_id_from_metadata,
    user_id_var,
    with_user,
)


@pytest.mark.parametrize(
    "user_id", ["local", "3f1c2b9e-7a0d-4a8e-9d55-0f1f6d3c2a11", "ana@example.org", "github|12345"]
)
def test_ids_people_have_are_accepted(user_id: str) -> None:
    assert check_user_id(user_id) == user_id
    assert user_id_from_metadata(with_user((), user_id)) == user_id


@pytest.mark.parametrize("bad", ["", " ana", "a b", "a\nb", "é", "x" * 129, "-leading"])
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=USER_ID_METADATA_KEY):
        check_user_id(bad)
    with pytest.raises(ValueError):
        user_id_from_metadata([(USER_ID_METADATA_KEY, bad)])


def test_with_user_replaces_an_earlier_id_and_keeps_other_pairs() -> None:
    metadata = with_user([("x-request-id", "r1"), (USER_ID_METADATA_KEY, "old")], "new")
    assert metadata == (("x-request-id", "r1"), (USER_ID_METADATA_KEY, "new"))
    assert with_user([("x-request-id", "r1")], None) == (("x-request-id", "r1"),)
    assert user_id_from_metadata([("x-request-id", "r1")]) is None


def test_current_user_id_is_the_served_calls_user() -> None:
    assert current_user_id() is None
    token = user_id_var.set("ana")
    try:
        assert current_user_id() == "ana"
    finally:
        user_id_var.reset(token)
