"""The access store's contract (ownership, API tokens, quotas), the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.common.store.conftest import Backend


async def test_a_dataset_belongs_to_its_first_claimant_only(backend: Backend) -> None:
    store = await backend.open_access()
    await store.claim_dataset("s1", "alice", "a.csv", 60, 100.0)
    await store.claim_dataset("s2", "alice", "b.csv", 40, 200.0)
    await store.claim_dataset("s3", "bob", "c.csv", 7, 150.0)
    await store.claim_dataset("s1", "bob", "stolen.csv", 1, 300.0)  # a claimed session keeps its owner
    assert await store.owns_dataset("alice", "s1")
    assert not await store.owns_dataset("bob", "s1")
    assert not await store.owns_dataset("alice", "missing")
    assert [row.session_id for row in await store.datasets_of("alice")] == ["s2", "s1"]  # newest first
    assert (await store.datasets_of("alice"))[1] == ("s1", "a.csv", 60, 100.0)
    assert await store.storage_bytes("alice") == 100
    assert await store.storage_bytes("nobody") == 0
    assert sorted(await store.datasets_before(175.0)) == ["s1", "s3"]
    await store.forget_dataset("s1")
    assert not await store.owns_dataset("alice", "s1")
    assert await store.storage_bytes("alice") == 40


async def test_a_token_acts_as_its_user_until_its_owner_revokes_it(backend: Backend) -> None:
    store = await backend.open_access()
    await store.add_token("t1", "alice", "laptop", "digest-1", 10.0)
    await store.add_token("t2", "alice", "ci", "digest-2", 20.0)
    await store.add_token("t3", "bob", "mine", "digest-3", 5.0)
    assert [t.token_id for t in await store.tokens_of("alice")] == ["t1", "t2"]
    assert (await store.tokens_of("alice"))[0].last_used_at is None
    assert await store.use_token("digest-1", 42.5) == "alice"
    assert (await store.tokens_of("alice"))[0].last_used_at == 42.5
    assert await store.use_token("no-such-digest", 1.0) is None
    assert not await store.revoke_token("bob", "t1")  # not bob's
    assert await store.use_token("digest-1", 50.0) == "alice"
    assert await store.revoke_token("alice", "t1")
    assert not await store.revoke_token("alice", "t1")
    assert await store.use_token("digest-1", 60.0) is None
    assert [t.token_id for t in await store.tokens_of("bob")] == ["t3"]


async def test_spending_stops_at_the_limit_per_user_kind_and_day(backend: Backend) -> None:
    store = await backend.open_access()
    assert [await store.spend("alice", "uploads", "2026-12-02", 3) for _ in range(5)] == [True] * 3 + [
        False
    ] * 2
    assert await store.usage("alice", "uploads", "2026-12-02") == 3  # a refused use is not counted
    assert await store.spend("alice", "uploads", "2026-12-03", 3)  # a new day
    assert await store.spend("alice", "chats", "2026-12-02", 3)  # another kind
    assert await store.spend("bob", "uploads", "2026-12-02", 3)  # another user
    assert all([await store.spend("carol", "sql_queries", "2026-12-02", 0) for _ in range(20)])  # 0: no limit
    assert await store.usage("carol", "sql_queries", "2026-12-02") == 20


async def test_two_gateways_spending_at_once_never_pass_the_limit(backend: Backend) -> None:
    """Two stores on one database (two gateways), 60 concurrent spends against a limit of 25."""
    first, second = await backend.open_access(), await backend.open_access()
    spends = [(first if i % 2 else second).spend("alice", "chats", "2026-12-02", 25) for i in range(60)]
    results = await asyncio.gather(*spends)
    assert results.count(True) == 25
    assert await first.usage("alice", "chats", "2026-12-02") == 25
    assert await second.usage("alice", "chats", "2026-12-02") == 25


async def test_what_one_gateway_writes_the_other_reads(backend: Backend) -> None:
    first, second = await backend.open_access(), await backend.open_access()
    await first.claim_dataset("s1", "alice", "a.csv", 1, 1.0)
    await first.add_token("t1", "alice", "laptop", "digest-1", 1.0)
    assert await second.owns_dataset("alice", "s1")
    assert await second.use_token("digest-1", 2.0) == "alice"
    assert await second.revoke_token("alice", "t1")
    assert await first.use_token("digest-1", 3.0) is None
