"""Where sessions' datasets and chats live: an interface and its embedded local implementation."""

from common.store.chats import ChatStore, StoredMessage
from common.store.datasets import DatasetRecord, DatasetStore, LocalDatasetStore, open_dataset_store

__all__ = [
    "ChatStore",
    "DatasetRecord",
    "DatasetStore",
    "LocalDatasetStore",
    "StoredMessage",
    "open_dataset_store",
]
