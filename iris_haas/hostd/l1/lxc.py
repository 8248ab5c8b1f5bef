"""``lxc`` L1: an unprivileged LXC container (busybox rootfs, or an OS image: a Debian rootfs
with sshd, see :mod:`iris_haas.hostd.images`) in a network namespace of its own.

What confines it (a tenant is root inside its L1 and assumed hostile):

* **A user namespace** with its own id map, ``0 -> BASE`` for 65536 ids, BASE distinct for each
  L1 on the host by construction: the L1's slot (the smallest free one among this driver's L1s,
  kept in ``ids/<slot>``) gives ``BASE = ID_BASE + slot * ID_COUNT``. The tenant's root is uid
  BASE on the L0, owns nothing there, and has capabilities only over what its namespaces own.
  Root starts the container (no ``newuidmap``): the driver writes the map itself.
* **The distribution's confinement**: LXC's ``common.conf`` (its capability drops, mount defaults
  ``proc:mixed sys:mixed cgroup:mixed``, the devices cgroup allow-list) and its seccomp policy
  (``common.seccomp``: no module loading, no ``kexec_load``, no ``open_by_handle_at``), with more
  capabilities dropped than LXC drops (:data:`CAP_DROP`), keeping what an IaaS KVM host needs
  (``net_admin``, ``sys_admin`` inside the namespace, ...). Where the kernel has AppArmor, LXC's
  ``generated`` profile; this is chosen by detection, and LXC starts without AppArmor where the
  kernel has none.
* **cgroups**: cpus, memory and a pids limit (:data:`PIDS_MAX`, a fork bomb stops there), v1 keys
  on a v1 or hybrid host, v2 keys on a unified one (:func:`iris_haas.linux.cgroup.version`); the container's
  cgroup directories are named after its namespace (``iris-...``), so they are found and removed
  by name.
* **disk_gb**: the rootfs is a sparse ext4 image of that size (a copy of one made once with
  ``mkfs.ext4 -d`` from the template or the OS image, its ids then shifted into the L1's range),
  loop-mounted ``nodev`` by the driver; writing past it fails with ENOSPC.

Its network namespace is the L1's named one (``/run/netns/<netns>``), made by :meth:`LxcL1.prepare`
*inside the L1's user namespace* before the reconciler wires the NIC into it, and the container
joins both (``lxc.namespace.share.user``/``.net``). So the tenant's root is root over its own NIC
(bridges, VLANs and taps of its IaaS, as on any KVM host) and over nothing else: the namespace
holds exactly that NIC and ``lo``, never a route or a bridge towards the L0's control network.
For the IaaS's own hypervisor, only when the L1's OS image carries it (Open vSwitch or QEMU,
:func:`iris_haas.hostd.images.has_iaas_stack`): ``/dev/net/tun``, ``/dev/kvm`` where the host has
it (bound in and allowed in the devices cgroup); every L1 has its own cgroup subtree writable
(``cgroup:mixed``), no more.

Containers live in a private LXC path (``<state_dir>/lxc``), never in the host's default
``/var/lib/lxc``, so ``lxc-ls`` of the host is not touched and teardown removes a directory.
``lxc-start -d`` runs the container's monitor in the background; it is stopped with
``lxc-stop -k`` (LXC's own handle on the container this driver started), and, should that fail,
by the PID in the container's pidfile.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iris_haas.contract import names
from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.hostd import images
from iris_haas.hostd.l1.base import L1Base, L1Failed, stop_processes_in_netns
from iris_haas.linux import cgroup, netns, proc
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import Cmd, CommandFailed, cmd

CFS_PERIOD_US = 100_000
TEMPLATE = "_iris_template"  # not a valid L1 name, so never an L1
_template_lock = threading.Lock()
_disk_lock = threading.Lock()
CGROUP_ROOT = cgroup.ROOT
LXC_CONFIG = Path("/usr/share/lxc/config")
ID_BASE = 1_000_000  # above the ranges /etc/subuid usually hands out (100000, 165536, ...)
ID_COUNT = 65536
PIDS_MAX = 4096  # processes and threads of one L1: an IaaS host's agent and VMs fit, a fork bomb stops
MIN_DISK_MB = 64  # disk_gb 0: room for the busybox rootfs and a little more
# beyond LXC's common.conf (mac_admin mac_override sys_time sys_module sys_rawio): nothing a KVM
# host needs (net_admin, net_raw, sys_admin, sys_resource, sys_nice, mknod, ... stay)
CAP_DROP = ("audit_control", "block_suspend", "mac_admin", "mac_override", "sys_boot", "sys_module",
            "sys_pacct", "sys_rawio", "sys_time", "syslog", "wake_alarm")
NS_GET_USERNS = 0xB701  # ioctl on a namespace file: its owning user namespace
_slot_lock = threading.Lock()


def apparmor_enabled() -> bool:
    """Whether the kernel has AppArmor on (LXC's ``generated`` profile needs it)."""
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def id_base(slot: int) -> int:
    return ID_BASE + slot * ID_COUNT


def id_map(base: int) -> str:
    """The L1's ``uid_map``/``gid_map`` as the kernel shows it (container 0 -> host ``base``)."""
    return f"0 {base} {ID_COUNT}"


def disk_bytes(op: L1Op, content: int = 0) -> int:
    """``disk_gb``, or with 0 the smallest disk that holds ``content`` bytes (an OS image's files)
    with room to spare."""
    return op.disk_gb << 30 if op.disk_gb else max(MIN_DISK_MB << 20, content * 5 // 4 + (MIN_DISK_MB << 20))


def tree_bytes(root: Path) -> int:
    """What the files under ``root`` take on disk (blocks; a hard link once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for d, dirs, files in os.walk(root):
        for n in (*dirs, *files):
            st = os.lstat(os.path.join(d, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def config_lines(op: L1Op, base: int, rootfs: Path, userns: Path, *, unified: bool = False,
                 apparmor: bool = False, kvm: bool = False, iaas_stack: bool = False) -> list[str]:
    """The container's whole configuration (pure): LXC's common one, then Iris's. Its cgroups are
    named after its namespace. Only an L1 whose image carries the IaaS's hypervisor stack
    (``iaas_stack``) gets the devices its VMs need: ``/dev/net/tun``, and ``/dev/kvm`` when
    ``kvm`` (the host has it)."""
    cg, v = op.netns, "cgroup2" if unified else "cgroup"
    limits = ([f"lxc.cgroup2.cpu.max = {op.cpus * CFS_PERIOD_US} {CFS_PERIOD_US}",
               f"lxc.cgroup2.memory.max = {op.memory_mb}M",
               f"lxc.cgroup2.pids.max = {PIDS_MAX}"] if unified else
              [f"lxc.cgroup.cpu.cfs_period_us = {CFS_PERIOD_US}",
               f"lxc.cgroup.cpu.cfs_quota_us = {op.cpus * CFS_PERIOD_US}",
               f"lxc.cgroup.memory.limit_in_bytes = {op.memory_mb}M",
               f"lxc.cgroup.pids.max = {PIDS_MAX}"])
    devices = ([("/dev/net/tun", "c 10:200")] + ([("/dev/kvm", "c 10:232")] if kvm else [])) if iaas_stack else []
    return [
        f"lxc.include = {LXC_CONFIG}/common.conf",
        "# --- iris",
        f"lxc.rootfs.path = dir:{rootfs}",
        f"lxc.uts.name = {op.name}",
        "lxc.autodev = 1",
        "lxc.tty.max = 0",
        "lxc.pty.max = 16",
        "lxc.tty.dir =",  # a bind mount cannot be moved inside a user namespace
        *([f"lxc.init.cmd = /{images.INIT_PATH}"] if op.image else []),  # an OS image: sshd (see images.INIT)
        "lxc.signal.halt = SIGUSR1",  # busybox init; Iris's init of an OS image too
        "lxc.signal.reboot = SIGTERM",
        # the L1's own cgroup (the root of its cgroup namespace) writable, every other ro, mounted
        # by LXC although the L1 keeps sys_admin (its busybox init mounts none)
        "lxc.mount.auto = cgroup:mixed:force",
        "lxc.mount.entry = shm dev/shm tmpfs defaults,create=dir 0 0",
        "lxc.mount.entry = mqueue dev/mqueue mqueue defaults,optional,create=dir 0 0",
        f"lxc.idmap = u 0 {base} {ID_COUNT}",
        f"lxc.idmap = g 0 {base} {ID_COUNT}",
        f"lxc.namespace.share.user = {userns}",
        "lxc.net.0.type = empty",
        f"lxc.namespace.share.net = /run/netns/{op.netns}",
        f"lxc.apparmor.profile = {'generated' if apparmor else 'unconfined'}",
        f"lxc.cap.drop = {' '.join(CAP_DROP)}",
        *(ln for path, dev in devices
          for ln in (f"lxc.mount.entry = {path} {path[1:]} none bind,create=file 0 0",
                     f"lxc.{v}.devices.allow = {dev} rwm")),
        f"lxc.cgroup.dir.container = {cg}",
        f"lxc.cgroup.dir.monitor = {cg}.mon",
        # where the monitor goes to remove the others at exit; LXC's default ("lxc.pivot") would
        # be left behind without the iris prefix
        f"lxc.cgroup.dir.monitor.pivot = {cg}.pivot",
        *limits,
    ]


def create_cmd(lxcpath: Path, name: str, base_conf: Path) -> Cmd:
    return cmd("lxc-create", "-P", str(lxcpath), "-n", name, "-t", "busybox", "-f", str(base_conf))


def start_cmd(lxcpath: Path, name: str, pidfile: Path, log: Path) -> Cmd:
    return cmd("lxc-start", "-P", str(lxcpath), "-n", name, "-d", "-p", str(pidfile), "-o", str(log), "-l", "ERROR")


def stop_cmd(lxcpath: Path, name: str) -> Cmd:
    # exit 2: not running
    return cmd("lxc-stop", "-P", str(lxcpath), "-n", name, "-k", ok=(0, 1, 2))


def attach_cmd(lxcpath: Path, name: str, *argv: str, host_netns: str | None = None) -> Cmd:
    """Run a command inside the container (tests use it to probe from inside the L1). It must run
    in the L0's namespace: LXC's command socket is an abstract unix socket, and those belong to
    the network namespace of the monitor that bound it."""
    return cmd("lxc-attach", "-P", str(lxcpath), "-n", name, "--", *argv, ok=(0, 1, 2), netns=host_netns)


class LxcL1(L1Base):
    kind = L1Kind.LXC

    @property
    def lxcpath(self) -> Path:
        return self.dir / "c"

    def _pidfile(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def _userns_file(self, name: str) -> Path:
        """The L1's user namespace, bound to a file so the container (made again) can join it."""
        return self.dir / f"{name}.userns"

    # ---- id slots: ids/<slot> holds the name of the L1 that has it
    def slot(self, name: str) -> int | None:
        try:
            slots = list((self.dir / "ids").iterdir())
        except OSError:
            return None
        for f in slots:
            try:
                if f.read_text() == name:
                    return int(f.name)
            except (OSError, ValueError):
                continue
        return None

    def _claim_slot(self, name: str) -> int:
        """The L1's slot, or the smallest free one: a file made with O_EXCL, so two L1s never get
        one slot, whatever runs in parallel."""
        with _slot_lock:
            have = self.slot(name)
            if have is not None:
                return have
            (self.dir / "ids").mkdir(parents=True, exist_ok=True)
            n = 0
            while True:
                try:
                    fd = os.open(self.dir / "ids" / str(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    n += 1
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(name)
                return n

    def _release_slot(self, name: str) -> None:
        slot = self.slot(name)
        if slot is not None:
            (self.dir / "ids" / str(slot)).unlink(missing_ok=True)

    def init_pid(self, name: str) -> int | None:
        """The container's init: the child of its monitor (the pidfile holds the monitor's PID)."""
        pid = proc.read_pid(self._pidfile(name))
        if not pid or not proc.alive(pid):
            return None
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def running(self, name: str) -> bool:
        spec = self._load_spec(name) or {}
        pid = self.init_pid(name)
        if not pid or not spec.get("netns"):
            return False
        return netns.same_netns(pid, spec["netns"])  # the container runs in the namespace of its NIC

    def prepare(self, op: L1Op) -> None:
        """Before the NIC: the L1's namespace, owned by a user namespace with the L1's id map, so
        the reconciler wires the NIC into a namespace the tenant's root is root of. A namespace
        kept from before (the L1 made again, its NIC still wired) is kept if its map is the L1's."""
        if not op.netns:
            raise L1Failed(f"{op.name}: a {self.kind} L1 needs a namespace")
        try:
            base = id_base(self._claim_slot(op.name))
            userns = self._userns_file(op.name)
            self._unbind(userns)
            if nl.netns_exists(op.netns) and self._netns_map(op.netns) != id_map(base):
                nl.delete_netns(op.netns)  # not this L1's (the NIC, if any, is wired again)
            if not nl.netns_exists(op.netns):
                self._make_namespaces(op.netns, base)
            userns.touch()
            with _owner_fd(op.netns) as fd:
                self.runner.run(cmd("mount", "--bind", f"/proc/{os.getpid()}/fd/{fd}", userns), timeout=10)
        except Exception as e:
            self.destroy(op.name)  # its slot and user namespace file; the namespace is its NIC's
            raise L1Failed(f"{op.name}: {e}") from e

    def _netns_map(self, ns: str) -> str | None:
        """The uid map of the user namespace that owns namespace ``ns`` (None: the host's)."""
        with _owner_fd(ns) as fd:
            if os.stat(f"/proc/{os.getpid()}/fd/{fd}").st_ino == os.stat("/proc/self/ns/user").st_ino:
                return None
            out = self.runner.run(cmd("nsenter", f"--user=/proc/{os.getpid()}/fd/{fd}", "cat", "/proc/self/uid_map"))
        return " ".join(out.split()) or None

    def _make_namespaces(self, ns: str, base: int) -> None:
        """A user namespace with the L1's map and a network namespace it owns, named ``ns``: a
        process made in both (``unshare``), its maps written by us (root, no ``newuidmap``), its
        network namespace named (``ip netns attach``), then stopped; the name keeps both."""
        pid = self.runner.spawn(cmd("unshare", "--user", "--net", "--", "sleep", "30"))
        try:
            deadline = time.monotonic() + 5
            while os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
                if time.monotonic() > deadline:
                    raise L1Failed(f"{ns}: unshare did not make a user namespace")
                time.sleep(0.005)
            for f in ("uid_map", "gid_map"):
                Path(f"/proc/{pid}/{f}").write_text(id_map(base) + "\n")
            self.runner.run(cmd("ip", "netns", "attach", ns, pid), timeout=10)
        finally:
            proc.kill_pid(pid)
        nl.set_link(ns, "lo", up=True)
        self.runner.run(nl.netns_sysctl_cmds(ns))

    def exec_cmd(self, name: str, *argv: str) -> Cmd:
        return attach_cmd(self.lxcpath, name, *argv, host_netns=self.host_netns)

    def start(self, op: L1Op) -> None:
        if not op.netns or not nl.netns_exists(op.netns) or not mounted(self._userns_file(op.name)):
            raise L1Failed(f"{op.name}: namespace {op.netns} missing (not prepared, or its NIC was not wired)")
        self.set_mac(op)
        if (self.lxcpath / op.name).exists():  # a leftover or a changed spec: start afresh
            self._remove_container(op.name)
        try:
            self._create_and_start(op)
        except Exception as e:
            self.destroy(op.name)  # leave nothing half-made
            raise L1Failed(f"{op.name}: {e}") from e
        if op.gateway:
            nl.ensure_route(op.netns, "0.0.0.0/0", op.gateway)
        self.start_dhcp(op)
        self._save_spec(op)

    def _template(self) -> Path:
        """A busybox rootfs made once by ``lxc-create -t busybox``; each L1's disk is made from
        it (2 MB, about 300 files: a copy takes a tenth of what the template script takes)."""
        tdir = self.lxcpath / TEMPLATE
        with _template_lock:
            if not (tdir / "config").exists():
                shutil.rmtree(tdir, ignore_errors=True)
                shutil.rmtree(self.dir / "disks", ignore_errors=True)  # made from the template before
                self.lxcpath.mkdir(parents=True, exist_ok=True)
                base = self.dir / "base.conf"
                base.write_text("lxc.net.0.type = empty\n")
                self.runner.run(create_cmd(self.lxcpath, TEMPLATE, base), timeout=60)
        return tdir / "rootfs"

    def _create_and_start(self, op: L1Op) -> None:
        base = id_base(self._claim_slot(op.name))
        cdir = self.lxcpath / op.name
        cdir.mkdir(parents=True)
        for d in (cdir, *cdir.parents):  # LXC reaches the rootfs as the L1's root, from its user namespace
            if d.is_relative_to(self.dir):
                d.chmod(0o711)
            elif not d.stat().st_mode & stat.S_IXOTH:
                raise L1Failed(f"{d} must be searchable by others (o+x): the L1's root reaches its rootfs through it")
        self._make_disk(op, cdir)
        rootfs = cdir / "rootfs"
        rootfs.mkdir()
        self.runner.run(cmd("mount", "-o", "loop,nodev", cdir / "disk.img", rootfs), timeout=20)
        self._personalize(op, base, rootfs)
        lines = config_lines(op, base, rootfs, self._userns_file(op.name), unified=cgroup.version() == 2,
                             apparmor=apparmor_enabled(), kvm=Path("/dev/kvm").exists(),
                             iaas_stack=images.has_iaas_stack(Path(op.image)) if op.image else False)
        (cdir / "config").write_text("\n".join(lines) + "\n")
        pidfile = self._pidfile(op.name)
        pidfile.unlink(missing_ok=True)
        log = cdir / "lxc.log"  # LXC's own reasons, in the error when it does not start
        try:
            self.runner.run(start_cmd(self.lxcpath, op.name, pidfile, log), timeout=30)
        except CommandFailed as e:
            why = log.read_text()[-1500:] if log.exists() else ""
            raise L1Failed(f"lxc-start failed: {why or e}") from e
        deadline = time.monotonic() + 10
        while not (pid := self.init_pid(op.name)):
            if time.monotonic() > deadline:
                raise L1Failed(f"{op.name}: container did not start")
            time.sleep(0.02)
        got = " ".join(Path(f"/proc/{pid}/uid_map").read_text().split())
        if got != id_map(base):
            raise L1Failed(f"{op.name}: the container's uid map is {got!r}, not {id_map(base)!r}")

    def _make_disk(self, op: L1Op, cdir: Path) -> None:
        """The L1's disk: a sparse copy of its source's pristine disk (:meth:`_pristine_disk`)."""
        self.runner.run(cmd("cp", "--sparse=always", self._pristine_disk(op), cdir / "disk.img"), timeout=60)
        (cdir / "disk.img").chmod(0o600)

    def _pristine_disk(self, op: L1Op) -> Path:
        """A sparse ext4 image of ``disk_gb`` holding the busybox template or the L1's OS image, ids
        unchanged, made once per source and size with ``mkfs.ext4 -d``. No journal (a disk does not
        outlive its L1), no blocks reserved for the host's root. Copying it and shifting the ids of
        the copy's files in place costs a fraction of copying the tree and making a file system of
        it for each L1."""
        if op.image and not (Path(op.image) / "usr" / "sbin" / "sshd").exists():
            raise L1Failed(f"{op.name}: image {op.image} is not an lxc rootfs with an SSH server (no usr/sbin/sshd)")
        src = Path(op.image) if op.image else self._template()
        img = self.dir / "disks" / f"{hashlib.sha256(str(src).encode()).hexdigest()}-{op.disk_gb}.img"
        with _disk_lock:
            if not img.exists():
                img.parent.mkdir(parents=True, exist_ok=True)
                tmp = img.with_suffix(".tmp")
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                    f.truncate(disk_bytes(op, tree_bytes(src) if op.image else 0))
                self.runner.run(cmd("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-E",
                                    "nodiscard,lazy_itable_init=1", "-d", src, tmp), timeout=300)
                os.replace(tmp, img)
        return img

    def _personalize(self, op: L1Op, base: int, rootfs: Path) -> None:
        """The mounted copy made the L1's: (an OS image) Iris's init and the L1's hostname, the
        tenant's key in ``/root/.ssh``, every id shifted into the L1's range."""
        if op.image:
            images.install_init(rootfs)
            (rootfs / "etc" / "hostname").write_text(f"{op.name}\n")
            (rootfs / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{op.name}\n")
        ssh = rootfs / "root" / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh / "authorized_keys").write_text(op.ssh_key + ("\n" if op.ssh_key else ""))
        (ssh / "authorized_keys").chmod(0o600)
        shift_ids(rootfs, base)

    def _remove_container(self, name: str) -> None:
        """Stop the container and remove its directory, its disk and the disk's mount."""
        cdir = self.lxcpath / name
        if cdir.exists():
            try:
                self.runner.run(stop_cmd(self.lxcpath, name), timeout=20)
            except CommandFailed:
                pass
            pid = proc.read_pid(self._pidfile(name))
            # the monitor leaves by itself once the container stopped, moving into its pivot
            # cgroup to remove the others: killed before that, it leaves them behind
            deadline = time.monotonic() + 5
            while pid and proc.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid and proc.alive(pid):
                proc.kill_pid(pid)
        self._unbind(cdir / "rootfs")
        shutil.rmtree(cdir, ignore_errors=True)

    def _unbind(self, path: Path) -> None:
        """Unmount whatever is mounted on ``path`` (a loop mount frees its loop device with it)."""
        while mounted(path):
            self.runner.run(cmd("umount", path), timeout=20)

    def destroy(self, name: str) -> None:
        spec = self._load_spec(name) or {}
        self._remove_container(name)
        if spec.get("netns"):
            stop_processes_in_netns(spec["netns"])  # anything else the tenant ran in the L1
            remove_cgroups(spec["netns"])
        self._unbind(self._userns_file(name))
        self._userns_file(name).unlink(missing_ok=True)
        self._pidfile(name).unlink(missing_ok=True)
        self._drop_spec(name)
        self._release_slot(name)


@contextmanager
def _owner_fd(ns: str) -> Iterator[int]:
    """An open descriptor of the user namespace that owns network namespace ``ns``."""
    fd = os.open(netns.path(ns), os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        yield owner
    finally:
        os.close(owner)


def mounted(path: Path) -> bool:
    """Whether something is mounted on ``path`` (a file too: a namespace bound to a file)."""
    with open("/proc/self/mountinfo") as f:
        return any(ln.split()[4] == str(path) for ln in f)


def shift_ids(root: Path, base: int) -> None:
    """Add ``base`` to the owner and group of every file under ``root`` (and of ``root``), keeping
    the modes (a chown clears set-id bits). A file with several names (busybox's hard links) is
    shifted once."""
    seen: set[tuple[int, int]] = set()

    def one(p: str) -> None:
        st = os.lstat(p)
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        os.lchown(p, st.st_uid + base, st.st_gid + base)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(p, stat.S_IMODE(st.st_mode))

    one(str(root))
    for d, dirs, files in os.walk(root):
        for n in (*dirs, *files):
            one(os.path.join(d, n))


def cgroup_dirs(cg: str) -> list[Path]:
    """Every cgroup directory of a container named ``cg`` (and its monitor), in any hierarchy."""
    out: list[Path] = []
    try:
        roots = [p for p in CGROUP_ROOT.iterdir() if p.is_dir()]
    except OSError:
        return out
    for root in roots:
        for n in (cg, f"{cg}.mon", f"{cg}.pivot"):
            if (root / n).is_dir():
                out.append(root / n)
    return out


def remove_cgroups(cg: str, wait: float = 2.0) -> None:
    """Remove the container's cgroup directories; the monitor may still be leaving its pivot
    cgroup for a moment after ``lxc-stop`` returns, so busy ones are retried for ``wait`` s."""
    if not cg.startswith(names.PREFIX):
        return
    deadline = time.monotonic() + wait
    while True:
        _remove_cgroups_once(cg)
        if not cgroup_dirs(cg) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _remove_cgroups_once(cg: str) -> None:
    for d in cgroup_dirs(cg):
        # children first (LXC may nest an ``init`` or ``lxc.payload`` below)
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass
