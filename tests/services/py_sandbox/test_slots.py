"""Uids per live child: distinct, reused only once given back, slices disjoint between zygotes."""

from __future__ import annotations

import pytest

from services.py_sandbox.slots import UidPool, UidsExhausted, range_problems, slice_of


def test_each_live_child_gets_its_own_uid_and_a_freed_one_comes_back() -> None:
    pool = UidPool(2_000_000_000, 3)
    taken = [pool.take() for _ in range(3)]
    assert taken == [2_000_000_000, 2_000_000_001, 2_000_000_002]
    with pytest.raises(UidsExhausted):
        pool.take()
    pool.give_back(2_000_000_001)
    assert pool.take() == 2_000_000_001


def test_zygotes_get_disjoint_slices() -> None:
    slices = [slice_of(1_900_000_000, 4096, 3, i) for i in range(3)]
    ranges = [set(range(first, first + count)) for first, count in slices]
    assert all(count == 1365 for _, count in slices)
    assert not (ranges[0] & ranges[1]) and not (ranges[1] & ranges[2])


def test_a_range_an_account_uses_is_reported() -> None:
    assert any("accounts root" in p for p in range_problems(0, 1))
    assert not [p for p in range_problems(2_100_000_000, 16) if p.startswith("uids: accounts")]
