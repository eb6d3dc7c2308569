"""The sandbox as plain calls: policy, isolation floor, dataset lookup, limits, then the pool.

Knows nothing of gRPC; the servicer is a thin adapter over it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import FailedPrecondition, InvalidInput
from common.store import DatasetStore, LocalDatasetStore
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox import policy
from services.py_sandbox.pool import LEVELS, SandboxPool, default_confinement
from services.py_sandbox.settings import PySandboxSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    """What GetSandboxStatus reports."""

    isolation: dict[str, Any]
    running: int
    queued: int
    zygotes: int
    capacity: int
    minimum_level: str
    accepting_code: bool
    weak_allowed: bool
    restarts: int


class PySandbox:
    """Runs untrusted analysis code through a pool of zygotes, refusing when isolation is too weak."""

    def __init__(self, settings: PySandboxSettings, store: DatasetStore) -> None:
        self.settings = settings
        self.store = store
        self.root_dir = Path(tempfile.mkdtemp(prefix="insightx-sandbox-root-"))
        os.chmod(self.root_dir, 0o755)
        self.cache_dir = settings.cache_dir.resolve()  # the zygote runs in another working directory
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cache_dir, 0o700)
        self.pool = SandboxPool(
            default_confinement(
                self.root_dir,
                uid=settings.sandbox_uid,
                gid=settings.sandbox_gid,
                tmp_bytes=settings.sandbox_tmp_mb << 20,
                memory_bytes=settings.sandbox_memory_mb << 20,
                max_file_bytes=settings.sandbox_max_file_mb << 20,
                max_timeout_s=settings.sandbox_max_timeout_s,
                strict=not settings.sandbox_allow_weak,
                skip=list(settings.sandbox_skip_steps),
            ),
            zygotes=settings.sandbox_zygotes,
            runs_per_zygote=settings.sandbox_runs_per_zygote,
            queue_size=settings.sandbox_queue_size,
            queue_wait_s=settings.sandbox_queue_wait_s,
            start_timeout_s=settings.sandbox_start_timeout_s,
            spares_per_zygote=settings.sandbox_spares_per_zygote,
            primed_per_zygote=settings.sandbox_primed_sessions,
        )
        self._runs = 0

    async def start(self) -> None:
        await self.pool.start()
        isolation = self.pool.isolation
        log.info(
            "sandbox isolation",
            extra={"level": isolation.get("level"), "problems": isolation.get("problems")},
        )
        if not self.accepting_code():
            log.error(
                "isolation %s is below the configured minimum %s: code will be refused "
                "(set INSIGHTX_SANDBOX_ALLOW_WEAK=1 on a development machine)",
                isolation.get("level"),
                self.settings.sandbox_min_isolation,
            )

    async def stop(self) -> None:
        await self.pool.stop()
        shutil.rmtree(self.root_dir, ignore_errors=True)

    def accepting_code(self) -> bool:
        level = LEVELS.get(str(self.pool.isolation.get("level")), 0)
        return self.settings.sandbox_allow_weak or level >= LEVELS[self.settings.sandbox_min_isolation]

    def validate(self, code: str) -> policy.Verdict:
        return policy.check(code)

    async def run(
        self, session_id: str, code: str, timeout_s: float, input_ipc: bytes | None = None
    ) -> pb.RunCodeResponse:
        """Policy first (a clear error), then the isolation floor, then one confined child.

        `input_ipc` None means "the session's dataset"; bytes (even empty: an empty `df`) replace it.
        """
        if not code.strip():
            raise InvalidInput("EMPTY_CODE", "There is no code to run.")
        if self.settings.sandbox_enforce_policy:
            verdict = policy.check(code)
            if not verdict.valid:
                return pb.RunCodeResponse(
                    error=pb.RunError(
                        category=pb.RUN_ERROR_CATEGORY_POLICY,
                        message="The code breaks the sandbox policy: " + "; ".join(verdict.violations[:10]),
                    )
                )
        if not self.accepting_code():
            raise FailedPrecondition(
                "SANDBOX_ISOLATION_TOO_WEAK",
                f"The sandbox has '{self.pool.isolation.get('level')}' isolation, below the required "
                f"'{self.settings.sandbox_min_isolation}'; refusing to run code. Problems: "
                + "; ".join(self.pool.isolation.get("problems") or []),
            )
        dataset, cache = "", ""
        if input_ipc is None:
            if not session_id:
                raise InvalidInput("MISSING_DATA", "Give a session_id or an input_table to run code over.")
            if isinstance(self.store, LocalDatasetStore):  # a small local read: no thread hop
                parquet = self.store.parquet_path(session_id).resolve()
            else:  # a remote store may download on first use
                parquet = (await asyncio.to_thread(self.store.parquet_path, session_id)).resolve()
            stat = parquet.stat()
            dataset = str(parquet)
            cache = str(self.cache_dir / f"{session_id}-{stat.st_mtime_ns}-{stat.st_size}.arrow")
        s = self.settings
        timeout = timeout_s if timeout_s > 0 else s.sandbox_default_timeout_s
        job = {
            "op": "run",
            "code": code,
            "timeout_s": min(timeout, s.sandbox_max_timeout_s),
            "dataset": dataset,
            "cache": cache,
            "memory_mb": s.sandbox_memory_mb,
            "max_output_bytes": s.sandbox_max_output_bytes,
            "max_result_rows": s.sandbox_max_result_rows,
            "max_result_bytes": s.sandbox_max_result_bytes,
            "max_result_pipe_bytes": s.sandbox_max_result_bytes
            + s.sandbox_max_figures * s.sandbox_max_figure_bytes
            + (1 << 20),
            "max_figures": s.sandbox_max_figures,
            "max_figure_bytes": s.sandbox_max_figure_bytes,
        }
        response = await self.pool.run(job, input_ipc or b"")
        self._runs += 1
        if self._runs % 50 == 0:
            await asyncio.to_thread(prune_cache, self.cache_dir, s.sandbox_cache_max_mb << 20)
        return response

    def status(self) -> Status:
        return Status(
            isolation=self.pool.isolation,
            running=self.pool.running,
            queued=self.pool.waiting,
            zygotes=self.pool.live_zygotes,
            capacity=self.pool.capacity,
            minimum_level=self.settings.sandbox_min_isolation,
            accepting_code=self.accepting_code(),
            weak_allowed=self.settings.sandbox_allow_weak,
            restarts=self.pool.restarts,
        )


def prune_cache(cache_dir: Path, max_bytes: int) -> None:
    """Drops the least recently used Arrow copies until the cache fits (the Parquet stays the truth)."""
    entries = []
    for path in cache_dir.glob("*.arrow"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        entries.append((st.st_atime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
