"""The user a call is made for: the `insightx-user-id` gRPC metadata, set by the gateway, forwarded by peers.

Client side: `with_user(metadata, user_id)` adds the id to a call's metadata; inside a served call the
channels of `common.channels` forward the current user id by themselves (like the request id).
Server side: `current_user_id()` is the user the call is made for, or None. The server's credential
interceptor (`common.auth`) sets it only for an authenticated internal caller, after checking its form,
so a service can use it for per-user caps without checking it again.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable

import grpc

USER_ID_METADATA_KEY = "insightx-user-id"
USER_ID_MAX_LENGTH = 128
_USER_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@:+=|-]{{0,{USER_ID_MAX_LENGTH - 1}}}")

user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)


def check_user_id(user_id: str) -> str:
    """Returns `user_id` if it has the form of an id (1-128 of `A-Za-z0-9._@:+=|-`), else raises ValueError.

    A Supabase `sub` (a UUID), an email-like id or a local name fit; spaces, control characters and
    anything long do not, so an id is safe in a log line, a file name part or a metadata value.
    """
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise ValueError(
            f"{USER_ID_METADATA_KEY} must be 1-{USER_ID_MAX_LENGTH} characters of A-Z a-z 0-9 . _ @ : + = | -"
        )
    return user_id


def with_user(metadata: Iterable[tuple[str, str]] | None, user_id: str | None) -> tuple[tuple[str, str], ...]:
    """`metadata` with `insightx-user-id` set to `user_id` (replacing any earlier one); unchanged if None."""
    pairs = [(k, v) for k, v in (metadata or ()) if user_id is None or k != USER_ID_METADATA_KEY]
    if user_id is not None:
        pairs.append((USER_ID_METADATA_KEY, check_user_id(user_id)))
    return tuple(pairs)


def user_id_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The user id carried by a call's metadata (None when absent); ValueError when malformed."""
    for key, value in metadata or ():
        if key == USER_ID_METADATA_KEY:
            return check_user_id(value.decode("ascii", "replace") if isinstance(value, bytes) else value)
    return None


def current_user_id(context: grpc.aio.ServicerContext | None = None) -> str | None:
    """The user the call being served is made for, or None (a call with no user, or outside any call).

    The value was set by the server's credential interceptor for an authenticated caller; `context` is
    accepted for readability at call sites and is not needed.
    """
    del context
    return user_id_var.get()


__all__ = [
    "USER_ID_METADATA_KEY",
    "check_user_id",
    "current_user_id",
    "user_id_from_metadata",
    "user_id_var",
    "with_user",
]
