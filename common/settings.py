"""Typed settings read once from the environment (and `.env`); every service shares these names."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Addresses, data location and limits common to the suite (`INSIGHTX_*` variables)."""

    model_config = SettingsConfigDict(
        env_prefix="INSIGHTX_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    orchestrator_addr: str = Field("localhost:50051", description="host:port of OrchestratorService")
    llm_gateway_addr: str = Field("localhost:50052", description="host:port of LlmGatewayService")
    sql_engine_addr: str = Field("localhost:50053", description="host:port of SqlEngineService")
    py_sandbox_addr: str = Field("localhost:50054", description="host:port of PySandboxService")
    gateway_host: str = Field("0.0.0.0", description="interface the HTTP gateway binds")
    gateway_port: int = Field(8000, description="port of the HTTP gateway")
    data_dir: Path = Field(Path("data"), description="root of the embedded dataset and chat store")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    max_upload_bytes: int = Field(1 << 30, description="largest accepted upload (bytes)")
    chat_deadline_s: float = Field(120.0, description="deadline of one chat answer, end to end")
    rpc_deadline_s: float = Field(30.0, description="default deadline of a unary call between services")
    grpc_listen_host: str = Field(
        "",
        description="interface a gRPC service binds; empty: the host of its own INSIGHTX_<SERVICE>_ADDR",
    )
    grpc_reflection: bool = Field(False, description="serve gRPC reflection (to credentialed callers only)")
    internal_token: SecretStr | None = Field(
        None, description="secret this process presents when it calls another service (make run makes one)"
    )
    internal_gateway_token: SecretStr | None = Field(
        None, description="the gateway's INSIGHTX_INTERNAL_TOKEN, or sha256:<hex> of it: a service accepts it"
    )
    internal_orchestrator_token: SecretStr | None = Field(
        None, description="the orchestrator's INSIGHTX_INTERNAL_TOKEN, or sha256:<hex> of it: as above"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def listen_address(addr: str, host: str = "") -> str:
    """The address a server binds: the interface its own address names (`host:port`), or `host` if given.

    `localhost:50053` binds loopback only; `0.0.0.0:50053` (or `[::]:50053`) every interface. An address
    naming several replicas (`h1:p,h2:p` or `dns:///name:p`: what callers are given) names no interface of
    this process: a replica then needs `host` (INSIGHTX_GRPC_LISTEN_HOST) and binds the first port named.
    """
    if "," in addr or addr.startswith("dns:"):
        first = addr.removeprefix("dns:").lstrip("/").split(",")[0].strip()
        if not host:
            raise SystemExit(
                f"{addr!r} names several replicas, none of them this process: set INSIGHTX_GRPC_LISTEN_HOST"
                " (e.g. 0.0.0.0) for the interface this replica binds, or give it its own host:port"
            )
        addr = first
    named_host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"{addr!r} is not host:port (e.g. localhost:50053)")
    bind = host or named_host or "localhost"
    if ":" in bind and not bind.startswith("["):
        bind = f"[{bind}]"
    return f"{bind}:{port}"
