"""``kvm`` L1: a nested VM under QEMU, on a tap wired to its NIC, a port of the tenant's bridge.

KVM where the host offers it (``/dev/kvm`` and a ``kvm_intel`` / ``kvm_amd`` module), QEMU's TCG
otherwise (the lab's machines load only ``kvm_pvm``, on which ordinary guests fail), so the
driver really runs there. ``IRIS_KVM_ACCEL=kvm|tcg`` overrides the choice.

What boots: Debian's kernel (``/boot/vmlinuz-*``, from ``linux-image-cloud-amd64`` or any other
Debian kernel package) and an initramfs the driver builds once from Debian's own files: the
static busybox (``busybox-static``), the kernel's modules for virtio-net and 802.1Q (taken from
``/lib/modules/<version>``; the guest kernel, unlike this host, has ``8021q``), and a small
``/init``. Each VM gets a second, tiny cpio appended to that one (the kernel unpacks
concatenated archives in order) with its own settings: the management address and gateway, the
tenant's SSH key, the host name. The flavor is QEMU's ``-smp`` and ``-m``.

An L1 that names an OS image (:mod:`iris_haas.hostd.images`, kind kvm: a raw ext4 disk) gets a
``virtio-blk`` disk, a qcow2 layer of its own over the image (``qemu-img create -b``, in its run
directory, so it goes with the L1; the image is only read). The same initramfs configures the
network, then mounts the disk, writes the L1's name, the tenant's key and Iris's init into it,
moves ``/proc``, ``/sys`` and ``/dev`` there and ``switch_root`` s to that init (sshd).

The network: one ``virtio-net`` NIC on a tap (:data:`TAP`) in the L1's own namespace, wired
there to the L1's end of its veth (:func:`iris_haas.linux.tc.wire`), whose L0 end the reconciler
puts on the tenant's bridge like any L1 port (management VLAN native, every other VLAN tagged).
So what the guest sends leaves through that end's egress, where a ``shape`` op's htb holds it, as
for every other kind, and keeps holding across a restart of QEMU (the htb is on the veth, not on
the tap). No other NIC, no user-mode network: the guest has no path to the control network. The
NIC offers no checksum offload (``csum=off``): OVS's userspace datapath does not complete partial
checksums, so the guest computes its own. The serial console is a unix socket in the L1's run
directory; :meth:`KvmL1.console` runs a shell command in the guest through it (the tests probe
from inside the L1 that way).

Confinement (the guest is the tenant's, and after an escape so is QEMU): QEMU never runs as
root. It starts in its own cgroup (the flavor's cpu quota, its memory plus
:data:`QEMU_OVERHEAD_MB`, a pids limit; :mod:`iris_haas.linux.cgroup`), as a uid of its own with
no capability and ``no_new_privs`` (:func:`confined`), under QEMU's seccomp sandbox
(:data:`SANDBOX`). It is stopped by the PID in its pidfile, then whatever is left in its cgroup.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.hostd import images
from iris_haas.hostd.l1.base import DHCP_SCRIPT, L1Base, L1Failed, spec_of
from iris_haas.linux import cgroup, netns, proc, tc
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import Cmd, cmd

log = logging.getLogger("iris.agent.kvm")

QEMU = "qemu-system-x86_64"
TAP = "iris-tap"  # in the L1's own namespace, so one name serves every L1
RUN_ROOT = Path("/run/iris-kvm")
UID_BASE, UID_RANGE = 0x49520000, 1 << 16  # the L1s' users: no account, no subuid range (100000+)
QEMU_OVERHEAD_MB = 128  # measured, see docs/compute.md
# QEMU's block I/O runs in a pool of worker threads, up to 64 by default, and a thread it cannot
# make is fatal (it aborts: "qemu_thread_create: Resource temporarily unavailable"), so the pool
# is bounded below the L1's pids limit.
THREAD_POOL_MAX = 8
PIDS_BASE = 16  # the main thread, RCU's, THREAD_POOL_MAX workers and a margin; one more per vCPU
_initrd_lock = threading.Lock()
BUSYBOX = "/bin/busybox"
# the guest's NIC and 802.1Q, the disk of an L1 booted from an OS image, and tun (the taps of the
# IaaS's own hypervisor in the L1); their dependencies come from the kernel's modules.dep
WANTED_MODULES = ["virtio_pci", "virtio_net", "8021q", "virtio_blk", "tun"]  # ext4: built into Debian's kernels


def module_order(modules_dep: str, wanted: list[str]) -> list[str]:
    """Module paths (relative to the module directory) in load order, dependencies first (pure)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
        by_name[Path(mod).name.split(".ko")[0].replace("-", "_")] = mod
    out: list[str] = []

    def visit(m: str) -> None:
        if m in out:
            return
        for d in deps.get(m, []):
            visit(d)
        out.append(m)

    for w in wanted:
        if w not in by_name:
            raise L1Failed(f"kernel module {w} not in modules.dep")
        visit(by_name[w])
    return out


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        import lzma

        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        raise L1Failed(f"{path}: zstd-compressed modules are not supported")
    return data


