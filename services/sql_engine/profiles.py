"""Profiles computed after ImportDataset has replied: one job per session, on a small pool, stored when done.

Why: profiling a large table costs a quarter to a half of its import, and nobody needs to wait for it to
query the data. So a large table's upload is answered once its Parquet is stored, and its profile follows.
Whoever needs the profile (the orchestrator, the page) asks DescribeDataset to wait for it.

Any replica can compute a missing profile: the one that imported the table may have restarted or be
another host. Profiles are deterministic, so two replicas that both compute one store the same bytes.
A profile that fails is not stored (the cause may be passing, such as memory): it is kept in memory as
FAILED for this process, and a restart tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from common.store import DatasetStore
from insightx.v1 import sql_engine_pb2 as pb

log = logging.getLogger(__name__)


class ProfileJobs:
    """Starts, tracks and stores deferred profiles; `compute` is the blocking profile of one session."""

    def __init__(
        self, store: DatasetStore, compute: Callable[[str], pb.DatasetProfile], workers: int = 1
    ) -> None:
        self.store = store
        self.compute = compute
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sql-profile")
        self._jobs: dict[str, Future[pb.DatasetProfile]] = {}
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Profiles queued or running."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.done())

    def start(self, session_id: str) -> Future[pb.DatasetProfile]:
        """The session's profile job: the running one, a finished one from the store, or a new one.
        Blocking (it may read the store)."""
        with self._lock:
            job = self._jobs.get(session_id)
            if job is not None:
                return job
            stored = self.store.profile(session_id)
            if stored is not None:  # stored by another replica, or by a job that has just finished
                done: Future[pb.DatasetProfile] = Future()
                done.set_result(pb.DatasetProfile.FromString(stored))
                return done
            job = self._pool.submit(self._run, session_id)
            self._jobs[session_id] = job
            return job

    def _run(self, session_id: str) -> pb.DatasetProfile:
        try:
            profile = self.compute(session_id)
            if not profile.failure:
                self.store.put_profile(session_id, profile.SerializeToString())
        except BaseException:
            self._forget(session_id)  # a store that failed may work next time: let the next call retry
            log.exception("deferred profile failed", extra={"session_id": session_id})
            raise
        if not profile.failure:
            self._forget(session_id)  # stored: readers find it there from now on
        return profile

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._jobs.pop(session_id, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def state_of(profile: pb.DatasetProfile | None) -> pb.ProfileState.ValueType:
    """The wire state of a profile that is known (READY or FAILED) or not yet (None: PENDING)."""
    if profile is None:
        return pb.PROFILE_STATE_PENDING
    return pb.PROFILE_STATE_FAILED if profile.failure else pb.PROFILE_STATE_READY
