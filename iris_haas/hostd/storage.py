"""Storage driver: volumes in pools, exported to one tenant over its own overlay by userspace NFS.

What runs where (measured on these machines, see ``docs/storage.md``): the kernel has no NFS
server or client and no nbd, but loop devices and FUSE work. So a volume is

* a **pool**: a directory on the storage host;
* an **image**: ``<pool>/<volume>.img``, a sparse file of exactly the volume's size, formatted
  ext4 once (created as ``.img.part`` and renamed, so an ``.img`` always holds a file system);
* a **mount**: the image loop-mounted on ``<pool>/<volume>.d/mnt``; the file system's size is
  the quota, so a write past it fails with ENOSPC (NFS3ERR_NOSPC on the wire), nothing else
  fills up;
* an **export**: nfs-ganesha (VFS FSAL) started *inside* the namespace named by the op, whose
  only NIC is a port on the tenant's bridge (an access port on the tenant's storage VLAN), bound
  to the op's address. The namespace has no other NIC and no route, so only the tenant's own
  overlay reaches the server: never another tenant, never the control network. NFSv3 needs an
  rpcbind; ganesha refuses to start without one, and rpcbind's socket and lock are fixed paths
  in ``/run``. So the server runs in a private mount namespace (``unshare --mount``) with its own
  tmpfs on ``/run`` and its own rpcbind: one rpcbind per export, nothing shared with the host.
  Both daemons start with a reduced capability bounding set and ``no_new_privs`` (``setpriv``;
  :data:`GANESHA_CAPS`, :data:`RPCBIND_CAPS`), rpcbind as its own user (``-s``).
  (NFSv4 alone needs no rpcbind, but Debian 12's userspace client, libnfs 4.0, fails every NFSv4
  WRITE larger than about 1 KiB with "ZDR error: Failed to encode COMPOUND4args"; v3 works.)

Release stops the server and rpcbind (by the PIDs in their pidfiles, each checked against its
command line, never by name), unmounts, and then either **wipes** (punches the whole image out,
so every block reads back as zeros, then deletes it) or **keeps** the image (the op's ``keep``).

The host remembers each volume it made in ``<storage_dir>/<volume>.json`` (the op as last
wanted), so a volume that disappears from the desired state is still found and released, also
after an agent restart. Nothing outside the pool directory, the registry and the op's namespace
is touched.

As elsewhere in the host, the decision is pure (:func:`plan` over :class:`VolumeFacts`, returning
one small action per step, every command from a ``*_cmd`` builder) and each action applies itself
through the host's runner.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iris_haas.contract import failpoints
from iris_haas.contract.errors import IrisError
from iris_haas.contract.ops import VolumeOp
from iris_haas.hostd.context import Context, HostAction
from iris_haas.linux import garp, netns, proc
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import Cmd, Runner, cmd

NFS_PORT = 2049
MNT_PORT = 20048  # fixed (not from rpcbind's dynamic range) so a firewall rule could name it
RPCBIND_PORT = 111


class StorageFailed(IrisError):
    status, type = 500, "StorageFailed"


# ---------------------------------------------------------------- layout

@dataclass(frozen=True)
class Paths:
    pool: Path
    name: str

    @property
    def image(self) -> Path:
        return self.pool / f"{self.name}.img"

    @property
    def part(self) -> Path:
        return self.pool / f"{self.name}.img.part"

    @property
    def work(self) -> Path:
        return self.pool / f"{self.name}.d"

    @property
    def mnt(self) -> Path:
        return self.work / "mnt"

    @property
    def conf(self) -> Path:
        return self.work / "ganesha.conf"

    @property
    def pid(self) -> Path:
        return self.work / "ganesha.pid"

    @property
    def rpcbind_pid(self) -> Path:
        return self.work / "rpcbind.pid"

    @property
    def log(self) -> Path:
        return self.work / "ganesha.log"

    @property
    def recovery(self) -> Path:
        return self.work / "recovery"


def paths(o: VolumeOp) -> Paths:
    return Paths(Path(o.pool), o.name)


def pseudo_path(o: VolumeOp) -> str:
    """The path clients mount (NFSv3 and v4 alike: ganesha's ``Mount_Path_Pseudo``)."""
    return f"/{o.name}"


def _address(o: VolumeOp) -> str:
    if o.address is None:
        raise StorageFailed(f"volume {o.name} is not exported (no address)")
    return o.address


def server_ip(o: VolumeOp) -> str:
    return str(ipaddress.ip_interface(_address(o)).ip)


def clients(o: VolumeOp) -> str:
    return o.clients or str(ipaddress.ip_interface(_address(o)).network)


def nfs_url(ip: str, export: str, path: str = "") -> str:
    """A libnfs URL (NFSv3; the server's rpcbind answers the port look-ups)."""
    return f"nfs://{ip}{export}{'/' + path.lstrip('/') if path else ''}"


# ---------------------------------------------------------------- commands (pure)

def create_image_cmds(o: VolumeOp) -> list[Cmd]:
    """A sparse file of exactly the size, formatted ext4, then renamed into place."""
    p = paths(o)
    return [
        cmd("truncate", "-s", f"{o.mib}M", p.part),
        # -m 0: no blocks reserved for root (the tenant's root would otherwise get more than
        # its quota's worth of free space reported wrong); itable/journal initialised now, not by
        # a kernel thread writing to the image after the mount
        cmd("mkfs.ext4", "-q", "-F", "-m", "0", "-L", o.name[-16:],
            "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", p.part),
        cmd("mv", "-T", p.part, p.image),
    ]


def mount_cmd(o: VolumeOp) -> Cmd:
    p = paths(o)
    return cmd("mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noexec", p.image, p.mnt)


def umount_cmd(p: Paths) -> Cmd:
    return cmd("umount", p.mnt)


def wipe_cmds(p: Paths, size_bytes: int) -> list[Cmd]:
    """Discard every block of the image (reads back as zeros), then delete it."""
    out = []
    if size_bytes > 0:
        out.append(cmd("fallocate", "--punch-hole", "--keep-size", "--offset", "0", "--length",
                       str(size_bytes), p.image))
    out.append(cmd("rm", "-f", "--", p.image))
    return out


def ganesha_conf(o: VolumeOp) -> str:
    p = paths(o)
    return f"""# written by Iris for volume {o.name} (tenant {o.tenant or '-'}); do not edit
NFS_CORE_PARAM {{
    Bind_Addr = {server_ip(o)};
    NFS_Port = {NFS_PORT};
    MNT_Port = {MNT_PORT};
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "{p.recovery}";
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
EXPORT_DEFAULTS {{
    Access_Type = None;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{p.mnt}";
    Pseudo = "{pseudo_path(o)}";
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = None;
    Squash = No_Root_Squash;
    SecType = sys;
    CLIENT {{
        Clients = {clients(o)};
        Access_Type = RW;
    }}
    FSAL {{
        Name = VFS;
    }}
}}
LOG {{
    Default_Log_Level = EVENT;
}}
"""


# The capabilities each daemon keeps: everything else leaves its bounding set (and its inheritable
# set, which a root exec would add back), and no_new_privs holds it there. Found by dropping one at
# a time against tests/linux/test_storage_driver.py (see docs/storage.md).
GANESHA_CAPS = ("dac_read_search", "dac_override", "chown", "fowner", "fsetid", "setuid", "setgid")
RPCBIND_CAPS = ("net_bind_service", "setuid", "setgid")


def confine_argv(caps: tuple[str, ...]) -> tuple[str, ...]:
    """``setpriv`` keeping only ``caps`` for the command it runs (pure)."""
    return ("setpriv", "--bounding-set=-all," + ",".join(f"+{c}" for c in caps), "--inh-caps=-all",
            "--no-new-privs", "--")


# Runs as: nsenter --net=NS unshare --mount -- sh -c SCRIPT iris-nfs RPCB_PID CONF LOG PID.
# unshare (without --fork), setpriv and sh's final exec keep one PID from start to ganesha, so the
# PID the runner returns is the server's. The tmpfs is mounted before any capability is dropped;
# rpcbind -s binds its port, then becomes its own user (Debian's _rpc).
_SERVE = f"""set -e
mount -t tmpfs -o size=1m,mode=0755 iris-run /run
{shlex.join(confine_argv(RPCBIND_CAPS))} rpcbind -f -s &
echo $! > "$1"
i=0
while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
exec {shlex.join(confine_argv(GANESHA_CAPS))} ganesha.nfsd -F -f "$2" -L "$3" -p "$4" -N NIV_EVENT
"""


def serve_cmd(o: VolumeOp) -> Cmd:
    p = paths(o)
    # propagation slave: the volume's mount (made before) is seen; nothing mounted in here
    # (the private /run) leaks back to the host
    return cmd("unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", _SERVE, "iris-nfs",
               p.rpcbind_pid, p.conf, p.log, p.pid, netns=o.netns)


# client side (userspace libnfs; used by the tests and shown in docs/storage.md)

def nfs_cp_cmd(ns: str, src: str, dst: str) -> Cmd:
    return cmd("nfs-cp", src, dst, netns=ns)


def nfs_ls_cmd(ns: str, url: str) -> Cmd:
    return cmd("nfs-ls", url, netns=ns)


# ---------------------------------------------------------------- observation

@dataclass
class VolumeFacts:
    registered: dict[str, Any] | None = None  # the op as last wanted (registry), dumped
    image: bool = False
    image_bytes: int = 0
    mounted: bool = False
    server: int | None = None  # ganesha PID, alive and ours
    server_netns: str | None = None  # the named namespace the server is in (None: none of ours)
    rpcbind: int | None = None
    conf: str | None = None


def _registry(storage_dir: str) -> Path:
    return Path(storage_dir)


def registered(storage_dir: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    d = _registry(storage_dir)
    if not d.is_dir():
        return out
    for f in sorted(d.glob("iris-*.json")):
        try:
            out[f.stem] = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
    return out


def mountpoints() -> set[str]:
    out: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            out.add(mp.encode().decode("unicode_escape"))
    return out


def _our_pid(pidfile: Path, needle: str, also: str = "") -> int | None:
    """The PID in ``pidfile`` if that process is alive and its command line is what we started
    (a recycled PID is never signalled)."""
    pid = proc.read_pid(pidfile)
    args = proc.argv(pid) if pid is not None and proc.alive(pid) else None
    if not args or os.path.basename(args[0]) != needle or (also and also not in args):
        return None
    return pid


def observe(vols: list[VolumeOp], storage_dir: str) -> dict[str, VolumeFacts]:
    reg = registered(storage_dir) if storage_dir else {}
    want = {v.name: v.model_dump() for v in vols}
    mps = mountpoints()
    out: dict[str, VolumeFacts] = {}
    for name in sorted(set(reg) | set(want)):
        spec = want.get(name) or reg[name]
        p = Paths(Path(spec["pool"]), name)
        f = VolumeFacts(registered=reg.get(name))
        try:
            f.image_bytes = p.image.stat().st_size
            f.image = True
        except OSError:
            pass
        f.mounted = str(p.mnt) in mps
        f.server = _our_pid(p.pid, "ganesha.nfsd", str(p.conf))
        if f.server and spec.get("netns"):
            # the server may be in an older namespace of the same name, deleted and made again by
            # hand or by a repair
            f.server_netns = spec["netns"] if netns.same_netns(f.server, spec["netns"]) else None
        f.rpcbind = _our_pid(p.rpcbind_pid, "rpcbind")
        try:
            f.conf = p.conf.read_text()
        except OSError:
            f.conf = None
        out[name] = f
    return out


# ---------------------------------------------------------------- decision (pure)

def plan(vols: list[VolumeOp], facts: dict[str, VolumeFacts], storage_dir: str
         ) -> tuple[list[HostAction], list[HostAction]]:
    """(steps before the network changes, steps after them).

    Releases and server stops come first, while the export's namespace still exists; creation
    and the server start come last, once the namespace and its address are there.
    """
    if vols and not storage_dir:
        raise StorageFailed("this host keeps no volumes (no storage_dir configured)")
    want = {v.name: v for v in vols}
    by_ns: dict[str, str] = {}
    for v in vols:
        if v.netns and by_ns.setdefault(v.netns, v.name) != v.name:
            raise StorageFailed(f"volumes {by_ns[v.netns]} and {v.name} in one export namespace {v.netns}: "
                                f"each export has its own namespace, address and server")
    pre: list[HostAction] = []
    post: list[HostAction] = []
    for name, f in sorted(facts.items()):
        if name in want:
            continue
        if f.registered is not None or f.server or f.rpcbind or f.mounted:
            pre.append(ReleaseVolume(name, keep=bool((f.registered or {}).get("keep"))))
    for name, v in sorted(want.items()):
        f = facts.get(name) or VolumeFacts()
        conf = ganesha_conf(v) if v.netns else None
        # a server outlives neither its mount (it would serve a stale file system) nor its namespace
        serving = f.server is not None and f.rpcbind is not None and f.server_netns == v.netns and f.mounted
        if (f.server or f.rpcbind) and (not v.netns or f.conf != conf or not serving):
            pre.append(StopServer(name))
            serving = False
        if f.registered != v.model_dump():
            post.append(RegisterVolume(v))
        if not f.image:
            post.append(CreateVolume(v))
        if not f.mounted:
            post.append(MountVolume(v))
        if v.netns and not serving:
            post.append(ServeVolume(v))
    return pre, post


# ---------------------------------------------------------------- actions

def _register(storage_dir: str, v: VolumeOp) -> None:
    d = _registry(storage_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{v.name}.json.tmp"
    tmp.write_text(json.dumps(v.model_dump()))
    os.replace(tmp, d / f"{v.name}.json")


def _forget(storage_dir: str, name: str) -> None:
    try:
        (_registry(storage_dir) / f"{name}.json").unlink()
    except FileNotFoundError:
        pass


def _pool_of(storage_dir: str, name: str) -> Paths | None:
    """Where a registered volume lives (the registry holds the pool of a volume no op names)."""
    spec = registered(storage_dir).get(name)
    return Paths(Path(spec["pool"]), name) if spec else None


@dataclass(frozen=True)
class ReleaseVolume(HostAction):
    name: str
    keep: bool

    def apply(self, ctx: Context) -> None:
        p = _pool_of(ctx.cfg.storage_dir, self.name)
        if p is None:
            raise StorageFailed(f"volume {self.name} has no registry entry: cannot find its pool")
        release(p, self.keep, ctx.runner)
        _forget(ctx.cfg.storage_dir, self.name)

    def __str__(self) -> str:
        return f"release volume {self.name} ({'keep' if self.keep else 'wipe'} the image)"


@dataclass(frozen=True)
class StopServer(HostAction):
    name: str

    def apply(self, ctx: Context) -> None:
        p = _pool_of(ctx.cfg.storage_dir, self.name)
        if p is not None:
            stop(p)

    def __str__(self) -> str:
        return f"stop the nfs server of volume {self.name}"


@dataclass(frozen=True)
class RegisterVolume(HostAction):
    op: VolumeOp

    def apply(self, ctx: Context) -> None:
        _register(ctx.cfg.storage_dir, self.op)

    def __str__(self) -> str:
        return f"register volume {self.op.name}"


@dataclass(frozen=True)
class CreateVolume(HostAction):
    op: VolumeOp

    def apply(self, ctx: Context) -> None:
        p = paths(self.op)
        if not p.pool.is_dir():
            raise StorageFailed(f"pool {p.pool} is not a directory")
        for c in create_image_cmds(self.op):
            ctx.runner.run(c, timeout=120.0)

    def __str__(self) -> str:
        return f"create volume {self.op.name} ({self.op.mib} MiB in {self.op.pool})"


@dataclass(frozen=True)
class MountVolume(HostAction):
    op: VolumeOp

    def apply(self, ctx: Context) -> None:
        paths(self.op).mnt.mkdir(parents=True, exist_ok=True)
        ctx.runner.run(mount_cmd(self.op))

    def __str__(self) -> str:
        return f"mount volume {self.op.name}"


@dataclass(frozen=True)
class ServeVolume(HostAction):
    op: VolumeOp

    def apply(self, ctx: Context) -> None:
        v, p = self.op, paths(self.op)
        if not v.netns or not nl.netns_exists(v.netns):
            raise StorageFailed(f"export namespace {v.netns} of {v.name} does not exist")
        stop(p)
        p.recovery.mkdir(parents=True, exist_ok=True)
        p.conf.write_text(ganesha_conf(v))
        failpoints.hit("agent.mid_export")  # the crash tests: the volume mounted, its server not started
        pid = ctx.runner.spawn(serve_cmd(v), log=str(p.work / "serve.log"))
        # written now (ganesha writes its own too, later) so a stop finds it even if it dies early
        p.pid.write_text(f"{pid}\n")
        if pid:  # 0 from the recording twin
            _wait_serving(v, v.netns, pid)
            dev = nl.link_with_address(v.netns, server_ip(v))
            if dev:
                # a client that knew this address at another MAC (an export made again, moved to
                # another node) updates its cache at once
                garp.announce(v.netns, dev, server_ip(v), count=3)

    def __str__(self) -> str:
        return f"serve volume {self.op.name} over nfs from {self.op.netns} at {self.op.address}"


def stop(p: Paths) -> None:
    """Stop the export's ganesha and rpcbind by their PIDs; tolerant of either being gone."""
    for pid in (_our_pid(p.pid, "ganesha.nfsd", str(p.conf)), _our_pid(p.rpcbind_pid, "rpcbind")):
        if pid:
            proc.kill_pid(pid, timeout=5.0)
    for f in (p.pid, p.rpcbind_pid):
        try:
            f.unlink()
        except FileNotFoundError:
            pass


def release(p: Paths, keep: bool, runner: Runner) -> None:
    """Stop, unmount, then wipe (or keep) the image. Idempotent."""
    stop(p)
    if str(p.mnt) in mountpoints():
        runner.run(umount_cmd(p))
    if not keep:
        try:
            size = p.image.stat().st_size
        except FileNotFoundError:
            size = -1
        if size >= 0:
            for c in wipe_cmds(p, size):
                runner.run(c)
        try:
            p.part.unlink()
        except FileNotFoundError:
            pass
    # the work directory (config, pidfiles, logs, the empty mount point) goes in both cases;
    # never removed while something is mounted below it
    if p.work.exists() and not [m for m in mountpoints() if m.startswith(str(p.work) + "/")]:
        shutil.rmtree(p.work, ignore_errors=True)


def _wait_serving(v: VolumeOp, ns: str, pid: int, timeout: float = 15.0) -> None:
    """Until the server accepts TCP on its NFS and mount ports (or dies)."""
    ip = server_ip(v)
    deadline = time.monotonic() + timeout
    pending = [NFS_PORT, MNT_PORT]
    while pending:
        if not proc.alive(pid):
            raise StorageFailed(f"nfs server of {v.name} exited: {_tail(paths(v).log)}")
        s = netns.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect((ip, pending[0]))
            pending.pop(0)
            continue
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise StorageFailed(f"nfs server of {v.name} not serving after {timeout}s: {_tail(paths(v).log)}")
        time.sleep(0.05)


def _tail(p: Path, n: int = 600) -> str:
    try:
        return p.read_text()[-n:]
    except OSError:
        return ""


def report(facts: dict[str, VolumeFacts]) -> list[dict[str, Any]]:
    out = []
    for name, f in sorted(facts.items()):
        spec = f.registered or {}
        out.append({"op": "volume", "name": name, "pool": spec.get("pool"), "tenant": spec.get("tenant", ""),
                    "owner": spec.get("owner", ""), "bytes": f.image_bytes if f.image else None,
                    "mounted": f.mounted, "serving": bool(f.server and f.rpcbind),
                    "address": spec.get("address"), "keep": spec.get("keep", False)})
    return out


# ---------------------------------------------------------------- last-resort cleanup

@dataclass
class Swept:
    processes: list[int] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)


def sweep_pool(pool: str | Path, runner: Runner) -> Swept:
    """Stop every server, unmount every volume Iris made under ``pool`` (tests' teardown, and
    an operator's last resort). Leaves the files."""
    pool = Path(pool)
    out = Swept()
    for work in sorted(pool.glob("iris-*.d")):
        p = Paths(pool, work.name[:-2])
        for pid in (_our_pid(p.pid, "ganesha.nfsd", str(p.conf)), _our_pid(p.rpcbind_pid, "rpcbind")):
            if pid:
                out.processes.append(pid)
        stop(p)
        if str(p.mnt) in mountpoints():
            runner.run(umount_cmd(p))
            out.mounts.append(str(p.mnt))
    return out
