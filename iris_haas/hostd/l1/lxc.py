"""``lxc`` L1: a real LXC container (busybox rootfs) joined to the namespace Iris wires.

The container does not get a network of its own: ``lxc.namespace.share.net`` points at the L1's
named namespace (``/run/netns/<netns>``), which holds the L1's one NIC, wired by the reconciler
before the container starts. So the container sees exactly that NIC and ``lo``, never a route or
a bridge towards the L0's control network. The flavor is enforced through cgroups (cgroup v1
here: ``cpu.cfs_quota_us`` = cpus x period, ``memory.limit_in_bytes``); the container's cgroup
directories are named after its namespace (``iris-...``), so they are found and removed by name.

Containers live in a private LXC path (``<state_dir>/lxc``), never in the host's default
``/var/lib/lxc``, so ``lxc-ls`` of the host is not touched and teardown removes a directory.
``lxc-start -d`` runs the container's monitor in the background; it is stopped with
``lxc-stop -k`` (LXC's own handle on the container this driver started), and, should that fail,
by the PID in the container's pidfile.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from iris_haas.contract import names
from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.hostd.l1.base import L1Base, L1Failed, stop_processes_in_netns
from iris_haas.linux import netlink as nl
from iris_haas.linux import netns, proc
from iris_haas.linux.runner import Cmd, CommandFailed, cmd

CFS_PERIOD_US = 100_000
TEMPLATE = "_iris_template"  # not a valid L1 name, so never an L1
_template_lock = threading.Lock()
CGROUP_ROOT = Path("/sys/fs/cgroup")


def config_lines(op: L1Op) -> list[str]:
    """The container configuration Iris appends to the template's (pure). Its cgroups are named
    after its namespace."""
    cg = op.netns
    return [
        "# --- iris",
        "lxc.net.0.type = empty",
        f"lxc.namespace.share.net = /run/netns/{op.netns}",
        f"lxc.uts.name = {op.name}",
        "lxc.apparmor.profile = unconfined",
        f"lxc.cgroup.dir.container = {cg}",
        f"lxc.cgroup.dir.monitor = {cg}.mon",
        # where the monitor goes to remove the others at exit; LXC's default ("lxc.pivot") would
        # be left behind without the iris prefix
        f"lxc.cgroup.dir.monitor.pivot = {cg}.pivot",
        f"lxc.cgroup.cpu.cfs_period_us = {CFS_PERIOD_US}",
        f"lxc.cgroup.cpu.cfs_quota_us = {op.cpus * CFS_PERIOD_US}",
        f"lxc.cgroup.memory.limit_in_bytes = {op.memory_mb}M",
    ]


def create_cmd(lxcpath: Path, name: str, base_conf: Path) -> Cmd:
    return cmd("lxc-create", "-P", str(lxcpath), "-n", name, "-t", "busybox", "-f", str(base_conf))


def start_cmd(lxcpath: Path, name: str, pidfile: Path) -> Cmd:
    return cmd("lxc-start", "-P", str(lxcpath), "-n", name, "-d", "-p", str(pidfile))


def stop_cmd(lxcpath: Path, name: str) -> Cmd:
    # exit 2: not running
    return cmd("lxc-stop", "-P", str(lxcpath), "-n", name, "-k", ok=(0, 1, 2))


def destroy_cmd(lxcpath: Path, name: str) -> Cmd:
    return cmd("lxc-destroy", "-P", str(lxcpath), "-n", name, "-f", ok=(0, 1))


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
        """Nothing to make before the NIC: the container joins the namespace the NIC is in."""

    def exec_cmd(self, name: str, *argv: str) -> Cmd:
        return attach_cmd(self.lxcpath, name, *argv, host_netns=self.host_netns)

    def start(self, op: L1Op) -> None:
        if not op.netns or not nl.netns_exists(op.netns):
            raise L1Failed(f"{op.name}: namespace {op.netns} missing (its NIC was not wired)")
        self.set_mac(op)
        if (self.lxcpath / op.name).exists():  # a leftover or a changed spec: start afresh
            self.destroy(op.name)
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
        """A busybox container made once by ``lxc-create -t busybox``; each L1 is a copy of it
        (2 MB, about 300 files: a copy takes a tenth of what the template script takes)."""
        tdir = self.lxcpath / TEMPLATE
        with _template_lock:
            if not (tdir / "config").exists():
                shutil.rmtree(tdir, ignore_errors=True)
                self.lxcpath.mkdir(parents=True, exist_ok=True)
                base = self.dir / "base.conf"
                base.write_text("lxc.net.0.type = empty\n")
                self.runner.run(create_cmd(self.lxcpath, TEMPLATE, base), timeout=60)
        return tdir

    def _create_and_start(self, op: L1Op) -> None:
        tdir = self._template()
        cdir = self.lxcpath / op.name
        self.runner.run(cmd("cp", "-a", str(tdir), str(cdir)), timeout=60)
        conf = (tdir / "config").read_text().replace(f"{tdir}/", f"{cdir}/")
        conf = "\n".join(ln for ln in conf.splitlines() if not ln.startswith("lxc.uts.name"))
        (cdir / "config").write_text(conf + "\n" + "\n".join(config_lines(op)) + "\n")
        ssh = cdir / "rootfs" / "root" / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        ssh.chmod(0o700)
        (ssh / "authorized_keys").write_text(op.ssh_key + ("\n" if op.ssh_key else ""))
        (ssh / "authorized_keys").chmod(0o600)
        pidfile = self._pidfile(op.name)
        pidfile.unlink(missing_ok=True)
        self.runner.run(start_cmd(self.lxcpath, op.name, pidfile), timeout=30)
        deadline = time.monotonic() + 10
        while not self.init_pid(op.name):
            if time.monotonic() > deadline:
                raise L1Failed(f"{op.name}: container did not start")
            time.sleep(0.02)

    def destroy(self, name: str) -> None:
        spec = self._load_spec(name) or {}
        cdir = self.lxcpath / name
        if cdir.exists():
            try:
                self.runner.run(stop_cmd(self.lxcpath, name), timeout=20)
            except CommandFailed:
                pass
            pid = proc.read_pid(self._pidfile(name))
            if pid and proc.alive(pid):
                proc.kill_pid(pid)
            try:
                self.runner.run(destroy_cmd(self.lxcpath, name), timeout=20)
            except CommandFailed:
                pass
            shutil.rmtree(cdir, ignore_errors=True)
        if spec.get("netns"):
            stop_processes_in_netns(spec["netns"])  # anything else the tenant ran in the L1
            remove_cgroups(spec["netns"])
        self._pidfile(name).unlink(missing_ok=True)
        self._drop_spec(name)


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
