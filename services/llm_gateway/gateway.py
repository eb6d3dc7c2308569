"""Completions through rotating key pools: one request, tried key after key until one answers or none can.

Knows nothing of gRPC: callers pass plain requests and a monotonic deadline, and get plain results or an
`InsightError` (ALL_KEYS_EXHAUSTED, LLM_NOT_CONFIGURED, UPSTREAM_UNAVAILABLE, STREAM_INTERRUPTED, ...).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InsightError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.llm_gateway.agents import AgentConfig, AgentRegistry
from services.llm_gateway.events import EventBus, KeyEvent
from services.llm_gateway.keys import ApiKey, KeyPool, Lease
from services.llm_gateway.settings import OPENAI_DEFAULT_BASE_URL, LlmGatewaySettings
from services.llm_gateway.upstream import (
    FailureKind,
    UpstreamFailure,
    Usage,
    chunk_delta,
    classify_body_error,
    classify_status,
    completion_chunks,
    parse_completion,
    parse_usage,
)

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class CompletionRequest:
    """What a caller asks for; empty fields take the agent's defaults."""

    agent: str
    messages: Sequence[tuple[str, str]]
    model: str = ""
    provider: str = ""
    temperature: float | None = None
    max_tokens: int = 0


@dataclass
class Completion:
    content: str
    model: str
    usage: Usage
    provider: str
    key_fingerprint: str
    key_events: list[KeyEvent] = field(default_factory=list)
    attempts: int = 1


@dataclass
class StreamPiece:
    """A delta of a streamed completion; the first carries provenance, the last has `done` and usage."""

    delta: str
    model: str
    provider: str = ""
    key_fingerprint: str = ""
    key_events: list[KeyEvent] = field(default_factory=list)
    usage: Usage | None = None
    done: bool = False


@dataclass
class AgentUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Provider:
    """One provider: its base URL, key pool and pooled HTTP client."""

    name: str
    base_url: str
    pool: KeyPool
    client: httpx.AsyncClient

    @property
    def completions_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def build_providers(settings: LlmGatewaySettings, events: EventBus) -> dict[str, Provider]:
    """The bytez and openai providers from settings (a provider without keys is kept, NOT_CONFIGURED)."""
    providers: dict[str, Provider] = {}
    for name in ("bytez", "openai"):
        base_url = getattr(settings, f"{name}_base_url")
        keyless_server = name == "openai" and bool(settings.openai_base_url)
        if name == "openai" and not base_url:
            base_url = OPENAI_DEFAULT_BASE_URL
        pool = KeyPool(
            name,
            settings.keys_for(name),
            events,
            max_in_flight=getattr(settings, f"llm_{name}_max_in_flight_per_key"),
            cooldown_base_s=settings.llm_cooldown_base_s,
            cooldown_cap_s=settings.llm_cooldown_cap_s,
            slot_wait_s=settings.llm_slot_wait_s,
            anonymous=keyless_server,
        )
        limits = httpx.Limits(
            max_connections=settings.llm_max_connections,
            max_keepalive_connections=settings.llm_max_connections,
        )
        client = httpx.AsyncClient(
            limits=limits,
            timeout=httpx.Timeout(
                connect=settings.llm_connect_timeout_s,
                read=settings.llm_first_byte_timeout_s,
                write=settings.llm_write_timeout_s,
                pool=settings.llm_slot_wait_s,
            ),
            headers={"content-type": "application/json", "accept": "application/json"},
        )
        providers[name] = Provider(name=name, base_url=base_url, pool=pool, client=client)
    return providers


