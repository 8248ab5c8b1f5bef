"""Escape probes: the known ways out of an L1, tried as root inside it.

A tenant is root inside its L1 and assumed hostile; these are the escapes it would try first:
mknod the L0's disk and read or mount it; a cgroup v1 ``release_agent`` (mount a hierarchy, write
its release agent); ``/proc/sysrq-trigger`` and ``core_pattern`` (host-global files); load a
kernel module; ``open_by_handle_at`` on a host file system; setns into the namespaces of every
process it can see; ptrace an L0 process; remount ``/sys`` or ``/proc/sys`` writable; reach an
agent or any control-network address. Each comes back as an :class:`Attempt` ``(name, escaped,
detail)``, ``escaped`` true only if the attempt really succeeded (see ``escape_probe.c``).

The busybox inside an L1 has no tool for most of these, so they are made by a small static C
program (:func:`probe_binary` builds it once with ``gcc -static``), put into the L1 by the caller:
:func:`copy_into` for a container (through ``/proc/<init>/root``), the guest's initramfs for a VM.
:func:`run` takes any shell runner (``lxc-attach``, a kvm guest's console), so one probe serves
every kind of L1.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from iris_haas.hostd.l1.base import L1Failed
from iris_haas.hostd.l1.lxc import LxcL1
from iris_haas.linux.runner import SubprocessRunner, cmd

SOURCE = Path(__file__).with_name("escape_probe.c")
BINARY = "iris-escape-probe"
NAMES = ("mknod_host_disk", "mount_host_disk", "cgroup_release_agent", "write_sysrq_trigger",
         "write_core_pattern", "load_kernel_module", "open_by_handle_at", "setns_net", "setns_mnt",
         "setns_pid", "setns_user", "setns_cgroup", "ptrace_host_process", "remount_sys_rw",
         "remount_proc_sys_rw", "connect_control_network", "ping_control_network")
_build_lock = threading.Lock()


class Attempt(NamedTuple):
    name: str
    escaped: bool
    detail: str


def probe_binary(state_dir: str | Path) -> Path:
    """The probe, compiled once into ``state_dir`` (again when the source changes): a static
    binary, so it runs in a busybox rootfs or initramfs with no libc of its own."""
    out = Path(state_dir) / BINARY
    with _build_lock:
        if not out.exists() or out.stat().st_mtime < SOURCE.stat().st_mtime:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            SubprocessRunner().run(cmd("gcc", "-static", "-O2", "-o", tmp, SOURCE), timeout=120)
            os.replace(tmp, out)
    return out


def host_disk() -> str:
    """``MAJ:MIN`` of the L0's disk: the block device its root file system is on, else the first
    one in ``/proc/partitions``."""
    dev = os.stat("/").st_dev
    if Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").exists():
        return f"{os.major(dev)}:{os.minor(dev)}"
    for line in Path("/proc/partitions").read_text().splitlines()[2:]:
        major, minor, *_ = line.split()
        return f"{major}:{minor}"
    raise L1Failed("no block device on this host")


def probe_args(*, disk: str | None = None, pids: Iterable[int] = (), tcp: Iterable[tuple[str, int]] = (),
               icmp: Iterable[str] = ()) -> list[str]:
    """The probe's arguments: the L0's disk, L0 processes to ptrace, control-network services
    ``(ip, port)`` to connect to and addresses to ping."""
    return ([f"disk={disk or host_disk()}"] + [f"pid={p}" for p in pids] + [f"tcp={ip}:{port}" for ip, port in tcp]
            + [f"icmp={ip}" for ip in icmp])


def parse(out: str) -> list[Attempt]:
    """The probe's JSON lines as attempts; every known attempt must be there (a probe that died
    half-way has not shown that the rest fail)."""
    got = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    attempts = [Attempt(g["name"], bool(g["escaped"]), f"errno {g['errno']}: {g['detail']}") for g in got]
    missing = set(NAMES) - {a.name for a in attempts}
    if missing:
        raise L1Failed(f"the escape probe did not report {sorted(missing)}: {out[-500:]!r}")
    return attempts


def run(shell: Callable[[str], str], path: str, args: list[str]) -> list[Attempt]:
    """Run the probe at ``path`` inside an L1 through ``shell`` (a shell command in, its standard
    output back)."""
    return parse(shell(" ".join([path, *args])))


def copy_into(init_pid: int, binary: Path) -> str:
    """Put the probe at the root of a running container through ``/proc/<init>/root`` (a path the
    container's root cannot redirect: a new file, no symlink followed); its path inside."""
    target = f"/proc/{init_pid}/root/{BINARY}"
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "wb") as f:
        f.write(binary.read_bytes())
    return f"/{BINARY}"


def probe_lxc(driver: LxcL1, name: str, state_dir: str | Path, args: list[str]) -> list[Attempt]:
    """Every escape tried from inside lxc L1 ``name`` as its root."""
    pid = driver.init_pid(name)
    if not pid:
        raise L1Failed(f"{name}: not running")
    path = copy_into(pid, probe_binary(state_dir))

    def shell(script: str) -> str:
        c = driver.exec_cmd(name, "sh", "-c", script)
        return subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=120).stdout

    try:
        return run(shell, path, args)
    finally:
        shell(f"rm -f {path}")
