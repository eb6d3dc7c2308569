"""The operating-system boundary of a run: namespaces, a private root, rlimits, an unprivileged id, seccomp.

Python 3.11 has no `os.unshare` or `pivot_root`, so these go through `ctypes` on libc (x86_64 syscall
numbers). Each step records what it achieved in an `IsolationReport`; in strict mode a failed step stops the
run instead of running untrusted code with less isolation than reported.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyseccomp

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
NAMESPACES = {
    "net": CLONE_NEWNET,
    "mnt": CLONE_NEWNS,
    "pid": CLONE_NEWPID,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_GET_SECCOMP = 21
SYS_PIVOT_ROOT = 155  # x86_64

RLIMIT_NAMES = ("AS", "CPU", "FSIZE", "NOFILE", "NPROC", "CORE")

# Denied with EPERM: a clear PermissionError in the code, not a mysterious death.
DENIED_SYSCALLS = (
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kill",
    "tkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "setsid",
    "setpgid",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capset",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "personality",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "lookup_dcookie",
    "vhangup",
    "mknod",
    "mknodat",
    "process_madvise",
    "memfd_secret",
)


class IsolationError(RuntimeError):
    """A required isolation step failed (strict mode)."""


@dataclass
class Confinement:
    """What to apply in a child; built by the server from settings and handed to the zygote as JSON."""

    root_dir: str
    readonly_paths: list[str]
    readonly_files: list[str]
    symlinks: dict[str, str]
    uid: int = 65534
    gid: int = 65534
    tmp_bytes: int = 16 << 20
    memory_bytes: int = 1 << 30
    max_file_bytes: int = 8 << 20
    max_open_files: int = 64
    max_processes: int = 256
    max_timeout_s: float = 120.0
    strict: bool = True
    skip: list[str] = field(default_factory=list)
    uid_count: int = 0  # > 0: each live child gets its own uid from [uid, uid + uid_count)
    cgroup_version: str = ""  # "v2", "v1" or "": the hierarchy of `cgroup_parent`
    cgroup_parent: dict[str, str] = field(default_factory=dict)  # controller -> the runs' parent group
    run_memory_bytes: int = 0  # one run's cgroup memory limit
    run_cpus: float = 0.0  # one run's CPU quota (0: unlimited)


@dataclass
class IsolationReport:
    """The isolation a child actually got (what GetSandboxStatus reports)."""

    namespaces: list[str] = field(default_factory=list)
    private_filesystem: bool = False
    rlimits: list[str] = field(default_factory=list)
    uid: int = -1
    no_new_privs: bool = False
    seccomp: bool = False
    clean_environment: bool = False
    problems: list[str] = field(default_factory=list)
    cgroup_controllers: list[str] = field(default_factory=list)

    def level(self) -> str:
        """ "strong" when every step held, "none" when nothing did, else "partial"."""
        full = (
            set(self.namespaces) >= set(NAMESPACES)
            and self.private_filesystem
            and self.seccomp
            and self.no_new_privs
            and self.uid != 0
            and len(self.rlimits) == len(RLIMIT_NAMES)
            and self.clean_environment
        )
        if full:
            return "strong"
        if not self.namespaces and not self.seccomp and self.uid == 0:
            return "none"
        return "partial"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "level": self.level()}


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _step(report: IsolationReport, conf: Confinement, name: str) -> bool:
    """False when the step is configured off (recorded as a problem)."""
    if name in conf.skip:
        report.problems.append(f"{name}: skipped by configuration")
        return False
    return True


def _fail(report: IsolationReport, conf: Confinement, name: str, exc: BaseException) -> None:
    report.problems.append(f"{name}: {exc}")
    if conf.strict:
        raise IsolationError(f"isolation step '{name}' failed: {exc}") from exc


_pylibc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across clone, as in os.fork
_pylibc.syscall.restype = ctypes.c_long
SYS_CLONE = 56  # x86_64
CLONE_PIDFD = 0x00001000


def clone_into_namespaces(flags: int) -> tuple[int, int]:
    """fork() into new namespaces in one step: the child is pid 1 of its own pid namespace.

    unshare(CLONE_NEWPID) would only move the *next* child into the new namespace (hence the usual second
    fork); clone() with the flags creates the child there directly, which saves a whole fork per run.

    Returns (pid, pidfd) in the parent and (0, -1) in the child. CPython's fork hooks run around the raw
    clone exactly as os.fork runs them, so the interpreter state of the child is sound.
    """
    pidfd = ctypes.c_int(-1)
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _pylibc.syscall(
        ctypes.c_long(SYS_CLONE),
        ctypes.c_ulong(flags | CLONE_PIDFD | signal.SIGCHLD),
        ctypes.c_void_p(0),
        ctypes.byref(pidfd),
        ctypes.c_void_p(0),
        ctypes.c_void_p(0),
    )
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0, -1
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid, pidfd.value


def available_namespaces(conf: Confinement) -> tuple[list[str], list[str]]:
    """Which namespaces a child can get here (tried once, in throwaway children), and the problems."""
    names, problems = [], []
    for name, flag in NAMESPACES.items():
        if f"ns:{name}" in conf.skip:
            problems.append(f"ns:{name}: skipped by configuration")
            continue
        try:
            pid, pidfd = clone_into_namespaces(flag)
        except OSError as exc:
            problems.append(f"ns:{name}: {exc}")
            continue
        if pid == 0:
            os._exit(0)
        os.close(pidfd)
        os.waitpid(pid, 0)
        names.append(name)
    return names, problems


def namespace_flags(names: list[str]) -> int:
    flags = 0
    for name in names:
        flags |= NAMESPACES[name]
    return flags


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _bind_readonly(source: str, target: Path, is_file: bool) -> None:
    if is_file:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    else:
        target.mkdir(parents=True, exist_ok=True)
    _mount(source, str(target), None, MS_BIND | MS_REC)
    _mount(None, str(target), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def private_root(conf: Confinement, report: IsolationReport) -> None:
    """Pivots into a tmpfs holding read-only binds of what Python needs, /dev basics and a private /tmp."""
    if "mnt" not in report.namespaces or not _step(report, conf, "filesystem"):
        if "mnt" not in report.namespaces:
            report.problems.append("filesystem: no mount namespace")
        return
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = Path(conf.root_dir)
        _mount("tmpfs", str(root), "tmpfs", MS_NOSUID, "size=1m,mode=755")
        # The private /tmp first: the interpreter or venv may itself live under /tmp (a checkout there),
        # and its read-only binds then land inside this tmpfs instead of colliding with it.
        (root / "tmp").mkdir()
        _mount("tmpfs", str(root / "tmp"), "tmpfs", MS_NOSUID | MS_NODEV, f"size={conf.tmp_bytes},mode=1777")
        for path in conf.readonly_paths:
            _bind_readonly(path, root / path.lstrip("/"), is_file=False)
        for path in conf.readonly_files:
            _bind_readonly(path, root / path.lstrip("/"), is_file=True)
        for link, target in conf.symlinks.items():
            where = root / link.lstrip("/")
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(target)
        for dev in ("null", "zero", "random", "urandom"):
            _bind_readonly(f"/dev/{dev}", root / "dev" / dev, is_file=True)
        (root / "proc").mkdir()
        if "pid" in report.namespaces:
            _mount("proc", str(root / "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        (root / ".old").mkdir()
        os.chdir(root)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b".old"), "pivot_root")
        os.chdir("/")
        _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
        os.rmdir("/.old")
        _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)
        report.private_filesystem = True
    except OSError as exc:
        _fail(report, conf, "filesystem", exc)


def set_hostname(report: IsolationReport) -> None:
    if "uts" in report.namespaces:
        name = b"sandbox"
        _libc.sethostname(name, len(name))


def apply_rlimits(
    conf: Confinement, report: IsolationReport, cpu_seconds: int, file_bytes: int | None = None
) -> None:
    """AS is counted on top of what the zygote already maps (its imports reserve address space).

    `file_bytes` lets a child write one larger file (the session's Arrow copy) before its code runs;
    `tighten_file_size` then brings FSIZE down to the configured cap.
    """
    if not _step(report, conf, "rlimits"):
        return
    mapped = _mapped_bytes()
    limits = {
        "AS": (resource.RLIMIT_AS, mapped + conf.memory_bytes),
        "CPU": (resource.RLIMIT_CPU, max(1, cpu_seconds)),
        "FSIZE": (resource.RLIMIT_FSIZE, max(conf.max_file_bytes, file_bytes or 0)),
        "NOFILE": (resource.RLIMIT_NOFILE, conf.max_open_files),
        "NPROC": (resource.RLIMIT_NPROC, conf.max_processes),
        "CORE": (resource.RLIMIT_CORE, 0),
    }
    for name, (which, value) in limits.items():
        try:
            hard = value + 1 if name == "CPU" else value  # SIGXCPU first, then SIGKILL a second later
            resource.setrlimit(which, (value, hard))
            report.rlimits.append(name)
        except (OSError, ValueError) as exc:
            _fail(report, conf, f"rlimit:{name}", exc)


def tighten_file_size(conf: Confinement) -> None:
    """FSIZE down to the configured cap (lowering a limit needs no privilege)."""
    if "rlimits" in conf.skip:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft > conf.max_file_bytes or hard > conf.max_file_bytes:
        resource.setrlimit(resource.RLIMIT_FSIZE, (conf.max_file_bytes, conf.max_file_bytes))


def _mapped_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def drop_privileges(conf: Confinement, report: IsolationReport) -> None:
    """No supplementary groups, then gid, then uid (in that order, or the later calls are refused)."""
    if not _step(report, conf, "uid"):
        report.uid = os.getuid()
        return
    try:
        if os.getuid() == 0:
            os.setgroups([])
            os.setresgid(conf.gid, conf.gid, conf.gid)
            os.setresuid(conf.uid, conf.uid, conf.uid)
        report.uid = os.getuid()
        if report.uid == 0:
            raise OSError(errno.EPERM, "still root")
    except OSError as exc:
        report.uid = os.getuid()
        _fail(report, conf, "uid", exc)


def die_with_parent() -> None:
    """Set after the uid change (a credential change clears it)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def no_new_privs(conf: Confinement, report: IsolationReport) -> None:
    if not _step(report, conf, "no_new_privs"):
        return
    if (
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        and _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
    ):
        report.no_new_privs = True
    else:
        _fail(report, conf, "no_new_privs", OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed"))


def build_filter(own_pid: int) -> pyseccomp.SyscallFilter:
    """Allow by default; deny spawning, networking, signalling others, namespaces, kernel attack surface."""
    deny = pyseccomp.ERRNO(errno.EPERM)
    flt = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):  # a name this kernel/libseccomp does not know
            continue
    # Threads only: clone without CLONE_THREAD would be a new process.
    flt.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
    flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    # A process may signal its own threads (Python's signal machinery), nobody else.
    flt.add_rule(deny, "tgkill", pyseccomp.Arg(0, pyseccomp.NE, own_pid))
    return flt


_prepared: dict[int, pyseccomp.SyscallFilter] = {}


def prepare_seccomp() -> None:
    """Builds the filter for pid 1 once in the zygote; a child only loads it (saves milliseconds a run)."""
    _prepared[1] = build_filter(1)


def install_seccomp(conf: Confinement, report: IsolationReport) -> None:
    if not _step(report, conf, "seccomp"):
        return
    try:
        pid = os.getpid()
        (_prepared.get(pid) or build_filter(pid)).load()
        report.seccomp = _libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2
        if not report.seccomp:
            raise OSError(errno.EPERM, "filter not in force after load")
    except (OSError, RuntimeError, ValueError) as exc:
        _fail(report, conf, "seccomp", exc)


CLEAN_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}


def clean_environment(report: IsolationReport) -> None:
    """The zygote already starts with a clean environment; this makes sure nothing was added since."""
    os.environ.clear()
    os.environ.update(CLEAN_ENV)
    report.clean_environment = set(os.environ) == set(CLEAN_ENV)