def _transport_failure(exc: httpx.TransportError) -> UpstreamFailure:
    """Timeouts and connection errors: the provider may answer on another try."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamFailure(FailureKind.TRANSIENT, "timeout")
    return UpstreamFailure(FailureKind.TRANSIENT, f"connection error ({type(exc).__name__})")


class _Attempts:
    """The retry policy of one call: which key next, what a failure means, how long to back off."""

    def __init__(self, gateway: LlmGateway, provider: Provider, deadline: float | None) -> None:
        self.gateway = gateway
        self.provider = provider
        self.pool = provider.pool
        self.deadline = deadline
        self.events: list[KeyEvent] = []
        self.count = 0
        self.transient = 0
        self.previous: ApiKey | None = None
        self.last: UpstreamFailure | None = None
        self.started = time.monotonic()
        settings = gateway.settings
        self.limit = settings.llm_max_attempts + 2 * len(self.pool.keys)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def lease(self) -> Lease:
        """The next key to try: a different one than the last when another is healthy."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise self._deadline_error()
        avoid = {self.previous.fingerprint} if self.previous else set()
        lease = await self.pool.acquire(avoid, self.deadline)
        self.count += 1
        if self.previous is not None and self.last is not None:
            self.events.append(self.pool.rotated(self.previous, lease, self.last.reason))
        return lease

    def timeout(self) -> httpx.Timeout:
        s = self.gateway.settings
        remaining = self.remaining()
        if remaining is None:
            return httpx.Timeout(
                connect=s.llm_connect_timeout_s,
                read=s.llm_first_byte_timeout_s,
                write=s.llm_write_timeout_s,
                pool=s.llm_slot_wait_s,
            )
        if remaining <= 0:
            raise self._deadline_error()
        return httpx.Timeout(
            connect=min(s.llm_connect_timeout_s, remaining),
            read=min(s.llm_first_byte_timeout_s, remaining),
            write=min(s.llm_write_timeout_s, remaining),
            pool=remaining,
        )

    async def failed(self, lease: Lease, failure: UpstreamFailure) -> None:
        """Records `failure` against the key; returns to try again, raises when the call must end."""
        if failure.kind is FailureKind.AUTH:
            self.events.extend(self.pool.disable(lease, failure.reason))
        elif failure.kind is FailureKind.RATE_LIMIT:
            self.events.extend(self.pool.cool_down(lease, failure.reason, failure.retry_after_s))
        else:
            self.pool.failed(lease)
        log.info(
            "upstream attempt failed",
            extra={
                "provider": self.provider.name,
                "fingerprint": lease.key.fingerprint,
                "failure": failure.kind.value,
                "reason": failure.reason,
                "attempt": self.count,
            },
        )
        self.previous, self.last = lease.key, failure
        if failure.kind is FailureKind.CALLER:
            raise self._caller_error(failure)
        if self.count >= self.limit:
            raise self._gave_up()
        if failure.kind is FailureKind.TRANSIENT:
            self.transient += 1
            if self.transient >= self.gateway.settings.llm_max_attempts:
                raise self._gave_up()
            await self._backoff()

    async def _backoff(self) -> None:
        s = self.gateway.settings
        step = min(s.llm_retry_backoff_cap_s, s.llm_retry_backoff_s * 2 ** (self.transient - 1))
        delay = step * self.gateway.rng.uniform(0.5, 1.0)
        remaining = self.remaining()
        if remaining is not None and remaining <= delay:
            raise self._gave_up()
        if delay > 0:
            await asyncio.sleep(delay)

    def _deadline_error(self) -> DeadlineExceeded:
        last = f" (last failure: {self.last.reason})" if self.last else ""
        return DeadlineExceeded(
            "DEADLINE_EXCEEDED",
            f"The {self.provider.name} provider did not answer before the deadline{last}.",
            {"provider": self.provider.name, "attempts": str(self.count)},
        )

    def _gave_up(self) -> InsightError:
        reason = self.last.reason if self.last else "no answer"
        return Unavailable(
            "UPSTREAM_UNAVAILABLE",
            f"The {self.provider.name} provider failed {self.count} time(s) (last: {reason}); "
            "try again shortly.",
            {"provider": self.provider.name, "attempts": str(self.count), "last_failure": reason},
        )

    def _caller_error(self, failure: UpstreamFailure) -> InsightError:
        detail = self.pool.redact(failure.detail) or "no details"
        message = f"The {self.provider.name} provider rejected the request ({failure.reason}): {detail}"
        metadata = {"provider": self.provider.name, "status": str(failure.status or "")}
        if failure.status == 404:
            return NotFound("MODEL_NOT_FOUND", message, metadata)
        if failure.status in (400, 413, 422):
            return InvalidInput("UPSTREAM_REJECTED_REQUEST", message, metadata)
        return FailedPrecondition("UPSTREAM_REJECTED_REQUEST", message, metadata)


