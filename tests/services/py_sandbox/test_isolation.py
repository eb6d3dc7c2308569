"""Isolation steps on their own, in throwaway forked children (no service): what each step really does."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from services.py_sandbox import isolation
from services.py_sandbox.isolation import Confinement, IsolationReport


def in_child(body) -> int:  # type: ignore[no-untyped-def]
    """Runs `body` in a forked child and returns its exit code (the test process is never confined)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = int(body())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_seccomp_denies_sockets_processes_and_signals_but_allows_threads() -> None:
    def body() -> int:
        isolation.build_filter(os.getpid()).load()
        for attempt in (lambda: socket.socket(), os.fork, lambda: os.kill(os.getppid(), 0), os.setsid):
            try:
                attempt()
                return 1
            except PermissionError:
                pass
        import threading

        done = []
        thread = threading.Thread(target=lambda: done.append(1))
        thread.start()
        thread.join()
        return 0 if done == [1] else 2

    assert in_child(body) == 0


def test_clone_gives_pid_1_in_new_namespaces() -> None:
    names = list(isolation.NAMESPACES)
    pid, pidfd = isolation.clone_into_namespaces(isolation.namespace_flags(names))
    if pid == 0:
        ok = os.getpid() == 1 and socket.if_nameindex() == [(1, "lo")]
        os._exit(0 if ok else 1)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_report_levels() -> None:
    strong = IsolationReport(
        namespaces=list(isolation.NAMESPACES),
        private_filesystem=True,
        rlimits=list(isolation.RLIMIT_NAMES),
        uid=65534,
        no_new_privs=True,
        seccomp=True,
        clean_environment=True,
    )
    assert strong.level() == "strong"
    assert IsolationReport(uid=0).level() == "none"
    assert IsolationReport(namespaces=["net"], uid=0).level() == "partial"
    assert IsolationReport(**{**strong.__dict__, "seccomp": False}).level() == "partial"


def test_a_skipped_step_is_reported_and_strict_mode_refuses_a_failed_one() -> None:
    conf = Confinement(
        root_dir="/nonexistent", readonly_paths=[], readonly_files=[], symlinks={}, skip=["seccomp"]
    )
    report = IsolationReport()
    isolation.install_seccomp(conf, report)
    assert not report.seccomp and report.problems == ["seccomp: skipped by configuration"]
    strict = Confinement(root_dir="/nonexistent", readonly_paths=[], readonly_files=[], symlinks={})
    with pytest.raises(isolation.IsolationError):
        isolation._fail(IsolationReport(), strict, "uid", OSError(errno.EPERM, "denied"))
