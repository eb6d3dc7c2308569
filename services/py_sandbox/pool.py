"""The server's side of the zygotes: start them, hand them runs, apply back-pressure, restart the dead.

The server process never forks untrusted code and never shares memory with a zygote: each zygote is a
fresh interpreter started with a clean environment (no API keys), talking over its stdin/stdout in frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.errors import ResourceExhausted, Unavailable
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox import frames
from services.py_sandbox.isolation import CLEAN_ENV, Confinement
from services.py_sandbox.slots import slice_of

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"none": 0, "partial": 1, "strong": 2}
CONTROL_KINDS = frozenset({frames.CONTROL_JSON, frames.CONTROL_BLOB})


class ZygoteGone(RuntimeError):
    """The zygote died while a run was in flight."""


def error_response(
    category: pb.RunErrorCategory.ValueType, message: str, elapsed_ms: float = 0.0
) -> pb.RunCodeResponse:
    return pb.RunCodeResponse(error=pb.RunError(category=category, message=message), elapsed_ms=elapsed_ms)


class ZygoteProcess:
    """One zygote and the runs it has in flight."""

    def __init__(
        self,
        index: int,
        confinement: Confinement,
        on_exit: Callable[[ZygoteProcess], None],
        spares: int = 1,
        primed: int = 2,
    ) -> None:
        self.index = index
        self.spares = spares
        self.primed = primed
        self.confinement = confinement
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.inflight: dict[str, asyncio.Future[pb.RunCodeResponse]] = {}
        self.ready: asyncio.Future[dict[str, Any]] | None = None
        self.isolation: dict[str, Any] = {}
        self.alive = False
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    async def start(self, timeout_s: float) -> dict[str, Any]:
        """Starts the interpreter and waits until it has measured its isolation."""
        env = {**CLEAN_ENV, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.py_sandbox.zygote",
            json.dumps(asdict(self.confinement)),
            json.dumps({"spares": self.spares, "primed": self.primed}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(REPO_ROOT),
            limit=1 << 20,
        )
        self.ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        try:
            self.isolation = await asyncio.wait_for(self.ready, timeout_s)
        except BaseException:  # timeout, early exit or cancellation: leave no process behind
            await self.stop()
            raise
        self.alive = True
        return self.isolation

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        reader = frames.FrameReader(CONTROL_KINDS, 1 << 30)
        header: dict[str, Any] | None = None
        try:
            while chunk := await self.proc.stdout.read(1 << 20):
                for kind, payload in reader.feed(chunk):
                    if kind == frames.CONTROL_JSON:
                        header = json.loads(payload)
                        continue
                    if header is None:
                        continue
                    self._dispatch(header, payload)
                    header = None
        except (frames.FrameError, ValueError):
            log.exception("zygote %d sent a malformed control frame", self.index)
        finally:
            self.alive = False
            if self.ready is not None and not self.ready.done():
                self.ready.set_exception(ZygoteGone("the zygote exited before it was ready"))
            for future in self.inflight.values():
                if not future.done():
                    future.set_exception(ZygoteGone("the zygote exited during the run"))
            self.inflight.clear()
            if self.proc is not None and self.proc.returncode is None:
                # Reaped through asyncio, and killed only if it lingers: Popen.kill() first polls with
                # waitpid, which would steal the exit status from asyncio's own watcher.
                try:
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), 2.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
            self.on_exit(self)

    def _dispatch(self, header: dict[str, Any], blob: bytes) -> None:
        if header.get("op") == "ready" and self.ready is not None and not self.ready.done():
            self.ready.set_result(dict(header.get("isolation") or {}))
        elif header.get("op") == "done":
            future = self.inflight.pop(str(header.get("run_id")), None)
            if future is not None and not future.done():
                future.set_result(pb.RunCodeResponse.FromString(blob))

    async def run(self, job: dict[str, Any], input_ipc: bytes) -> pb.RunCodeResponse:
        """Sends one run and waits for its reply."""
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise ZygoteGone("the zygote is not running")
        future: asyncio.Future[pb.RunCodeResponse] = asyncio.get_running_loop().create_future()
        self.inflight[job["run_id"]] = future
        data = frames.encode(frames.CONTROL_JSON, json.dumps(job).encode()) + frames.encode(
            frames.CONTROL_BLOB, input_ipc
        )
        try:
            try:
                async with self._write_lock:
                    self.proc.stdin.write(data)
                    await self.proc.stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                self.inflight.pop(job["run_id"], None)
                raise ZygoteGone(str(exc)) from exc
            return await future
        except asyncio.CancelledError:
            self.cancel(job["run_id"])
            raise

    def cancel(self, run_id: str) -> None:
        """The caller gave up (its deadline, a disconnect): the zygote kills the child now, not at its own
        deadline, so a slot and a fair share freed here are not still held by a running child."""
        self.inflight.pop(run_id, None)
        if not self.alive or self.proc is None or self.proc.stdin is None:
            return
        message = json.dumps({"op": "cancel", "run_id": run_id}).encode()
        with contextlib.suppress(ConnectionError, RuntimeError):
            # One write() call: the transport appends it whole, after any job already queued.
            self.proc.stdin.write(
                frames.encode(frames.CONTROL_JSON, message) + frames.encode(frames.CONTROL_BLOB, b"")
            )

    def forget(self, run_id: str) -> None:
        self.inflight.pop(run_id, None)

    async def stop(self) -> None:
        """Closing stdin asks it to stop; a kill follows if it lingers."""
        proc = self.proc
        self.alive = False
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class SandboxPool:
    """A fixed number of zygotes, each with a number of run slots, a bounded wait queue and restarts."""

    def __init__(
        self,
        confinement: Confinement,
        zygotes: int,
        runs_per_zygote: int,
        queue_size: int,
        queue_wait_s: float,
        start_timeout_s: float,
        spares_per_zygote: int = 1,
        primed_per_zygote: int = 2,
        max_running: int = 0,
    ) -> None:
        self.confinement = confinement
        self.spares_per_zygote = spares_per_zygote
        self.primed_per_zygote = primed_per_zygote
        self.max_running = max_running  # > 0: admit at most this many runs at once (the memory total)
        self.size = zygotes
        self.runs_per_zygote = runs_per_zygote
        self.queue_size = queue_size
        self.queue_wait_s = queue_wait_s
        self.start_timeout_s = start_timeout_s
        self.zygotes: list[ZygoteProcess | None] = [None] * zygotes
        self.load: dict[int, int] = dict.fromkeys(range(zygotes), 0)
        self.waiting = 0
        self.restarts = 0
        self.isolation: dict[str, Any] = {"level": "none", "problems": ["no zygote started yet"]}
        self._slot_freed = asyncio.Condition()
        self._stopping = False
        self._respawns: set[asyncio.Task[None]] = set()

    @property
    def capacity(self) -> int:
        return self.size * self.runs_per_zygote

    @property
    def running(self) -> int:
        return sum(self.load.values())

    @property
    def live_zygotes(self) -> int:
        return sum(1 for z in self.zygotes if z is not None and z.alive)

    async def start(self) -> None:
        """Starts every zygote; the pool's isolation is the weakest any of them measured."""
        for index in range(self.size):
            await self._spawn(index)
        if self.live_zygotes == 0:
            raise Unavailable("SANDBOX_UNAVAILABLE", "No sandbox zygote could start; see the service log.")

    def confinement_of(self, index: int) -> Confinement:
        """Zygote `index` hands out uids from its own slice of the range only."""
        if self.confinement.uid_count <= 0:
            return self.confinement
        first, count = slice_of(self.confinement.uid, self.confinement.uid_count, self.size, index)
        return dataclasses.replace(self.confinement, uid=first, uid_count=count)

    async def _spawn(self, index: int) -> None:
        zygote = ZygoteProcess(
            index, self.confinement_of(index), self._on_exit, self.spares_per_zygote, self.primed_per_zygote
        )
        try:
            report = await zygote.start(self.start_timeout_s)
        except (TimeoutError, ZygoteGone) as exc:
            log.error("zygote %d failed to start: %s", index, exc)
            return
        self.zygotes[index] = zygote
        live = [z.isolation for z in self.zygotes if z is not None and z.alive]
        self.isolation = min(live, key=lambda r: LEVELS.get(str(r.get("level")), 0)) if live else report
        log.info("zygote ready", extra={"index": index, "isolation": report.get("level")})
        async with self._slot_freed:
            self._slot_freed.notify_all()

    def _on_exit(self, zygote: ZygoteProcess) -> None:
        if self._stopping or self.zygotes[zygote.index] is not zygote:
            return
        log.warning("zygote %d exited; restarting it", zygote.index)
        self.zygotes[zygote.index] = None
        self.restarts += 1
        task = asyncio.get_running_loop().create_task(self._respawn(zygote.index))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, index: int) -> None:
        delay = 0.2
        while not self._stopping and self.zygotes[index] is None:
            await self._spawn(index)
            if self.zygotes[index] is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _free_zygote(self, affinity: str = "") -> ZygoteProcess | None:
        """The session's own zygote when it has room (its primed children wait there), else the least busy."""
        if self.max_running and self.running >= self.max_running:
            return None
        candidates = [
            z for z in self.zygotes if z is not None and z.alive and self.load[z.index] < self.runs_per_zygote
        ]
        if affinity and candidates:
            home = zlib.crc32(affinity.encode()) % self.size
            for zygote in candidates:
                if zygote.index == home:
                    return zygote
        return min(candidates, key=lambda z: self.load[z.index]) if candidates else None

    async def _acquire(self, affinity: str = "") -> ZygoteProcess:
        zygote = self._free_zygote(affinity)
        if zygote is not None:
            self.load[zygote.index] += 1
            return zygote
        if self.waiting >= self.queue_size:
            raise _busy(self.capacity)
        self.waiting += 1
        try:
            async with self._slot_freed:
                await asyncio.wait_for(
                    self._slot_freed.wait_for(lambda: self._free_zygote() is not None), self.queue_wait_s
                )
                zygote = self._free_zygote(affinity)
                assert zygote is not None
                self.load[zygote.index] += 1
                return zygote
        except TimeoutError:
            raise _busy(self.capacity) from None
        finally:
            self.waiting -= 1

    async def _release(self, zygote: ZygoteProcess) -> None:
        self.load[zygote.index] -= 1
        async with self._slot_freed:
            self._slot_freed.notify()

    async def run(self, job: dict[str, Any], input_ipc: bytes = b"") -> pb.RunCodeResponse:
        """Runs one job; a reply always comes by the job's timeout plus a small margin."""
        zygote = await self._acquire("" if input_ipc else str(job.get("cache") or ""))
        job = {**job, "run_id": uuid.uuid4().hex}
        timeout_s = float(job["timeout_s"])
        try:
            return await asyncio.wait_for(zygote.run(job, input_ipc), timeout_s + 0.9)
        except TimeoutError:
            # The zygote missed its own deadline: it is wedged, so it is replaced.
            log.error("zygote %d missed a deadline; killing it", zygote.index)
            zygote.forget(job["run_id"])
            zygote.kill()
            return error_response(
                pb.RUN_ERROR_CATEGORY_TIMEOUT,
                f"The run took longer than {timeout_s:g} s; it was stopped.",
                (timeout_s + 0.9) * 1000,
            )
        except ZygoteGone:
            return error_response(
                pb.RUN_ERROR_CATEGORY_KILLED,
                "The sandbox process running the code died; it is being restarted.",
            )
        finally:
            await self._release(zygote)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._respawns):
            task.cancel()
        await asyncio.gather(*(z.stop() for z in self.zygotes if z is not None), return_exceptions=True)