def module_files(mods: str, wanted: list[str]) -> dict[str, bytes | None]:
    """An initramfs's kernel modules: ``wanted`` and their dependencies from the module directory
    ``mods`` (decompressed) under ``lib/modules/``, and ``etc/iris/modules`` listing them in load
    order (what :data:`INIT` loads)."""
    files: dict[str, bytes | None] = {}
    loaded = []
    for m in module_order((Path(mods) / "modules.dep").read_text(), wanted):
        n = Path(m).name.split(".ko")[0] + ".ko"
        files[f"lib/modules/{n}"] = read_module(Path(mods) / m)
        loaded.append(n)
    files["etc/iris/modules"] = " ".join(loaded).encode()
    return files


INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /root /etc /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/iris/modules); do insmod /lib/modules/$m; done
. /etc/iris/env
hostname "$NAME"
ip link set lo up
ip link set eth0 up
[ -n "$ADDR" ] && ip addr add "$ADDR" dev eth0
[ -n "$GW" ] && ip route add default via "$GW"
# no address in the reservation: ask the IaaS side's DHCP server (keeps renewing in the background)
[ -z "$ADDR" ] && udhcpc -b -i eth0 -s /etc/iris/udhcpc.sh -x "hostname:$NAME" >/dev/null 2>&1
mkdir -p /root/.ssh && chmod 700 /root/.ssh
cp /etc/iris/authorized_keys /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
# tell the tenant's L2 where the management address now is
[ -n "$ADDR" ] && (sleep 1; arping -U -c 2 -I eth0 -s "${ADDR%/*}" "${ADDR%/*}" >/dev/null 2>&1) &
if [ -n "$ROOT" ]; then
  # an OS image: its disk becomes the root, with the L1's name, key and Iris's init; the network
  # configured above stays as it is
  i=0; while [ ! -b "$ROOT" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  mkdir -p /newroot && mount -t ext4 "$ROOT" /newroot || { echo "IRIS-L1-FAILED: mount $ROOT"; exec sh; }
  mkdir -p /newroot/root/.ssh && chmod 700 /newroot/root/.ssh
  cp /etc/iris/authorized_keys /newroot/root/.ssh/authorized_keys && chmod 600 /newroot/root/.ssh/authorized_keys
  echo "$NAME" > /newroot/etc/hostname
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$NAME" > /newroot/etc/hosts
  mkdir -p /newroot/usr/local/sbin && cp /etc/iris/iris-init /newroot/usr/local/sbin/iris-init
  chmod 755 /newroot/usr/local/sbin/iris-init
  for d in proc sys dev; do mkdir -p /newroot/$d; mount -o move /$d /newroot/$d; done
  mkdir -p /newroot/dev/pts && mount -t devpts devpts /newroot/dev/pts
  echo IRIS-L1-READY
  exec switch_root /newroot /usr/local/sbin/iris-init
fi
echo IRIS-L1-READY
while true; do setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'; done
"""


# ---------------------------------------------------------------- cpio (newc), pure

def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    nm = name.encode() + b"\0"
    hdr = "070701" + "".join(f"{v:08x}" for v in (
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nm), 0))
    out = hdr.encode() + nm
    out += b"\0" * ((4 - len(out) % 4) % 4)
    out += data
    out += b"\0" * ((4 - len(data) % 4) % 4)
    return out


def cpio(files: dict[str, bytes | None], executable: Collection[str] = frozenset()) -> bytes:
    """A newc archive: ``files`` maps a path to its content (None: a directory)."""
    out = io.BytesIO()
    dirs = set()
    for p in files:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    ino = 1
    for d in sorted(dirs | {p for p, v in files.items() if v is None}):
        out.write(_cpio_entry(d, stat.S_IFDIR | 0o755, ino=ino))
        ino += 1
    for p, data in sorted(files.items()):
        if data is None:
            continue
        mode = stat.S_IFREG | (0o755 if p in executable else 0o644)
        out.write(_cpio_entry(p, mode, data, ino=ino))
        ino += 1
    out.write(_cpio_entry("TRAILER!!!", 0))
    return out.getvalue()


def guest_env(op: L1Op) -> str:
    kv = {"NAME": op.name, "ADDR": op.address or "", "GW": op.gateway or "", "ROOT": "/dev/vda" if op.image else ""}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in kv.items())


def vm_cpio(op: L1Op) -> bytes:
    return cpio({"etc/iris/env": guest_env(op).encode(),
                 "etc/iris/authorized_keys": (op.ssh_key + "\n" if op.ssh_key else "").encode()})


def mac_of(op: L1Op) -> str:
    if op.mac:
        return op.mac
    h = hashlib.sha1(f"{op.netns or ''}/{op.name}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


def choose_accel() -> str:
    forced = os.environ.get("IRIS_KVM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    usable = os.path.exists("/dev/kvm") and any(os.path.exists(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
    return "kvm" if usable else "tcg"


SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
TCG_TB_MIB = 64  # TCG's translation cache; QEMU 7.2's default (up to 1 GiB) would be charged to the L1's cgroup


def qemu_cmd(op: L1Op, *, kernel: str, initrd: str, pidfile: str, console: str, accel: str,
             disk: str | None = None) -> Cmd:
    """The QEMU command line of one L1 (pure). No ``-daemonize`` (``spawn=deny`` forbids its
    fork) and no ``-runas`` (QEMU 7.2 installs its filter before it changes user, so
    ``elevateprivileges=deny`` kills its own setuid): it is started unprivileged instead
    (:func:`confined`)."""
    cpu = "host" if accel == "kvm" else "max"
    accel_opts = "kvm" if accel == "kvm" else f"tcg,tb-size={TCG_TB_MIB}"
    append = "console=ttyS0 quiet panic=-1 rdinit=/init"
    return cmd(
        QEMU, "-name", op.name, "-machine", "pc", "-accel", accel_opts, "-cpu", cpu,
        "-smp", str(op.cpus), "-m", str(op.memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
        "-sandbox", SANDBOX,
        "-object", f"main-loop,id=iris-main,thread-pool-max={THREAD_POOL_MAX}",
        "-kernel", kernel, "-initrd", initrd, "-append", append,
        "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac_of(op)},romfile=,csum=off,gso=off,"
                   "guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off",
        # the console: a socket for the agent, and everything on it kept in console.log
        "-chardev", f"socket,id=con0,path={console},server=on,wait=off,logfile={console}.log,logappend=on",
        "-serial", "chardev:con0",
        "-pidfile", pidfile,
        # an OS image: the L1's own copy-on-write layer over it (the image is only read)
        *(("-drive", f"file={disk},if=virtio,format=qcow2,cache=writeback,discard=unmap") if disk else ()),
    )


def confined(c: Cmd, uid: int, unit: str) -> Cmd:
    """``c`` started in the L1's cgroup ``unit`` (joined before QEMU runs), then as ``uid``:gid
    ``uid`` with no supplementary group, no capability (an empty bounding set) and no way to
    gain one (``no_new_privs``) (pure but for the cgroup layout's detection)."""
    drop = ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--bounding-set=-all", "--inh-caps=-all", "--")
    return Cmd(cgroup.join_argv(unit, (*drop, *c.argv)), c.netns, c.env, c.ok)


def limits(op: L1Op) -> cgroup.Limits:
    """The L1's cgroup: its vCPUs' worth of CPU time, its memory plus QEMU's own, a few threads."""
    return cgroup.Limits(cpus=op.cpus, memory_bytes=(op.memory_mb + QEMU_OVERHEAD_MB) << 20,
                         pids=PIDS_BASE + op.cpus)


def find_kernel() -> tuple[str, str]:
    """(kernel image, module directory) of a Debian kernel package on this host."""
    forced = os.environ.get("IRIS_KVM_KERNEL")
    cands = [Path(forced)] if forced else sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    for k in cands:
        ver = k.name.removeprefix("vmlinuz-")
        mods = Path("/lib/modules") / ver
        if k.exists() and (mods / "modules.dep").exists():
            return str(k), str(mods)
    raise L1Failed("no Debian kernel with its modules in /boot and /lib/modules (install linux-image-cloud-amd64)")


class KvmL1(L1Base):
    kind = L1Kind.KVM

    def _p(self, name: str, ext: str) -> Path:
        return self.dir / f"{name}.{ext}"

    def unit(self, name: str) -> str | None:
        """The L1's name on the host (its cgroup, its run directory): its namespace's, which is
        unique on the host by construction (and across the agents of the lab, which share one
        machine) and iris-prefixed. None before the L1's spec is saved: no such L1 here."""
        return (self._load_spec(name) or {}).get("netns")

    def run_dir(self, name: str) -> Path | None:
        """What QEMU itself opens (initramfs, pidfile, console socket), owned by the L1's user.
        Under ``/run``, since the driver's own state directory may not be traversable by it."""
        unit = self.unit(name)
        return RUN_ROOT / unit if unit else None

    def keeps_disk(self, name: str) -> bool:
        run = self.run_dir(name)
        return run is not None and run.is_dir()

    def _pid(self, name: str) -> int | None:
        run = self.run_dir(name)
        return proc.read_pid(run / "pid") if run else None

    def uid(self, name: str) -> int | None:
        """The user the L1's QEMU runs as: the owner of its run directory."""
        run = self.run_dir(name)
        try:
            return run.stat().st_uid if run else None
        except OSError:
            return None

    def _qemu(self, name: str) -> int | None:
        pid = self._pid(name)
        argv = proc.argv(pid) if pid and proc.alive(pid) else None
        if not argv or os.path.basename(argv[0]) != QEMU:  # not a recycled PID
            return None
        return pid

    def _wired(self, spec: dict[str, Any]) -> bool:
        ns, end = spec.get("netns"), spec.get("l1_ifname")
        if not ns or not end or not nl.netns_exists(ns):
            return False
        ln = nl.links(ns)
        return (TAP in ln and end in ln and tc.redirect_target(ns, TAP) == ln[end]["index"]
                and tc.redirect_target(ns, end) == ln[TAP]["index"])

    def running(self, name: str) -> bool:
        """QEMU runs and its tap is still wired to the L1's end of its NIC."""
        return self._qemu(name) is not None and self._wired(self._load_spec(name) or {})

    def base_initrd(self) -> Path:
        """The shared initramfs (busybox, modules, /init), built once per kernel."""
        kernel, mods = find_kernel()
        ver = Path(mods).name
        # named after what goes in, so a changed /init is never served from an old cache
        h = hashlib.sha1((INIT + DHCP_SCRIPT + images.INIT + " ".join(WANTED_MODULES)).encode()).hexdigest()[:8]
        out = self.dir / f"base-{ver}-{h}.cpio.gz"
        with _initrd_lock:  # several VMs start at once; one builds, the others wait for it
            if not out.exists():
                self._build_base(mods, out)
        return out

    def _build_base(self, mods: str, out: Path) -> None:
        files: dict[str, bytes | None] = {"bin/busybox": Path(BUSYBOX).read_bytes(), "init": INIT.encode(),
                                          "etc/iris/udhcpc.sh": DHCP_SCRIPT.encode(),
                                          "etc/iris/iris-init": images.INIT.encode(),
                                          "proc": None, "sys": None, "dev": None, "tmp": None}
        files.update(module_files(mods, WANTED_MODULES))
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(gzip.compress(cpio(files, executable={"bin/busybox", "init", "etc/iris/udhcpc.sh"}), 6))
        os.replace(tmp, out)

    def prepare(self, op: L1Op) -> None:
        """Only the spec, first, so an L1 that never started is still found and removed: the
        tap lives in the L1's namespace, which the NIC's wiring makes after this step."""
        self._save_spec(op)

    def start(self, op: L1Op) -> None:
        if not op.netns or not op.l1_ifname or not nl.netns_exists(op.netns):
            raise L1Failed(f"{op.name}: namespace {op.netns} or its NIC missing (its NIC was not wired)")
        same = self._load_spec(op.name) == spec_of(op)
        if self._qemu(op.name) and same:
            self._wire(op)  # the same VM, its NIC made again by a repair: plugged in again
            return
        if same and self.keeps_disk(op.name):
            # the same L1 whose QEMU exited (a guest's poweroff or panic, QEMU's own end): booted
            # again on its own disk, as a machine restarts; why it ended stays in its log
            log.warning("kvm L1 %s: QEMU had exited; starting it again on its disk. QEMU: %s. Its console: %s",
                        op.name, _tail(self._p(op.name, "log")) or "(nothing)",
                        _tail(RUN_ROOT / op.netns / "console.log") or "(nothing)")
            cgroup.remove(op.netns)  # whatever of it is left
        else:
            self.destroy(op.name, keep_spec=True)  # a changed spec, or a half-made L1: start afresh
        try:
            self._start(op)
        except Exception as e:
            self.destroy(op.name)
            raise L1Failed(f"{op.name}: {e}") from e
        self._save_spec(op)

    def _tap(self, op: L1Op, uid: int) -> None:
        """The tap in the L1's namespace, owned by the L1's user (so its unprivileged QEMU may
        attach to it; changing the link still needs a capability QEMU does not have)."""
        assert op.netns

        def make() -> None:  # in the namespace: pyroute2 makes a tap by ioctl, in its caller's namespace
            with nl.ipr() as h:
                if nl.link_index(h, TAP) is None:
                    try:
                        h.link("add", ifname=TAP, kind="tuntap", mode="tap", uid=uid, gid=uid)
                    except NetlinkError as e:
                        raise L1Failed(f"{op.name}: tap {TAP}: {e}") from e
                h.link("set", index=nl.link_index(h, TAP), state="up", mtu=op.mtu)
        netns.run_in_netns(op.netns, make)

    def _wire(self, op: L1Op) -> None:
        assert op.netns and op.l1_ifname
        tc.wire(op.netns, TAP, op.l1_ifname)

    def _start(self, op: L1Op) -> None:
        kernel, _ = find_kernel()
        base = self.base_initrd()
        assert op.netns
        unit, run = op.netns, RUN_ROOT / op.netns
        uid = self._make_run_dir(run)
        initrd = run / "initrd"
        initrd.write_bytes(base.read_bytes() + gzip.compress(vm_cpio(op)))
        os.chown(initrd, uid, uid)
        initrd.chmod(0o400)
        disk = self._disk(op, run, uid) if op.image else None
        self._tap(op, uid)
        self._wire(op)
        cgroup.create(unit, limits(op))
        c = qemu_cmd(op, kernel=kernel, initrd=str(initrd), pidfile=str(run / "pid"), console=str(run / "console"),
                     accel=choose_accel(), disk=disk)
        self.runner.spawn(confined(Cmd(c.argv, op.netns), uid, unit), log=str(self._p(op.name, "log")))
        deadline = time.monotonic() + 10
        while not self._qemu(op.name) or not (run / "console").exists():
            if time.monotonic() > deadline:
                raise L1Failed(f"{op.name}: qemu did not start: {_tail(self._p(op.name, 'log'))}")
            time.sleep(0.05)

    def _disk(self, op: L1Op, run: Path, uid: int) -> str:
        """The L1's disk: a qcow2 layer of its own over the OS image (raw, read only), of
        ``disk_gb`` when given, in its run directory (so it goes with the L1); the one it has
        when it starts again."""
        assert op.image
        image = Path(op.image)
        if not image.is_file():
            raise L1Failed(f"{op.name}: image {op.image} is not a kvm disk image (a file)")
        disk = run / "disk.qcow2"
        if disk.exists():
            return str(disk)
        size = [f"{op.disk_gb}G"] if op.disk_gb and (op.disk_gb << 30) > image.stat().st_size else []
        self.runner.run(cmd("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image, disk, *size),
                        timeout=30)
        os.chown(disk, uid, uid)
        disk.chmod(0o600)
        return str(disk)

    def _make_run_dir(self, run: Path) -> int:
        """The L1's run directory, owned by a user of its own: a uid no account and no other L1
        on this host has, so two tenants' QEMUs cannot signal or trace each other. The owners of
        the run directories are the record of which uids are taken (a lock keeps two agents of
        one host from taking the same one at once)."""
        RUN_ROOT.mkdir(mode=0o711, exist_ok=True)
        if run.is_dir():  # the L1 starting again: its user, who owns its disk, stays
            return run.stat().st_uid
        with open(RUN_ROOT / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = {d.stat().st_uid for d in RUN_ROOT.iterdir() if d.is_dir() and d != run}
            uid = UID_BASE + int(hashlib.sha1(run.name.encode()).hexdigest(), 16) % UID_RANGE
            while uid in taken or _is_account(uid):
                uid = UID_BASE + (uid - UID_BASE + 1) % UID_RANGE
            run.mkdir(mode=0o700, exist_ok=True)
            os.chown(run, uid, uid)
        return uid

    def announce(self, op: L1Op) -> None:
        """The guest announces itself (its /init sends a gratuitous ARP)."""

    def destroy(self, name: str, keep_spec: bool = False) -> None:
        """Stop QEMU (by the PID in its pidfile, then whatever else is in its cgroup), remove the
        tap, the cgroup, the run directory and the files. The namespace and the L1's end of the
        NIC are the reconciler's."""
        spec = self._load_spec(name) or {}
        pid = self._qemu(name)
        if pid:
            proc.kill_pid(pid)
        ns = spec.get("netns")
        if ns:
            cgroup.remove(ns)
            if nl.netns_exists(ns):
                nl.delete_link(ns, TAP)
            shutil.rmtree(RUN_ROOT / ns, ignore_errors=True)
        self._p(name, "log").unlink(missing_ok=True)
        if not keep_spec:
            self._drop_spec(name)

    # ---- the serial console
    def console(self, name: str, command: str, timeout: float = 20.0) -> tuple[int, str]:
        """Run ``command`` in the guest's shell; (exit status, output)."""
        run = self.run_dir(name)
        if run is None:
            raise L1Failed(f"{name}: no such kvm L1 here")
        return console_run(str(run / "console"), command, timeout)


def _is_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _tail(p: Path, n: int = 400) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def console_run(path: str, command: str, timeout: float = 20.0) -> tuple[int, str]:
    tag = f"IRIS{os.getpid()}{int(time.monotonic() * 1000) % 100000}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.connect(path)
    buf = b""
    try:
        s.sendall(f"\n{command}; echo {tag}=$?\n".encode())
        deadline = time.monotonic() + timeout
        pat = re.compile(rf"{tag}=(\d+)".encode())
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            buf += chunk
            # the echo of the command line itself contains "{tag}=$?", not digits
            m = pat.search(buf)
            if m:
                out = buf[:m.start()].decode(errors="replace")
                return int(m.group(1)), out
    finally:
        s.close()
    raise L1Failed(f"console {path}: no answer to {command!r} in {timeout}s: {buf[-300:]!r}")
