"""A distinct unprivileged uid for each live child, from a range no account on the host uses.

RLIMIT_NPROC counts every process and thread of a *uid*: with one shared uid (65534, the host's `nobody`)
one run's 10,000 threads stop thread creation in every other run, and in anything else running as nobody.
Each zygote owns a disjoint slice of the range, and its template hands the lowest free uid to each child it
clones and takes it back once the child is reaped (a pid namespace's init is reaped only after every
process in it is gone, so a freed uid owns nothing).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


class UidsExhausted(RuntimeError):
    """Every uid of this zygote's slice belongs to a live child."""


class UidPool:
    """The uids of one zygote's slice: [first, first + count)."""

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.free = list(range(first + count - 1, first - 1, -1))  # pop() hands out the lowest
        self.used: set[int] = set()

    def take(self) -> int:
        if not self.free:
            raise UidsExhausted(f"all {self.count} uids from {self.first} are in use by live children")
        uid = self.free.pop()
        self.used.add(uid)
        return uid

    def give_back(self, uid: int) -> None:
        if uid in self.used:
            self.used.remove(uid)
            self.free.append(uid)
            self.free.sort(reverse=True)


def slice_of(first: int, count: int, zygotes: int, index: int) -> tuple[int, int]:
    """The (first uid, count) of zygote `index` when `zygotes` share [first, first + count)."""
    per = count // max(zygotes, 1)
    return first + index * per, per


def range_problems(first: int, count: int) -> list[str]:
    """Accounts or running processes (e.g. another sandbox on this host) already using the range."""
    last = first + count - 1
    problems = []
    accounts = [p.pw_name for p in pwd.getpwall() if first <= p.pw_uid <= last]
    if accounts:
        problems.append(
            f"uids: accounts {', '.join(accounts[:5])} use the sandbox's uid range {first}-{last}"
        )
    owners = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                    if first <= uid <= last:
                        owners.add(uid)
                    break
        except (OSError, ValueError, IndexError):
            continue
    if owners:
        problems.append(
            f"uids: {len(owners)} uid(s) of the range {first}-{last} already run processes (another sandbox "
            "on this host?); give each stack its own INSIGHTX_SANDBOX_UID_BASE"
        )
    return problems
