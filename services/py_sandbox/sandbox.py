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
from services.py_sandbox import cgroups, policy, slots
from services.py_sandbox.fairshare import Caps, FairShare
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
    limits: dict[str, Any]


class PySandbox:
    """Runs untrusted analysis code through a pool of zygotes, refusing when isolation is too weak."""

    def __init__(self, settings: PySandboxSettings, store: DatasetStore) -> None:
        self.settings = settings
        self.store = store
        self.root_dir = Path(tempfile.mkdtemp(prefix="insightx-sandbox-root-"))
        os.chmod(self.root_dir, 0o755)
        self.cache_dir = settings.cache_dir.resolve()  # the zygote runs in another working directory
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. the data volume is mounted read-only into this container
            fallback = Path(tempfile.gettempdir()) / "insightx-sandbox-cache"
            log.warning("sandbox cache %s unusable (%s); using %s", self.cache_dir, exc, fallback)
            self.cache_dir = fallback
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cache_dir, 0o700)
        s = settings
        self.run_memory_bytes = (
            s.sandbox_memory_mb + s.sandbox_tmp_mb + 64
        ) << 20  # rlimit AS + /tmp + slack
        self.problems: list[str] = []
        self.cgroup = cgroups.Hierarchy("", {})
        if s.sandbox_cgroups:
            name = f"{cgroups.PARENT_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
            self.cgroup, problems = cgroups.create_parent(name, s.sandbox_memory_total_mb << 20)
            self.problems += problems
        else:
            self.problems.append("cgroup: switched off by INSIGHTX_SANDBOX_CGROUPS")
        self.fair = FairShare(
            {
                "session": Caps(s.sandbox_session_max_running, s.sandbox_session_max_queued),
                "user": Caps(s.sandbox_user_max_running, s.sandbox_user_max_queued),
            }
        )
        self.pool = SandboxPool(
            default_confinement(
                self.root_dir,
                uid=settings.sandbox_uid,
                gid=settings.sandbox_gid,
                uid_count=settings.sandbox_uid_count,
                tmp_bytes=settings.sandbox_tmp_mb << 20,
                memory_bytes=settings.sandbox_memory_mb << 20,
                max_file_bytes=settings.sandbox_max_file_mb << 20,
                max_processes=settings.sandbox_max_processes,
                max_timeout_s=settings.sandbox_max_timeout_s,
                strict=not settings.sandbox_allow_weak,
                skip=list(settings.sandbox_skip_steps),
                cgroup_version=self.cgroup.version,
                cgroup_parent=dict(self.cgroup.dirs),
                run_memory_bytes=self.run_memory_bytes,
                run_cpus=settings.sandbox_cpus,
            ),
            zygotes=settings.sandbox_zygotes,
            runs_per_zygote=settings.sandbox_runs_per_zygote,
            queue_size=settings.sandbox_queue_size,
            queue_wait_s=settings.sandbox_queue_wait_s,
            start_timeout_s=settings.sandbox_start_timeout_s,
            spares_per_zygote=settings.sandbox_spares_per_zygote,
            primed_per_zygote=settings.sandbox_primed_sessions,
            max_running=self._runs_within_total(),
        )
        self._runs = 0

    def _runs_within_total(self) -> int:
        """Without a memory cgroup the kernel cannot hold the total, so admission does: each run can add at
        most its rlimit and its /tmp, so only total // that many run at once (0: the cgroup holds it)."""
        if "memory" in self.cgroup.controllers:
            return 0
        per_run = (self.settings.sandbox_memory_mb + self.settings.sandbox_tmp_mb) << 20
        runs = max(1, (self.settings.sandbox_memory_total_mb << 20) // per_run)
        self.problems.append(
            f"cgroup: no memory cgroup; the {self.settings.sandbox_memory_total_mb} MiB total is kept by "
            f"admitting at most {runs} run(s) at once"
        )
        return runs

    async def start(self) -> None:
        if self.settings.sandbox_uid_count > 0:
            self.problems += await asyncio.to_thread(
                slots.range_problems, self.settings.sandbox_uid, self.settings.sandbox_uid_count
            )
        await self.pool.start()
        isolation = self.pool.isolation
        log.info(
            "sandbox isolation",
            extra={
                "level": isolation.get("level"),
                "problems": [*(isolation.get("problems") or []), *self.problems],
                "cgroup": self.cgroup.version or "none",
            },
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
        if self.cgroup.version:
            await asyncio.to_thread(remove_parent, self.cgroup)

    def accepting_code(self) -> bool:
        level = LEVELS.get(str(self.pool.isolation.get("level")), 0)
        return self.settings.sandbox_allow_weak or level >= LEVELS[self.settings.sandbox_min_isolation]

    def validate(self, code: str) -> policy.Verdict:
        return policy.check(code)

    async def run(
        self,
        session_id: str,
        code: str,
        timeout_s: float,
        input_ipc: bytes | None = None,
        user_id: str = "",
    ) -> pb.RunCodeResponse:
        """Policy first (a clear error), the isolation floor, the caller's fair share, one confined child.

        `input_ipc` None means "the session's dataset"; bytes (even empty: an empty `df`) replace it; they
        are handed to the child as bytes and decoded only inside its confinement.
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
        run_timeout_s = min(timeout, s.sandbox_max_timeout_s)
        job = {
            "op": "run",
            "code": code,
            "timeout_s": run_timeout_s,
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
            "max_input_bytes": s.sandbox_max_input_mb << 20,
        }
        keys = [("session", session_id)] + ([("user", user_id)] if user_id else [])
        async with self.fair.admit(keys, run_timeout_s, s.sandbox_queue_wait_s):
            response = await self.pool.run(job, input_ipc or b"")
        if response.error.category == pb.RUN_ERROR_CATEGORY_INVALID_INPUT:
            raise InvalidInput("INVALID_INPUT_TABLE", response.error.message)
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
            limits=self.limits(),
        )

    def limits(self) -> dict[str, Any]:
        """The per-run and across-run limits in force (for the isolation report)."""
        s = self.settings
        has = set(self.cgroup.controllers)
        first, count = s.sandbox_uid, max(s.sandbox_uid_count, 1)
        return {
            "cgroup": self.cgroup.version,
            "run_memory_limit_bytes": self.run_memory_bytes if "memory" in has else 0,
            "memory_total_bytes": (s.sandbox_memory_total_mb << 20) if "memory" in has else 0,
            "run_pids_limit": s.sandbox_max_processes,
            "run_cpu_limit": s.sandbox_cpus if "cpu" in has else 0.0,
            "uid_first": first,
            "uid_last": first + count - 1,
            "problems": list(self.problems),
        }


def remove_parent(parent: cgroups.Hierarchy) -> None:
    """Removes the runs' parent group and any run group a killed zygote left behind."""
    for path in dict.fromkeys(parent.dirs.values()):
        try:
            leftovers = [e.path for e in os.scandir(path) if e.is_dir()]
        except OSError:
            continue
        for leftover in leftovers:
            cgroups.remove({"x": leftover}, attempts=400)  # its last task may still be exiting
    cgroups.remove(dict(parent.dirs), attempts=400)


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
