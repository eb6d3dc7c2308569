"""A cgroup per run under one parent group: memory, pids and CPU limits that hold whatever else runs.

rlimits are per process (AS) or per uid (NPROC); a cgroup bounds the run as a whole, and the parent
group bounds all runs together, so 24 runs of 1 GiB cannot take the host past the configured total: the
kernel reclaims or OOM-kills inside the group instead. cgroup v2 is used when its controllers are
available; else the v1 `memory`, `pids` and `cpu` hierarchies (what this machine mounts). Without either
(no root, a read-only /sys/fs/cgroup in a container) runs get no cgroup and the isolation report says so.

The server creates the parent (`Hierarchy.create_parent`), each zygote's template creates a run's group
before cloning the child (`create_run`), the child joins it as its first act (`join`), and the template
removes it once the child is reaped (`remove_run`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Hierarchy:
    """Where each controller's groups live: controller -> directory ("v2": one directory for all)."""

    version: str  # "v2", "v1" or "" (none)
    dirs: dict[str, str]

    @property
    def controllers(self) -> list[str]:
        return [c for c in CONTROLLERS if c in self.dirs]


def _own_paths() -> tuple[str | None, dict[str, str]]:
    """This process's cgroup: its v2 path and its v1 path per controller (from /proc/self/cgroup)."""
    v2, v1 = None, {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if names == "":
            v2 = path
        for name in names.split(","):
            if name:
                v1[name] = path
    return v2, v1


def _mounts() -> tuple[tuple[str, str] | None, dict[str, tuple[str, str]]]:
    """(root, mount point) of the cgroup2 mount and of each v1 controller's mount."""
    v2, v1 = None, {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        root, point, fstype, options = fields[3], fields[4], rest[0], rest[2]
        if fstype == "cgroup2":
            v2 = (root, point)
        elif fstype == "cgroup":
            for name in options.split(","):
                if name in CONTROLLERS and name not in v1:
                    v1[name] = (root, point)
    return v2, v1


def _join(mount: tuple[str, str], path: str) -> str:
    root, point = mount
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    return os.path.join(point, relative.lstrip("/"))


def detect() -> tuple[Hierarchy, list[str]]:
    """The hierarchy to use here, and why parts of it are missing."""
    try:
        own_v2, own_v1 = _own_paths()
        mount_v2, mounts_v1 = _mounts()
    except OSError as exc:
        return Hierarchy("", {}), [f"cgroup: cannot read this process's cgroups ({exc})"]
    if mount_v2 is not None and own_v2 is not None:
        base = _join(mount_v2, own_v2)
        try:
            available = Path(mount_v2[1], "cgroup.controllers").read_text().split()
        except OSError:
            available = []
        if {"memory", "pids"} <= set(available):
            return Hierarchy("v2", {c: base for c in CONTROLLERS if c in available}), []
    dirs = {c: _join(mounts_v1[c], own_v1[c]) for c in CONTROLLERS if c in mounts_v1 and c in own_v1}
    if {"memory", "pids"} <= set(dirs):
        return Hierarchy("v1", dirs), []
    return Hierarchy("", {}), ["cgroup: neither cgroup v2 nor the v1 memory and pids controllers are mounted"]


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _set_limits(hierarchy: Hierarchy, group: dict[str, str], memory: int, pids: int, cpus: float) -> None:
    v2 = hierarchy.version == "v2"
    if "memory" in group and memory > 0:
        if v2:
            _write(f"{group['memory']}/memory.max", str(memory))
            with contextlib.suppress(FileNotFoundError):
                _write(f"{group['memory']}/memory.swap.max", "0")
        else:
            _write(f"{group['memory']}/memory.limit_in_bytes", str(memory))
            with contextlib.suppress(
                FileNotFoundError, PermissionError
            ):  # no swap accounting: nothing to cap
                _write(f"{group['memory']}/memory.memsw.limit_in_bytes", str(memory))
    if "pids" in group and pids > 0:
        _write(f"{group['pids']}/pids.max", str(pids))
    if "cpu" in group and cpus > 0:
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        if v2:
            _write(f"{group['cpu']}/cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            _write(f"{group['cpu']}/cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(f"{group['cpu']}/cpu.cfs_quota_us", str(quota))


def _make(hierarchy: Hierarchy, name: str) -> dict[str, str]:
    group = {}
    for controller in hierarchy.controllers:
        path = os.path.join(hierarchy.dirs[controller], name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        group[controller] = path
    return group


PARENT_PREFIX = "insightx-sandbox-"


def sweep_stale(hierarchy: Hierarchy) -> None:
    """Removes parent groups (and their run groups) left by a sandbox process that died without stopping."""
    for base in dict.fromkeys(hierarchy.dirs.values()):
        try:
            names = [n for n in os.listdir(base) if n.startswith(PARENT_PREFIX)]
        except OSError:
            continue
        for name in names:
            owner = name[len(PARENT_PREFIX) :].split("-")[0]
            if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                continue
            parent = os.path.join(base, name)
            with contextlib.suppress(OSError):
                for entry in os.scandir(parent):
                    if entry.is_dir():
                        remove({"run": entry.path}, attempts=1)
            remove({"parent": parent}, attempts=1)


def create_parent(name: str, memory_total: int) -> tuple[Hierarchy, list[str]]:
    """The group every run of this service lives under; its memory limit is the total across runs."""
    hierarchy, problems = detect()
    if not hierarchy.version:
        return hierarchy, problems
    sweep_stale(hierarchy)
    try:
        if hierarchy.version == "v2":
            base = hierarchy.dirs["memory"]
            wanted = " ".join(f"+{c}" for c in hierarchy.controllers)
            try:
                _write(f"{base}/cgroup.subtree_control", wanted)
            except OSError as exc:
                if exc.errno != errno.EBUSY or _own_paths()[0] != "/":
                    raise  # only a container's own root group (cgroupns) is ours to rearrange
                _leave_for_leaf(base)  # v2: a group with processes cannot hand controllers down
                _write(f"{base}/cgroup.subtree_control", wanted)
        group = _make(hierarchy, name)
        if hierarchy.version == "v2":
            _write(f"{group['memory']}/cgroup.subtree_control", wanted)
        _set_limits(hierarchy, group, memory_total, 0, 0.0)
    except OSError as exc:
        with contextlib.suppress(UnboundLocalError):
            remove(group)
        hint = (
            " (a v2 parent holding processes cannot delegate controllers)" if exc.errno == errno.EBUSY else ""
        )
        return Hierarchy("", {}), [f"cgroup: cannot create the runs' parent group ({exc}){hint}"]
    return Hierarchy(hierarchy.version, group), []


SERVICE_LEAF = "insightx-service"


def _leave_for_leaf(base: str) -> None:
    """Moves every process of `base` into a leaf child (what a container's init group needs on cgroup v2
    before it can delegate controllers: "no internal processes")."""
    leaf = os.path.join(base, SERVICE_LEAF)
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    for pid in Path(base, "cgroup.procs").read_text().split():
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            _write(f"{leaf}/cgroup.procs", pid)


def create_run(parent: Hierarchy, name: str, memory: int, pids: int, cpus: float) -> dict[str, str]:
    """One run's group, limits set, before the child exists."""
    group = _make(parent, name)
    try:
        _set_limits(parent, group, memory, pids, cpus)
    except OSError:
        remove(group)
        raise
    return group


def join(group: dict[str, str]) -> list[str]:
    """Moves the calling process into `group` (every controller); returns the controllers joined."""
    joined: list[str] = []
    for controller, path in group.items():
        if path in {group[c] for c in joined}:  # v2: one directory holds every controller
            joined.append(controller)
            continue
        _write(f"{path}/cgroup.procs", "0")
        joined.append(controller)
    return joined


def oom_killed(group: dict[str, str]) -> bool:
    """True when the kernel OOM-killed a process of this group (read before removing it)."""
    path = group.get("memory")
    if not path:
        return False
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(OSError):
            for line in Path(path, name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip() not in ("", "0"):
                    return True
    return False


def remove(group: dict[str, str], attempts: int = 20) -> None:
    """rmdir of each directory; a group whose last task is still exiting is retried briefly."""
    for path in dict.fromkeys(group.values()):
        for _ in range(attempts):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.005)


def usage(hierarchy: Hierarchy) -> tuple[int, int]:
    """(current, peak) memory of a group in bytes; (0, 0) without a memory controller."""
    path = hierarchy.dirs.get("memory")
    if not path:
        return 0, 0
    names = (
        ("memory.current", "memory.peak")
        if hierarchy.version == "v2"
        else ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
    )
    values = []
    for name in names:
        try:
            values.append(int(Path(path, name).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            values.append(0)
    return values[0], values[1]
