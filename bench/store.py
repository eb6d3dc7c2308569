"""What the shared PostgreSQL store costs against the embedded SQLite one, per answer.

Each answer makes the gateway do the same store work: check the dataset's owner, spend one chat of the
user's daily quota, store the question (and the chat, on its first turn), read the chat's turns as history,
and store the answer. This runs that turn against both stores, in the same run, on this machine:

  1. one at a time (uncontended latency per turn);
  2. 16 at once (one gateway under load; PostgreSQL over its pool, SQLite behind its lock).

PostgreSQL is a real server started here on loopback (tools/postgres_server.py: Debian's `postgresql`),
with durability as the tests run it (fsync off), so the numbers are the store's code and round trips, not
a disk. Prints p50/p95 per turn for each and the ratio PostgreSQL / SQLite.

    .venv/bin/python bench/store.py                 # 400 turns each
    INSIGHTX_BENCH_TURNS=2000 .venv/bin/python bench/store.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.store.access import AccessStore
from common.store.chats import ChatRepository, StoredMessage
from common.store.postgres import PostgresDatabase
from common.store.postgres_access import PostgresAccessStore
from common.store.postgres_chats import PostgresChatRepository
from common.store.sqlite_access import SqliteAccessStore
from common.store.sqlite_chats import SqliteChatRepository
from tools.postgres_server import PostgresServer, bin_dir

TURNS = int(os.environ.get("INSIGHTX_BENCH_TURNS", "400"))
CONCURRENCY = 16
CHATS = 50  # turns spread over this many chats, so histories grow to TURNS / CHATS turns


async def turn(chats: ChatRepository, access: AccessStore, i: int) -> float:
    """One answer's store work; its wall time in seconds."""
    chat_id, started = f"chat-{i % CHATS}", time.perf_counter()
    assert await access.owns_dataset("alice", "session-1")
    assert await access.spend("alice", "chats", "2026-12-02", 0)
    await chats.start_turn(chat_id, "session-1", f"question {i}")
    await chats.messages(chat_id)
    await chats.add_message(StoredMessage(chat_id, "assistant", f"answer {i}", {"value": i}, "SELECT 1"))
    return time.perf_counter() - started


async def measure(chats: ChatRepository, access: AccessStore) -> dict[str, list[float]]:
    await access.claim_dataset("session-1", "alice", "a.csv", 1, 1.0)
    for i in range(20):  # warm up (connections, statement caches)
        await turn(chats, access, i)
    serial = [await turn(chats, access, i) for i in range(TURNS)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def limited(i: int) -> float:
        async with gate:
            return await turn(chats, access, i)

    concurrent = list(await asyncio.gather(*(limited(i) for i in range(TURNS))))
    return {"1 at a time": serial, f"{CONCURRENCY} at once": concurrent}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else values[0] * 1000


async def main() -> None:
    binaries = bin_dir()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed: run `make system-deps` (apt-get install postgresql)")
    server = PostgresServer(binaries).start()
    try:
        with tempfile.TemporaryDirectory() as root:
            sqlite_chats = SqliteChatRepository(Path(root))
            sqlite_access = SqliteAccessStore(Path(root) / "gateway" / "access.sqlite3")
            embedded = await measure(sqlite_chats, sqlite_access)
            await sqlite_chats.close()
            sqlite_access.close()
        db = await PostgresDatabase.open(server.new_database(), max_size=10)
        try:
            shared = await measure(await PostgresChatRepository.open(db), await PostgresAccessStore.open(db))
        finally:
            await db.close()
    finally:
        server.stop()
    print(f"store work of one answer (owner check, quota, question, history, answer), {TURNS} turns each")
    print(f"{'':16}{'SQLite p50':>12}{'p95':>9}{'PostgreSQL p50':>17}{'p95':>9}{'ratio p50':>11}{'p95':>7}")
    for name in embedded:
        e50, e95, s50, s95 = (
            pct(embedded[name], 50),
            pct(embedded[name], 95),
            pct(shared[name], 50),
            pct(shared[name], 95),
        )
        print(
            f"{name:16}{e50:10.2f}ms{e95:7.2f}ms{s50:15.2f}ms{s95:7.2f}ms{s50 / e50:10.2f}x{s95 / e95:6.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
