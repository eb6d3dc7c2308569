"""Profiles computed after ImportDataset has replied: one job per session, on a small pool, stored when done.

Why: profiling a large table costs a quarter to a half of its import, and nobody needs to wait for it to
query the data. So a large table's upload is answered once its Parquet is stored, and its profile follows.
Whoever needs the profile (the orchestrator, the page) asks DescribeDataset to wait for it.

A replica that is asked to wait for a profile nobody stored computes it: the one that imported the table
may have restarted or be another host. Two replicas that both compute one store the same profile (up to
the last digits of parallel float sums; the last write wins). A profile that fails is not stored (the
cause may be passing, such as memory shared with imports): it is reported as FAILED for a minute, then
the next caller tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from common.store import DatasetStore
from insightx.v1 import sql_engine_pb2 as pb

log = logging.getLogger(__name__)


FAILED_KEPT_S = 60.0  # a failed profile is reported for this long, then the next caller tries again


class ProfileJobs:
    """Starts, tracks and stores deferred profiles; `compute` is the blocking profile of one session."""

    def __init__(
        self,
        store: DatasetStore,
        compute: Callable[[str], pb.DatasetProfile],
        workers: int = 1,
        failed_kept_s: float = FAILED_KEPT_S,
    ) -> None:
        self.store = store
        self.compute = compute
        self.failed_kept_s = failed_kept_s
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sql-profile")
        self._jobs: dict[str, Future[pb.DatasetProfile]] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Profiles queued or running."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.done())

    def running(self, session_id: str) -> Future[pb.DatasetProfile] | None:
        """This process's job for the session (queued, running, or failed recently), if it has one."""
        with self._lock:
            return self._current(session_id)

    def submit(self, session_id: str) -> Future[pb.DatasetProfile]:
        """Starts profiling a session known to have no stored profile (it was just imported)."""
        with self._lock:
            job = self._current(session_id)
            if job is None:
                job = self._pool.submit(self._run, session_id)
                self._jobs[session_id] = job
            return job

    def start(self, session_id: str) -> Future[pb.DatasetProfile]:
        """The session's profile: this process's job, the stored profile, or a new job. Blocking: it reads
        the store (outside the lock: on Supabase that may download the dataset)."""
        job = self.running(session_id)
        if job is not None:
            return job
        stored = self.store.profile(session_id)
        if stored is not None:  # stored by another replica, or by a job that has just finished
            done: Future[pb.DatasetProfile] = Future()
            done.set_result(pb.DatasetProfile.FromString(stored))
            return done
        return self.submit(session_id)  # at worst a job that just stored it runs again: same result

    def _current(self, session_id: str) -> Future[pb.DatasetProfile] | None:
        """Under the lock: the session's job, dropping a failure older than failed_kept_s."""
        failed_at = self._failed_at.get(session_id)
        if failed_at is not None and time.monotonic() - failed_at > self.failed_kept_s:
            self._jobs.pop(session_id, None)
            del self._failed_at[session_id]
        return self._jobs.get(session_id)

    def _run(self, session_id: str) -> pb.DatasetProfile:
        try:
            profile = self.compute(session_id)
            if not profile.failure:
                self.store.put_profile(session_id, profile.SerializeToString())
        except BaseException:
            self._forget(session_id)  # a store that failed may work next time: let the next call retry
            log.exception("deferred profile failed", extra={"session_id": session_id})
            raise
        with self._lock:
            if profile.failure:  # kept a while, so that callers see why, without recomputing in a loop
                self._failed_at[session_id] = time.monotonic()
            else:  # stored: readers find it there from now on
                self._jobs.pop(session_id, None)
        return profile

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._jobs.pop(session_id, None)
            self._failed_at.pop(session_id, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def state_of(profile: pb.DatasetProfile | None) -> pb.ProfileState.ValueType:
    """The wire state of a profile that is known (READY or FAILED) or not yet (None: PENDING)."""
    if profile is None:
        return pb.PROFILE_STATE_PENDING
    return pb.PROFILE_STATE_FAILED if profile.failure else pb.PROFILE_STATE_READY
