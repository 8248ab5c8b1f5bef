"""cgroups by name: one group with a cpu, memory and pids limit, on a v1 (or hybrid) or a v2 host.

Two layouts, told apart by the root (:func:`version`):

* **v1 / hybrid** (this machine: v1 controllers under ``/sys/fs/cgroup/<controller>``, v2 only
  at ``/sys/fs/cgroup/unified``): one directory per controller, ``cpu/<name>``, ``memory/<name>``,
  ``pids/<name>`` (and ``cpuacct/<name>``, where v1 counts CPU time: :func:`usage`), with ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, ``memory.limit_in_bytes``
  (and ``memory.memsw.limit_in_bytes`` where swap is accounted, so swap does not extend the limit),
  ``pids.max``;
* **v2** (``cgroup.controllers`` at the root): one directory ``<name>`` with ``cpu.max``,
  ``memory.max``, ``memory.swap.max``, ``pids.max``; the root's ``cgroup.subtree_control`` must
  hand the three controllers down, which :func:`create` makes sure of.

The files and values are decided by pure functions (:func:`limit_files`) that tests read without
root. A process is put in the group by writing its PID to each ``cgroup.procs``; a command is
started already inside it by :func:`join_argv` (a shell that writes its own PID, then execs the
command, so nothing of the command runs outside the group). Groups are removed by name, only
names with the ``iris`` prefix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from iris_haas.contract import names
from iris_haas.linux import proc

ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
CONTROLLERS = ("cpu", "memory", "pids")
# v1 keeps CPU time in a hierarchy of its own (``cpuacct``, unless co-mounted with ``cpu``): the
# group joins it too where it exists, so its CPU time can be read (:func:`usage`)
ACCOUNTING = "cpuacct"


@dataclass(frozen=True)
class Limits:
    cpus: float  # CPU time per period, in CPUs (quota = cpus x period)
    memory_bytes: int
    pids: int


def version(root: Path = ROOT) -> int:
    """2 on a pure v2 host, 1 on a v1 or hybrid one (its controllers are v1 hierarchies)."""
    return 2 if (root / "cgroup.controllers").exists() else 1


def dirs(name: str, root: Path = ROOT, ver: int | None = None) -> list[Path]:
    """The group's directories: one per controller (v1), one in all (v2)."""
    ver = ver or version(root)
    if ver == 2:
        return [root / name]
    out = [root / c / name for c in CONTROLLERS]
    acct = root / ACCOUNTING
    if acct.is_dir() and acct.resolve() != (root / "cpu").resolve():
        out.append(acct / name)
    return out


def limit_files(name: str, lim: Limits, root: Path = ROOT, ver: int | None = None) -> list[tuple[Path, str]]:
    """(file, value) to write, in order (pure)."""
    ver = ver or version(root)
    quota = int(lim.cpus * CFS_PERIOD_US)
    mem = str(lim.memory_bytes)
    if ver == 2:
        d = root / name
        return [(d / "cpu.max", f"{quota} {CFS_PERIOD_US}"), (d / "memory.max", mem),
                (d / "memory.swap.max", "0"), (d / "pids.max", str(lim.pids))]
    cpu, memory, pids = (root / c / name for c in CONTROLLERS)
    return [(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US)), (cpu / "cpu.cfs_quota_us", str(quota)),
            (memory / "memory.limit_in_bytes", mem), (memory / "memory.memsw.limit_in_bytes", mem),
            (pids / "pids.max", str(lim.pids))]


def procs_files(name: str, root: Path = ROOT, ver: int | None = None) -> list[Path]:
    return [d / "cgroup.procs" for d in dirs(name, root, ver)]


def _check(name: str) -> None:
    if not name.startswith(names.PREFIX) or "/" in name:
        raise ValueError(f"cgroup {name!r}: Iris makes only iris-prefixed, top-level groups")