def _busy(capacity: int) -> ResourceExhausted:
    return ResourceExhausted(
        "SANDBOX_BUSY",
        f"All {capacity} sandbox slots are busy and the wait queue is full; retry in a second.",
        {"retry_after_s": "1"},
    )


def default_confinement(root_dir: Path, **limits: Any) -> Confinement:
    """What a child may see: the interpreter, its packages, /usr and the shared-library cache, read-only."""
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), "/usr"}
    for entry in sys.path:
        real = os.path.realpath(entry)
        if (
            "site-packages" in real
            and os.path.isdir(real)
            and not any(real.startswith(p + "/") for p in prefixes)
        ):
            prefixes.add(real)
    readonly_paths, symlinks = sorted(prefixes), {}
    for top in ("/lib", "/lib32", "/lib64", "/bin", "/sbin"):
        if os.path.islink(top):
            symlinks[top] = os.readlink(top)
        elif os.path.isdir(top):
            readonly_paths.append(top)
    files = [f for f in ("/etc/ld.so.cache",) if os.path.isfile(f)]
    if os.path.islink("/etc/localtime"):
        symlinks["/etc/localtime"] = os.readlink("/etc/localtime")
    return Confinement(
        root_dir=str(root_dir),
        readonly_paths=readonly_paths,
        readonly_files=files,
        symlinks=symlinks,
        **limits,
    )
