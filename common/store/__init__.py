"""Where sessions' datasets, chats and the gateway's access state live: interfaces and their embedded
(SQLite, local folder) and shared (PostgreSQL, Supabase) implementations."""

from common.store.access import AccessStore, DatasetRow, TokenRow
from common.store.chats import Chat, ChatRepository, Insight, StoredMessage
from common.store.datasets import DatasetRecord, DatasetStore, LocalDatasetStore, open_dataset_store

__all__ = [
    "AccessStore",
    "Chat",
    "ChatRepository",
    "DatasetRecord",
    "DatasetRow",
    "DatasetStore",
    "Insight",
    "LocalDatasetStore",
    "StoredMessage",
    "TokenRow",
    "open_dataset_store",
]
