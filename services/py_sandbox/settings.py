"""Python sandbox settings (`INSIGHTX_SANDBOX_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import Settings

IsolationLevel = Literal["strong", "partial", "none"]


class PySandboxSettings(Settings):
    """Pool size, per-run limits and the isolation floor; defaults suit a 2-core, 24 GiB machine."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    sandbox_zygotes: int = Field(2, description="warm zygote processes")
    sandbox_runs_per_zygote: int = Field(12, description="children one zygote supervises at once")
    sandbox_spares_per_zygote: int = Field(1, description="blank children cloned ahead of need per zygote")
    sandbox_primed_sessions: int = Field(
        2, description="recent sessions per zygote that keep a child waiting with their data already mapped"
    )
    sandbox_queue_size: int = Field(16, description="runs that may wait for a slot before RESOURCE_EXHAUSTED")
    sandbox_queue_wait_s: float = Field(10.0, description="longest wait for a slot")
    sandbox_default_timeout_s: float = Field(30.0, description="wall-clock limit when the request gives none")
    sandbox_max_timeout_s: float = Field(120.0, description="largest wall-clock limit a request may ask for")
    sandbox_memory_mb: int = Field(1024, description="address space a run may add (RLIMIT_AS)")
    sandbox_tmp_mb: int = Field(16, description="size of the private /tmp of a run")
    sandbox_max_file_mb: int = Field(8, description="largest file a run may write (RLIMIT_FSIZE)")
    sandbox_max_output_bytes: int = Field(
        64 * 1024, description="cap of stdout and of stderr; a flood is killed"
    )
    sandbox_max_result_rows: int = Field(10_000, description="rows of a DataFrame result")
    sandbox_max_result_bytes: int = Field(16 << 20, description="bytes of the encoded result")
    sandbox_max_figures: int = Field(8, description="figures returned per run")
    sandbox_max_figure_bytes: int = Field(4 << 20, description="bytes of one PNG figure")
    sandbox_uid: int = Field(
        1_900_000_000,
        description="first uid of the children's range (one uid per live child; no host account may use it)",
    )
    sandbox_uid_count: int = Field(
        4096, description="size of that range, split between zygotes; 0: every child runs as sandbox_uid"
    )
    sandbox_gid: int = Field(
        65534, description="gid of the children when sandbox_uid_count is 0 (else gid = uid)"
    )
    sandbox_memory_total_mb: int = Field(
        8192, description="memory all runs together may use (the runs' parent cgroup)"
    )
    sandbox_max_processes: int = Field(
        256, description="processes and threads of one run (pids cgroup, NPROC)"
    )
    sandbox_cpus: float = Field(1.0, description="CPUs one run may use (its cgroup's quota; 0: unlimited)")
    sandbox_cgroups: bool = Field(True, description="give each run its own cgroup when the host allows it")
    sandbox_max_input_mb: int = Field(
        256, description="decoded size of a caller's input_table; larger is INVALID_ARGUMENT"
    )
    sandbox_session_max_running: int = Field(4, description="runs one session may have running at once")
    sandbox_session_max_queued: int = Field(4, description="runs one session may have waiting for a slot")
    sandbox_user_max_running: int = Field(
        8, description="runs one user (gRPC metadata insightx-user-id) may have running at once"
    )
    sandbox_user_max_queued: int = Field(8, description="runs one user may have waiting for a slot")
    sandbox_min_isolation: IsolationLevel = Field("strong", description="floor below which code is refused")
    sandbox_allow_weak: bool = Field(False, description="development machine: run code below the floor")
    sandbox_skip_steps: list[str] = Field(
        default_factory=list, description="isolation steps to skip (development/testing only), e.g. seccomp"
    )
    sandbox_enforce_policy: bool = Field(True, description="run the AST policy before the code")
    sandbox_cache_dir: Path | None = Field(
        None, description="per-session Arrow cache; default data_dir/sandbox_cache"
    )
    sandbox_cache_max_mb: int = Field(4096, description="size of the Arrow cache before old entries go")
    sandbox_start_timeout_s: float = Field(90.0, description="time a zygote may take to become ready")

    @property
    def capacity(self) -> int:
        return self.sandbox_zygotes * self.sandbox_runs_per_zygote

    @property
    def cache_dir(self) -> Path:
        return self.sandbox_cache_dir or self.data_dir / "sandbox_cache"
