"""The template: the pristine half of a zygote, the only process children are cloned from.

A zygote forks into two right after warming up. The supervisor talks to the server and to the children,
so its memory ends up holding code, tables and results of every session it served; nothing is ever cloned
from it. The template never sees any of that: it only receives "spawn" requests (blank, or primed with a
session's cache path), clones a child into its namespaces, hands the child's pidfd and pipes to the
supervisor over a Unix socket (SCM_RIGHTS), and reaps its children, reporting each exit status. So a
child inherits warm libraries and nothing that belonged to another run.

Each child gets a slot of its own: a uid no other live child has (so RLIMIT_NPROC counts that run alone)
and a cgroup created here before the clone (memory, pids, CPU under the parent group that bounds all runs).
Both are taken back when the child is reaped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import socket
from typing import Any

from services.py_sandbox import cgroups, harness, isolation
from services.py_sandbox.isolation import Confinement, IsolationReport
from services.py_sandbox.slots import UidPool, UidsExhausted

MESSAGE_BYTES = 1 << 16


class Template:
    """Clones children on request and reports their exits."""

    def __init__(self, conf: Confinement, sock: socket.socket) -> None:
        self.conf = conf
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, int | None, dict[str, str]]] = {}  # pidfd -> (pid, uid, cgroup)
        self.uids = UidPool(conf.uid, conf.uid_count) if conf.uid_count > 0 else None
        self.parent = cgroups.Hierarchy(conf.cgroup_version, dict(conf.cgroup_parent))
        self.namespaces, self.namespace_problems = isolation.available_namespaces(conf)
        self.clone_flags = isolation.namespace_flags(self.namespaces)
        isolation.prepare_seccomp()

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        socket.send_fds(self.sock, [json.dumps(message).encode()], fds or [])

    def take_slot(self, tag: int) -> tuple[int | None, dict[str, str], list[str]]:
        """A uid of its own and a cgroup of its own for the next child (and what could not be had)."""
        uid = self.uids.take() if self.uids is not None else None
        group: dict[str, str] = {}
        problems: list[str] = []
        if self.parent.version:
            try:
                group = cgroups.create_run(
                    self.parent,
                    f"run-{os.getpid()}-{tag}",
                    self.conf.run_memory_bytes,
                    self.conf.max_processes,
                    self.conf.run_cpus,
                )
            except OSError as exc:
                problems.append(f"cgroup: the run's group could not be created ({exc})")
        return uid, group, problems

    def give_back(self, uid: int | None, group: dict[str, str]) -> bool:
        """Frees the slot; True when the kernel OOM-killed something in its cgroup."""
        oom = cgroups.oom_killed(group) if group else False
        if group:
            cgroups.remove(group)
        if uid is not None and self.uids is not None:
            self.uids.give_back(uid)
        return oom

    def spawn(self, tag: int, primed: dict[str, str] | None, urgent: bool = False) -> None:
        try:
            uid, group, slot_problems = self.take_slot(tag)
        except UidsExhausted as exc:
            self.send({"op": "failed", "tag": tag, "error": str(exc)})
            return
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(4)]  # stdout, stderr, result, job
        try:
            pid, pidfd = isolation.clone_into_namespaces(self.clone_flags)
        except OSError as exc:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            self.give_back(uid, group)
            self.send({"op": "failed", "tag": tag, "error": str(exc)})
            return
        if pid == 0:
            report = IsolationReport(
                namespaces=list(self.namespaces), problems=list(self.namespace_problems) + slot_problems
            )
            conf = self.conf if uid is None else dataclasses.replace(self.conf, uid=uid, gid=uid)
            harness.child_main(
                conf, report, (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]), primed, group
            )
        for fd in (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]):
            os.close(fd)
        handed = [pidfd, pipes[3][1], pipes[0][0], pipes[1][0], pipes[2][0]]
        self.send({"op": "spawned", "tag": tag, "pid": pid}, handed)
        for fd in handed[1:]:
            os.close(fd)  # the supervisor has its own copies now; the template keeps only the pidfd
        self.children[pidfd] = (pid, uid, group)
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")

    def on_exit(self, pidfd: int) -> None:
        self.selector.unregister(pidfd)
        pid, uid, group = self.children.pop(pidfd)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        oom = self.give_back(uid, group)
        self.send({"op": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(status), "oom": oom})

    def on_request(self) -> bool:
        data, _, _, _ = socket.recv_fds(self.sock, MESSAGE_BYTES, 0)
        if not data:
            return False  # the supervisor is gone
        request = json.loads(data)
        if request.get("op") == "spawn":
            self.spawn(int(request["tag"]), request.get("primed"), bool(request.get("urgent")))
        return True

    def serve(self) -> None:
        self.selector.register(self.sock, selectors.EVENT_READ, "request")
        while True:
            for key, _ in self.selector.select():
                if key.data == "request":
                    if not self.on_request():
                        return
                else:
                    self.on_exit(key.fd)