class LlmGateway:
    """The providers, the agent registry and the usage books."""

    def __init__(
        self,
        settings: LlmGatewaySettings,
        registry: AgentRegistry,
        events: EventBus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.events = events or EventBus()
        self.rng = rng or random.Random()
        self.providers = build_providers(settings, self.events)
        self.agent_usage: dict[str, AgentUsage] = {}

    async def close(self) -> None:
        for provider in self.providers.values():
            provider.pool.close()
            await provider.client.aclose()

    # -- requests ------------------------------------------------------------------------------------------

    def _resolve(self, request: CompletionRequest, stream: bool) -> tuple[Provider, dict[str, Any], str]:
        """The provider, the request body and the agent's name for the books."""
        agent: AgentConfig | None = (
            self.registry.get(request.agent) if request.agent else AgentConfig(name="default")
        )
        if agent is None:
            raise InvalidInput(
                "UNKNOWN_AGENT",
                f"No agent named {request.agent!r}; known agents: {', '.join(self.registry.names())}.",
                {"agent": request.agent},
            )
        provider_name = request.provider or agent.provider
        provider = self.providers.get(provider_name)
        if provider is None:
            raise InvalidInput(
                "UNKNOWN_PROVIDER",
                f"No provider named {provider_name!r}; use one of {', '.join(self.providers)}.",
                {"provider": provider_name},
            )
        if not provider.pool.configured:
            raise FailedPrecondition(
                "LLM_NOT_CONFIGURED",
                f"No {provider_name} API key is configured (set {provider_name.upper()}_API_KEYS).",
                {"provider": provider_name},
            )
        if not request.messages:
            raise InvalidInput("EMPTY_MESSAGES", "A completion needs at least one message.")
        messages = []
        for role, content in request.messages:
            if role not in ROLES:
                raise InvalidInput("INVALID_ROLE", f"Unknown message role {role!r}; use one of {ROLES}.")
            messages.append({"role": role, "content": content})
        if agent.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": agent.system_prompt})
        body = {
            "model": request.model or agent.model,
            "messages": messages,
            "temperature": agent.temperature if request.temperature is None else request.temperature,
            "max_tokens": request.max_tokens or agent.max_tokens,
            "stream": stream,
        }
        return provider, body, agent.name

    @staticmethod
    def _headers(lease: Lease) -> dict[str, str]:
        return {"authorization": f"Bearer {lease.key.secret}"} if lease.key.secret else {}

    def _account(
        self, agent: str, lease: Lease, provider: Provider, usage: Usage, attempts: _Attempts, stream: bool
    ) -> None:
        """Books a success against the key and the agent, and logs it (fingerprint only)."""
        provider.pool.succeeded(lease, usage.prompt_tokens, usage.completion_tokens)
        books = self.agent_usage.setdefault(agent, AgentUsage())
        books.requests += 1
        books.prompt_tokens += usage.prompt_tokens
        books.completion_tokens += usage.completion_tokens
        log.info(
            "completion",
            extra={
                "agent": agent,
                "provider": provider.name,
                "fingerprint": lease.key.fingerprint,
                "stream": stream,
                "attempts": attempts.count,
                "tokens": usage.total_tokens,
                "duration_ms": round((time.monotonic() - attempts.started) * 1000, 2),
            },
        )

    async def complete(self, request: CompletionRequest, deadline: float | None = None) -> Completion:
        """One completion; rotates keys on 401/403/429, retries 5xx/timeouts, fails fast when none is left."""
        provider, body, agent = self._resolve(request, stream=False)
        attempts = _Attempts(self, provider, deadline)
        payload = json.dumps(body).encode()
        while True:
            lease = await attempts.lease()
            try:
                try:
                    reply = await provider.client.post(
                        provider.completions_url,
                        content=payload,
                        headers=self._headers(lease),
                        timeout=attempts.timeout(),
                    )
                    failure = classify_status(reply.status_code, reply.headers, reply.content)
                    if failure is None:
                        data = reply.json()
                        failure = classify_body_error(data, reply.headers)
                        if failure is None:
                            content, model, usage = parse_completion(data)
                            self._account(agent, lease, provider, usage, attempts, stream=False)
                            return Completion(
                                content=content,
                                model=model or str(body["model"]),
                                usage=usage,
                                provider=provider.name,
                                key_fingerprint=lease.key.fingerprint,
                                key_events=attempts.events,
                                attempts=attempts.count,
                            )
                except UpstreamFailure as exc:
                    failure = exc
                except ValueError:
                    failure = UpstreamFailure(FailureKind.TRANSIENT, "malformed response body", 200)
                except httpx.TransportError as exc:
                    failure = _transport_failure(exc)
            finally:
                provider.pool.release(lease)
            await attempts.failed(lease, failure)

    async def stream(
        self, request: CompletionRequest, deadline: float | None = None
    ) -> AsyncGenerator[StreamPiece, None]:
        """Deltas as they arrive. Before the first token a failure moves on to another key; after it, the
        stream ends with STREAM_INTERRUPTED and nothing is ever sent twice."""
        provider, body, agent = self._resolve(request, stream=True)
        attempts = _Attempts(self, provider, deadline)
        payload = json.dumps(body).encode()
        model = str(body["model"])
        sent = 0
        while True:
            lease = await attempts.lease()
            failure: UpstreamFailure | None = None
            usage: Usage | None = None
            try:
                try:
                    async with provider.client.stream(
                        "POST",
                        provider.completions_url,
                        content=payload,
                        headers={**self._headers(lease), "accept": "text/event-stream"},
                        timeout=attempts.timeout(),
                    ) as reply:
                        failure = classify_status(
                            reply.status_code,
                            reply.headers,
                            await reply.aread() if reply.status_code >= 300 else b"",
                        )
                        if failure is None and not reply.headers.get("content-type", "").startswith(
                            "text/event-stream"
                        ):
                            # A 200 that is not a stream: an error body, or a server ignoring stream=true.
                            data = json.loads(await reply.aread())
                            failure = classify_body_error(data, reply.headers)
                            if failure is None:
                                content, model_name, usage = parse_completion(data)
                                yield self._first(content, model_name or model, provider, lease, attempts)
                                sent += len(content)
                                self._account(agent, lease, provider, usage, attempts, stream=True)
                                yield StreamPiece(delta="", model=model_name or model, usage=usage, done=True)
                                return
                        if failure is None:
                            async for chunk in completion_chunks(reply.aiter_lines(), reply.headers):
                                usage = parse_usage(chunk) or usage
                                model = str(chunk.get("model") or model)
                                delta = chunk_delta(chunk)
                                if delta and sent == 0:
                                    yield self._first(delta, model, provider, lease, attempts)
                                elif delta:
                                    yield StreamPiece(delta=delta, model=model)
                                sent += len(delta)
                        if failure is None:
                            final = usage or Usage()
                            self._account(agent, lease, provider, final, attempts, stream=True)
                            yield StreamPiece(delta="", model=model, usage=usage, done=True)
                            return
                except UpstreamFailure as exc:
                    failure = exc
                except ValueError:
                    failure = UpstreamFailure(FailureKind.TRANSIENT, "malformed stream chunk", 200)
                except httpx.TransportError as exc:
                    failure = _transport_failure(exc)
            finally:
                provider.pool.release(lease)
            if sent:
                provider.pool.failed(lease)
                log.info(
                    "stream interrupted",
                    extra={"provider": provider.name, "fingerprint": lease.key.fingerprint, "chars": sent},
                )
                raise Unavailable(
                    "STREAM_INTERRUPTED",
                    f"The {provider.name} stream broke after {sent} characters ({failure.reason}); the text "
                    "received so far is incomplete and was not repeated.",
                    {"provider": provider.name, "sent_chars": str(sent), "last_failure": failure.reason},
                )
            await attempts.failed(lease, failure)

    @staticmethod
    def _first(delta: str, model: str, provider: Provider, lease: Lease, attempts: _Attempts) -> StreamPiece:
        return StreamPiece(
            delta=delta,
            model=model,
            provider=provider.name,
            key_fingerprint=lease.key.fingerprint,
            key_events=list(attempts.events),
        )