def create(name: str, lim: Limits, root: Path = ROOT) -> None:
    """Make the group (idempotent) and set its limits. A file the kernel does not offer
    (``memsw`` without swap accounting, ``swap.max`` without swap) is skipped."""
    _check(name)
    ver = version(root)
    if ver == 2:
        ctl = root / "cgroup.subtree_control"
        if set(CONTROLLERS) - set(ctl.read_text().split()):
            ctl.write_text(" ".join(f"+{c}" for c in CONTROLLERS))
    for d in dirs(name, root, ver):
        d.mkdir(exist_ok=True)
    memsw = root / "memory" / name / "memory.memsw.limit_in_bytes"
    if ver == 1 and memsw.exists():
        memsw.write_text("-1")  # memsw >= limit at every step, whichever way the limit moves
    for f, value in limit_files(name, lim, root, ver):
        if f.name in ("memory.memsw.limit_in_bytes", "memory.swap.max") and not f.exists():
            continue
        f.write_text(value)


def read(name: str, root: Path = ROOT) -> Limits | None:
    """The group's limits as the kernel holds them (None: no such group)."""
    ver = version(root)
    try:
        if ver == 2:
            d = root / name
            quota, period = (d / "cpu.max").read_text().split()
            mem, pids = (d / "memory.max").read_text().strip(), (d / "pids.max").read_text().strip()
        else:
            cpu, memory, pid = (root / c / name for c in CONTROLLERS)
            quota, period = (cpu / "cpu.cfs_quota_us").read_text(), (cpu / "cpu.cfs_period_us").read_text()
            mem, pids = (memory / "memory.limit_in_bytes").read_text().strip(), (pid / "pids.max").read_text().strip()
    except OSError:
        return None
    return Limits(cpus=int(quota) / int(period), memory_bytes=int(mem), pids=int(pids))


@dataclass(frozen=True)
class Usage:
    """What a group has used: CPU time since it was made, memory now (None: not offered)."""

    cpu_seconds: float | None
    memory_bytes: int | None


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_key(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        return None
    return None


def usage(name: str, root: Path = ROOT) -> Usage | None:
    """The group's CPU time and memory as the kernel counts them (its descendants included);
    None when the group is not there (not made yet, or being removed). Reads a few files: no
    lock, nothing written."""
    ver = version(root)
    if ver == 2:
        d = root / name
        if not d.is_dir():
            return None
        usec = _stat_key(d / "cpu.stat", "usage_usec")
        return Usage(usec / 1e6 if usec is not None else None, _number(d / "memory.current"))
    memory = root / "memory" / name
    acct = root / ACCOUNTING / name
    if not acct.is_dir():
        acct = root / "cpu" / name  # cpu and cpuacct co-mounted
    if not memory.is_dir() and not acct.is_dir():
        return None
    ns = _number(acct / "cpuacct.usage")
    return Usage(ns / 1e9 if ns is not None else None, _number(memory / "memory.usage_in_bytes"))


def pids(name: str, root: Path = ROOT) -> list[int]:
    """Every process in the group (in any of its hierarchies)."""
    out: set[int] = set()
    for f in procs_files(name, root):
        try:
            out |= {int(x) for x in f.read_text().split()}
        except OSError:
            pass
    return sorted(out)


_JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n-1)); done; exec "$@"'


def join_argv(name: str, argv: tuple[str, ...], root: Path = ROOT) -> tuple[str, ...]:
    """``argv`` started inside the group: the shell joins it, then becomes the command (pure but
    for the layout's detection)."""
    files = [str(f) for f in procs_files(name, root)]
    return ("sh", "-c", _JOIN, "iris-cgexec", str(len(files)), *files, *argv)


def remove(name: str, root: Path = ROOT, wait: float = 3.0) -> None:
    """Stop what is still in the group (by PID) and remove its directories; tolerant of any
    being gone. A group empties a moment after its last process died, so rmdir is retried."""
    _check(name)
    for pid in pids(name, root):
        proc.kill_pid(pid)
    deadline = time.monotonic() + wait
    while True:
        left = [d for d in dirs(name, root) if d.is_dir()]
        for d in left:
            try:
                d.rmdir()
            except OSError:
                pass
        if not any(d.is_dir() for d in left) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def exists(name: str, root: Path = ROOT) -> bool:
    return any(d.is_dir() for d in dirs(name, root))
