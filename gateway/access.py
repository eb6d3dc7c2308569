"""Access checks shared by every route: who calls, whether they own the session or chat they name, their
quotas, and the metadata that tells the services which user a call is for.

A session (dataset) or chat that is not the caller's answers exactly like one that does not exist: 404 with
the same code and message, so nobody learns that another user's ids exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from common.channels import call_metadata
from common.identity import with_user
from gateway.auth import Authenticator, Unauthenticated, User
from gateway.chats import Chat, ChatRepository
from gateway.errors import error_response
from gateway.ownership import Ownership
from gateway.quotas import QuotaExceeded, Quotas
from gateway.tokens import ApiTokens


@dataclass
class Access:
    """The access state of one gateway (opened at start-up)."""

    auth: Authenticator
    ownership: Ownership
    tokens: ApiTokens
    quotas: Quotas


def access_of(request: Request) -> Access:
    return request.app.state.access  # type: ignore[no-any-return]


async def current_user(request: Request) -> User:
    """The caller (FastAPI dependency of every /api route but sign-in); 401 without a valid credential."""
    cached = getattr(request.state, "user", None)
    if isinstance(cached, User):
        return cached
    try:
        user = await access_of(request).auth.authenticate(request)
    except Unauthenticated as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    request.state.user = user
    return user


def user_metadata(user: User) -> tuple[tuple[str, str], ...]:
    """Metadata of a call made for `user`: the request id and `insightx-user-id`."""
    return with_user(call_metadata(), user.user_id)


def dataset_not_found(session_id: str) -> JSONResponse:
    """The one answer for a session that does not exist or is someone else's."""
    return error_response(
        404,
        "DATASET_NOT_FOUND",
        f"No dataset for session '{session_id}'. Upload a file first (POST /api/datasets).",
    )


def chat_not_found(chat_id: str) -> JSONResponse:
    """The one answer for a chat that does not exist, is someone else's, or is on another session."""
    return error_response(
        404, "CHAT_NOT_FOUND", f"No chat '{chat_id}' here. Create one with POST /api/chats."
    )


async def owned_session(request: Request, user: User, session_id: str) -> JSONResponse | None:
    """None when `user` owns the session; else the 404 to answer."""
    if await access_of(request).ownership.owns(user.user_id, session_id):
        return None
    return dataset_not_found(session_id)


async def owned_chat(request: Request, repo: ChatRepository, user: User, chat_id: str) -> Chat | None:
    """The chat when it exists and its session is the user's; else None (answer chat_not_found)."""
    chat = await repo.get_chat(chat_id)
    if chat is None or not await access_of(request).ownership.owns(user.user_id, chat.session_id):
        return None
    return chat


async def spend(request: Request, user: User, kind: str) -> JSONResponse | None:
    """Counts one use against the user's quota; the 429 to answer when it is spent."""
    try:
        await access_of(request).quotas.spend(user.user_id, kind)
    except QuotaExceeded as exc:
        return quota_response(exc)
    return None


def quota_response(exc: QuotaExceeded) -> JSONResponse:
    return error_response(429, "QUOTA_EXCEEDED", exc.message)
