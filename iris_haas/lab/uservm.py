"""The IaaS's user VMs for real: QEMU guests deployed over SSH, as CloudStack's KVM agent does.

The lab's IaaS stand-in (:mod:`iris_haas.lab.iaas`) moves namespaces around; this module runs
what an IaaS really runs on a KVM host. The IaaS management host logs into a host over SSH and
drives everything there with the host's own tools, one code path whether the host is an IaaS
host of the IaaS DC or an L1 lent by HaaS (the transparency claim):

* :class:`HostSsh`: how the management host reaches a host (namespace of the ssh client, key,
  address) and what the host's agent configuration names: its OVS database, the bridge of its
  guests (``iris-cloudbr0``) and the directory that holds its templates and VMs.
* :func:`prepare_host`: what an operator does before "add host" on a host of the IaaS's own
  image: the host's own Open vSwitch (from the image's ``openvswitch-switch``) with the bridge on
  its NIC, management VLAN native, every guest VLAN tagged. An IaaS host of the lab gets its OVS
  from :func:`iris_haas.lab.iaas.add_iaas_host` instead (its files in the lab's run directory).
* :func:`deploy_user_vm`: the template (this machine's Debian kernel and a busybox initramfs,
  :func:`guest_initrd`) copied to the host once, content-named; then a tap, an access port of
  the bridge on the guest VLAN, and QEMU (TCG: no ``/dev/kvm`` in an L1 here) booting the
  template with the VM's MAC and address, controlled through its QMP socket (libvirt does not run
  here). Returns a :class:`UserVm`; :meth:`UserVm.destroy` quits QEMU through QMP and removes the
  port, the tap and the VM's directory.

The guest's ``/init`` reads its address from the kernel command line (``iris.addr=``), brings
``eth0`` up and announces itself with a gratuitous ARP; then it only answers (ping, ARP).

Everything the deploy makes on a host carries the ``iris`` prefix: the tap ``irisu-<vm>``, the
VM's directory ``iris-<vm>``, its OVS port (``external_ids`` naming the owner).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from iris_haas.contract import names
from iris_haas.hostd.l1 import kvm
from iris_haas.lab import probe
from iris_haas.linux import ovs
from iris_haas.linux.proc import kill_pid
from iris_haas.linux.runner import Cmd, SubprocessRunner, cmd

BRIDGE = "iris-cloudbr0"
TEMPLATES = "templates"  # under the host's work directory
GUEST_MODULES = ["virtio_pci", "virtio_net"]
GUEST_MEMORY_MB = 96
TCG_TB_MIB = 32
GUEST_INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/iris/modules); do insmod /lib/modules/$m; done
for a in $(cat /proc/cmdline); do case "$a" in iris.addr=*) ADDR="${a#iris.addr=}";; esac; done
ip link set lo up
ip link set eth0 up
[ -n "$ADDR" ] && ip addr add "$ADDR" dev eth0
[ -n "$ADDR" ] && arping -U -c 2 -I eth0 -s "${ADDR%/*}" "${ADDR%/*}" >/dev/null 2>&1
# the IaaS's way into its guest (what a guest agent is for): a root shell on the second serial
# port, a unix socket of QEMU's on the host (:meth:`UserVm.shell`); no network service
(while true; do setsid sh -c 'exec sh </dev/ttyS1 >/dev/ttyS1 2>&1'; done) &
echo IRIS-UVM-READY
while true; do sleep 3600; done
"""
GUEST_TOOLS = ["iperf3"]  # this machine's binaries, with their shared libraries, in the guest
# a QMP client for the host's python3 (the IaaS stack's Open vSwitch brings it): one command,
# its "return" printed as JSON
QMP_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(float(sys.argv[3])); s.connect(sys.argv[1])
f = s.makefile("rw")
def call(c):
    f.write(json.dumps(c) + "\n"); f.flush()
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m:
            return m
json.loads(f.readline())
call({"execute": "qmp_capabilities"})
m = call(json.loads(sys.argv[2]))
print(json.dumps(m)); sys.exit(0 if "return" in m else 1)
"""
# a client of the guest's serial shell for the host's python3: one command, its output printed,
# its exit status this script's (the command's echo carries "TAG=$?", never "TAG=<digits>")
SHELL_CLIENT = r"""
import re, socket, sys, time
tag = "IRISSH%d" % (int(time.time() * 1000) % 10**9)
s = socket.socket(socket.AF_UNIX); s.settimeout(0.5); s.connect(sys.argv[1])
s.sendall(("\n%s; echo %s=$?\n" % (sys.argv[2], tag)).encode())
deadline, buf, pat = time.monotonic() + float(sys.argv[3]), b"", re.compile((tag + r"=(\d+)").encode())
while time.monotonic() < deadline:
    try:
        c = s.recv(65536)
    except socket.timeout:
        continue
    if not c:
        break
    buf += c
    m = pat.search(buf)
    if m:
        sys.stdout.write(buf[:m.start()].decode(errors="replace").replace("\r", "")); sys.exit(int(m.group(1)))
sys.stderr.write("no answer: %r" % buf[-300:]); sys.exit(124)
"""


# GRO off on a NIC (SIOCETHTOOL, ETHTOOL_SGRO) with the host's python3 (the image has no ethtool):
# a userspace OVS reads the NIC through a packet socket one MTU at a time, so segments the
# kernel merged on receive (a kvm L1's virtio-net does) would reach it cut and be lost
GRO_OFF = r"""
import ctypes, fcntl, socket, struct, sys
v = ctypes.create_string_buffer(struct.pack("II", 0x2c, 0))
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946,
            struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(v)) + bytes(16))
"""


class DeployFailed(RuntimeError):
    pass


def keypair(d: Path, name: str) -> tuple[Path, str]:
    """A fresh ed25519 key pair ``d/name`` (no passphrase): the private key's path, the public key."""
    key = Path(d) / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@iaas", "-f", str(key)], check=True)
    return key, (Path(d) / f"{name}.pub").read_text().strip()


def ssh_cmd(client_ns: str, key: Path, ip: str, command: str) -> Cmd:
    """``command`` run as root on ``ip`` over SSH with ``key``, from namespace ``client_ns`` (no
    prompts, no known-hosts file: the lab's hosts are made anew each time)."""
    return cmd("ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
               f"root@{ip}", command, netns=client_ns)


def ssh_when_up(client_ns: str, key: Path, ip: str, *, timeout: float, every: float = 0.2) -> subprocess.CompletedProcess:
    """``hostname`` over SSH, tried every ``every`` s until it succeeds (a host booting, its sshd
    making its keys); its result. :class:`DeployFailed` after ``timeout``."""
    deadline = time.monotonic() + timeout
    c = ssh_cmd(client_ns, key, ip, "hostname").full_argv()
    while (got := subprocess.run(c, capture_output=True, text=True, timeout=30)).returncode != 0:
        if time.monotonic() > deadline:
            raise DeployFailed(f"{ip} does not answer ssh: {got.stderr.strip()[-300:]}")
        time.sleep(every)
    return got


@dataclass(frozen=True)
class HostSsh:
    """A host as the IaaS management host sees it: where its ssh client runs (``client_ns``),
    the key, the host's management address; and the agent's view of the host: its OVS database
    (``unix:...``), the guests' bridge and its work directory."""

    client_ns: str
    key: Path
    ip: str
    workdir: str
    ovs_db: str
    bridge: str = BRIDGE

    def argv(self, command: str) -> list[str]:
        return ssh_cmd(self.client_ns, self.key, self.ip, command).full_argv()

    def run(self, script: str, *, timeout: float = 60, stdin: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        """``script`` run by the host's shell (``sh -c``), over one SSH connection."""
        p = subprocess.run(self.argv(script), input=stdin, capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise DeployFailed(f"{self.ip}: {script[:200]!r} exited {p.returncode}: "
                               f"{p.stderr.decode(errors='replace')[-800:]}")
        return p

    def vsctl(self, *subs: ovs.Sub) -> str:
        """One OVSDB transaction on the host's database, as a shell line."""
        return str(ovs.txn(self.ovs_db, *subs))


def tap_name(vm: str) -> str:
    return names.ifname("u", vm)


def binary_files(names_: list[str]) -> dict[str, bytes]:
    """This machine's executables ``names_`` (found on PATH) and every shared library they load,
    the dynamic loader included (``ldd``), each at the path it is loaded from: what an initramfs
    needs to run them. :class:`DeployFailed` if one is missing."""
    files: dict[str, bytes] = {}
    for n in names_:
        exe = shutil.which(n)
        if exe is None:
            raise DeployFailed(f"{n} is not installed on this machine (the guest's tools come from it)")
        files[exe.lstrip("/")] = Path(exe).read_bytes()
        out = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"(/\S+) \(0x", out):  # "libx.so => /lib/.../libx.so (0x..)", "/lib64/ld-... (0x..)"
            files[lib.lstrip("/")] = Path(lib).resolve().read_bytes()
    return files


def guest_initrd(out_dir: Path) -> Path:
    """The guest's initramfs (busybox, virtio-net's modules, :data:`GUEST_TOOLS` with their
    libraries, :data:`GUEST_INIT`) for this machine's Debian kernel, built once into ``out_dir``
    under a name of its content's inputs."""
    _, mods = kvm.find_kernel()
    tools = binary_files(GUEST_TOOLS)
    h = hashlib.sha1((GUEST_INIT + " ".join(GUEST_MODULES)).encode()
                     + b"".join(hashlib.sha1(v).digest() for _, v in sorted(tools.items()))).hexdigest()[:8]
    out = Path(out_dir) / f"iris-uvm-{Path(mods).name}-{h}.cpio.gz"
    if out.exists():
        return out
    files: dict[str, bytes | None] = {"bin/busybox": Path(kvm.BUSYBOX).read_bytes(), "init": GUEST_INIT.encode(),
                                      "proc": None, "sys": None, "dev": None, "tmp": None}
    files.update(tools)
    files.update(kvm.module_files(mods, GUEST_MODULES))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(kvm.cpio(files, executable={"bin/busybox", "init", *tools}), 6))
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class Template:
    """The files a user VM boots (kernel, initramfs) on this machine, named by content on a host."""

    kernel: Path
    initrd: Path

    @staticmethod
    def local(out_dir: Path) -> Template:
        kernel, _ = kvm.find_kernel()
        return Template(Path(kernel), guest_initrd(out_dir))

    def remote_names(self) -> tuple[str, str]:
        return tuple(f"{p.name}-{hashlib.sha1(p.read_bytes()).hexdigest()[:12]}"  # type: ignore[return-value]
                     for p in (self.kernel, self.initrd))


def stage_template(host: HostSsh, tpl: Template) -> tuple[str, str]:
    """The template on the host (copied once, as an IaaS copies a template to a host's primary
    storage); the remote paths of its kernel and initramfs."""
    d = f"{host.workdir}/{TEMPLATES}"
    paths = tuple(f"{d}/{n}" for n in tpl.remote_names())
    have = host.run(f"for f in {' '.join(paths)}; do [ -s $f ] && echo $f; done; true").stdout.decode().split()
    for local, remote in zip((tpl.kernel, tpl.initrd), paths):
        if remote not in have:
            host.run(f"mkdir -p {d} && cat > {remote}.tmp && mv {remote}.tmp {remote}", stdin=local.read_bytes(),
                     timeout=120)
    return paths  # type: ignore[return-value]


def qemu_argv(name: str, *, kernel: str, initrd: str, vmdir: str, tap: str, mac: str, address: str,
              memory_mb: int = GUEST_MEMORY_MB, incoming: str | None = None) -> list[str]:
    """The user VM's QEMU command line on the host (pure): TCG, the template's kernel, its NIC on
    ``tap``, QMP on a unix socket in its directory, daemonized with a pidfile."""
    return [
        kvm.QEMU, "-name", f"iris-{name}", "-machine", "pc", "-accel", f"tcg,tb-size={TCG_TB_MIB}", "-cpu", "qemu64",
        "-smp", "1", "-m", str(memory_mb), "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-no-reboot", "-kernel", kernel, "-initrd", initrd,
        "-append", f"console=ttyS0 quiet panic=-1 rdinit=/init iris.addr={address}",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=,csum=off,gso=off,"
                   "guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off",
        "-serial", f"file:{vmdir}/console", "-serial", f"unix:{vmdir}/shell,server=on,wait=off", "-qmp", f"unix:{vmdir}/qmp,server=on,wait=off",
        "-pidfile", f"{vmdir}/pid", "-daemonize",
        # its stderr (kept: -D keeps a daemon's stderr open) and the guest's errors seen by QEMU
        "-d", "guest_errors", "-D", f"{vmdir}/guest-errors.log",
        *(("-incoming", incoming) if incoming else ()),
    ]


def deploy_script(host: HostSsh, name: str, *, vlan: int, owner: str, qemu: list[str]) -> str:
    """What the agent runs on the host for one VM (pure): its directory, the tap on the guest
    VLAN of the host's bridge, QEMU; prints QEMU's PID."""
    vmdir, tap = f"{host.workdir}/iris-{name}", tap_name(name)
    return "\n".join([
        "set -e",
        f"mkdir -p {vmdir}",
        f"ip tuntap add dev {tap} mode tap",
        f"ip link set {tap} up",
        host.vsctl(*ovs.add_port(host.bridge, tap, tag=vlan, vlan_mode="access", external_ids={names.OWNER: owner})),
        " ".join(shlex.quote(a) for a in qemu) + f" 2>>{vmdir}/qemu.log",
        f"cat {vmdir}/pid",
    ])


@dataclass
class UserVm:
    host: HostSsh
    name: str
    vlan: int
    mac: str
    address: str  # CIDR
    pid: int

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def vmdir(self) -> str:
        return f"{self.host.workdir}/iris-{self.name}"

    def qmp(self, command: str, timeout: float = 10, **arguments) -> dict:
        """One QMP command on the host's QEMU; its answer."""
        c = {"execute": command, **({"arguments": arguments} if arguments else {})}
        p = self.host.run(f"python3 -c {shlex.quote(QMP_CLIENT)} {self.vmdir}/qmp {shlex.quote(json.dumps(c))} "
                          f"{timeout}", timeout=timeout + 15)
        return json.loads(p.stdout.decode())

    def shell(self, command: str, timeout: float = 30) -> tuple[int, str]:
        """``command`` run by the guest's shell (its second serial port, QEMU's unix socket
        ``shell`` in the VM's directory, reached through the host over SSH); (exit status, output).
        :class:`DeployFailed` when the guest does not answer within ``timeout``."""
        p = self.host.run(f"python3 -c {shlex.quote(SHELL_CLIENT)} {self.vmdir}/shell {shlex.quote(command)} "
                          f"{timeout}", timeout=timeout + 20, check=False)
        if p.returncode == 124 or p.returncode == 255:
            raise DeployFailed(f"{self.name}: no answer from its shell to {command!r}: "
                               f"{p.stderr.decode(errors='replace')[-300:]}")
        return p.returncode, p.stdout.decode(errors="replace")

    def destroy(self) -> None:
        """QEMU quits (QMP), then its port, tap and directory go. Tolerant: what is gone is gone."""
        try:
            self.qmp("quit")
        except (DeployFailed, ValueError):
            pass  # not running any more: the pid check below finds out
        tap = tap_name(self.name)
        self.host.run("\n".join([
            f"i=0; while kill -0 {self.pid} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done",
            f"kill -9 {self.pid} 2>/dev/null || true",  # QEMU's PID, from its own pidfile
            self.host.vsctl(*ovs.del_port(tap)),
            f"ip link del {tap} 2>/dev/null || true",
            f"rm -rf {self.vmdir}",
        ]))

    def log_tail(self, n: int = 600) -> str:
        """The end of QEMU's own messages (its stderr, ``qemu.log``, and the guest's errors it saw,
        ``guest-errors.log``, in the VM's directory)."""
        p = self.host.run(f"cat {self.vmdir}/qemu.log {self.vmdir}/guest-errors.log 2>/dev/null | tail -c {n}", check=False)
        return p.stdout.decode(errors="replace").strip() or "(nothing)"

    def leftovers(self) -> list[str]:
        """What of the VM is still on the host (its process, tap, OVS port, directory)."""
        tap = tap_name(self.name)
        out = self.host.run("\n".join([
            f"[ -d /proc/{self.pid} ] && grep -q qemu /proc/{self.pid}/cmdline && echo process {self.pid}",
            f"ip link show {tap} >/dev/null 2>&1 && echo tap {tap}",
            f"ovs-vsctl --db={self.host.ovs_db} list-ports {self.host.bridge} | grep -qx {tap} && echo port {tap}",
            f"[ -e {self.vmdir} ] && echo dir {self.vmdir}",
            "true"])).stdout.decode()
        return [ln for ln in out.splitlines() if ln.strip()]


def deploy_user_vm(host: HostSsh, tpl: Template, name: str, vlan: int, mac: str, address: str, *,
                   owner: str, memory_mb: int = GUEST_MEMORY_MB, incoming: str | None = None) -> UserVm:
    """Deploy one user VM on ``host``: the template staged (once), then the tap, the port on
    ``vlan`` and QEMU, through one SSH session; returns at once (the guest boots on). With
    ``incoming`` (a QEMU migration URI), QEMU waits there for a migration instead of booting. A
    name whose tap name would not fit is refused before anything is made."""
    tap = tap_name(name)
    kernel, initrd = stage_template(host, tpl)
    vmdir = f"{host.workdir}/iris-{name}"
    q = qemu_argv(name, kernel=kernel, initrd=initrd, vmdir=vmdir, tap=tap, mac=mac, address=address,
                  memory_mb=memory_mb, incoming=incoming)
    vm = UserVm(host, name, vlan, mac, address, pid=0)
    try:
        out = host.run(deploy_script(host, name, vlan=vlan, owner=owner, qemu=q), timeout=60)
    except DeployFailed:
        vm.destroy()  # nothing half-made stays
        raise
    vm.pid = int(out.stdout.decode().split()[-1])
    return vm


MIGRATE_BYTES_PER_S = 8 << 20  # the migration stream's cap: it shares the management VLAN and the trunk


def migrate(vm: UserVm, dst: HostSsh, tpl: Template, *, owner: str, port: int = 49152,
            max_bandwidth: int = MIGRATE_BYTES_PER_S, timeout: float = 120) -> tuple[UserVm, dict]:
    """Live-migrate ``vm`` to ``dst`` with QEMU's own migration, as libvirt does: the destination
    started with ``-incoming`` on the same guest VLAN (same name, MAC, address), then QMP
    ``migrate`` on the source to the destination's management address, and the source, once
    ``completed``, quit and removed. The stream is capped at ``max_bandwidth`` bytes/s (QMP
    ``migrate-set-parameters``): uncapped, it fills the userspace switches on its path and the
    VM's own packets are dropped while it runs. The destination QEMU announces the VM (RARP) so
    the bridges on the path learn its new place. Returns the VM on ``dst`` and the source's last
    ``query-migrate`` (``total-time``, ``downtime`` in ms)."""
    new = deploy_user_vm(dst, tpl, vm.name, vm.vlan, vm.mac, vm.address, owner=owner,
                         incoming=f"tcp:{dst.ip}:{port}")
    try:
        vm.qmp("migrate-set-parameters", **{"max-bandwidth": max_bandwidth})
        deadline = time.monotonic() + 10
        while "error" in (got := vm.qmp("migrate", uri=f"tcp:{dst.ip}:{port}")):
            if time.monotonic() > deadline:  # the destination listens a moment after it started
                raise DeployFailed(f"migrate {vm.name}: {got}")
            time.sleep(0.1)
        deadline = time.monotonic() + timeout
        while (st := vm.qmp("query-migrate")["return"]).get("status") != "completed":
            if st.get("status") in ("failed", "cancelled") or time.monotonic() > deadline:
                raise DeployFailed(f"migrate {vm.name} to {dst.ip}: {st}")
            time.sleep(0.1)
        try:
            status = new.qmp("query-status")["return"]["status"]
        except DeployFailed:
            status = "exited"
        if status != "running":  # the source, paused, runs on: the VM stays where it was (as libvirt does)
            vm.qmp("cont")
            raise DeployFailed(f"{vm.name} does not run on {dst.ip} after the migration ({status}); it runs on at "
                               f"{vm.host.ip}. QEMU there: {new.log_tail()}")
    except Exception:
        new.destroy()  # the VM stays where it was
        raise
    vm.destroy()
    return new, st


def prepare_host(host: HostSsh, nic: str, mgmt_vlan: int, owner: str, rundir: str = "/run/iris-ovs") -> None:
    """The host's own Open vSwitch (the image's), the guests' bridge on its NIC: management VLAN
    native, guest VLANs tagged, the NIC's GRO off (:data:`GRO_OFF`): what the operator sets up
    before CloudStack's "add host".
    Idempotent. The database is then ``unix:<rundir>/db.sock`` (give it as ``HostSsh.ovs_db``)."""
    inst = ovs.OvsInstance(Path(rundir), None, owner)
    env = " ".join(f"{k}={v}" for k, v in inst._env().items())
    ids = {names.OWNER: owner}
    lines = ["set -e", f"mkdir -p {rundir}",
             f"if ! [ -e {rundir}/ovs-vswitchd.pid ] || ! kill -0 $(cat {rundir}/ovs-vswitchd.pid) 2>/dev/null; then"]
    for c in inst.start_cmds():
        lines.append(f"  {env} {c}" if c.argv[0] != "ovsdb-tool" else f"  [ -e {rundir}/conf.db ] || {c}")
    lines.append("fi")
    lines.append(f"python3 -c {shlex.quote(GRO_OFF)} {nic}")
    lines.append(str(ovs.txn(inst.db, *ovs.add_bridge(host.bridge, datapath_type="netdev", external_ids=ids),
                             *ovs.add_port(host.bridge, nic, tag=mgmt_vlan, vlan_mode="native-untagged",
                                           external_ids=ids))))
    host.run("\n".join(lines), timeout=60)


def unprepare_host(host: HostSsh, rundir: str = "/run/iris-ovs") -> None:
    """Stop the host's OVS started by :func:`prepare_host` (by its pidfiles) and remove its files."""
    host.run(f"for d in ovs-vswitchd ovsdb-server; do [ -e {rundir}/$d.pid ] && kill $(cat {rundir}/$d.pid) "
             f"2>/dev/null; done; sleep 0.2; rm -rf {rundir} {host.workdir}; true", check=False)


class Sshd:
    """An IaaS host's SSH server (the host's ``/usr/sbin/sshd``) in the host's namespace,
    listening on its management address, letting in the IaaS management host's key for root.
    Its files (host key, authorized keys, configuration, pidfile) are in ``rundir``; stopped by
    its PID."""

    def __init__(self, netns: str, ip: str, rundir: Path, authorized_key: str):
        self.netns, self.ip, self.rundir, self.key = netns, ip, Path(rundir), authorized_key
        self.pid: int | None = None

    def config(self) -> str:
        r = self.rundir
        return (f"ListenAddress {self.ip}\nHostKey {r}/host_ed25519\nAuthorizedKeysFile {r}/authorized_keys\n"
                f"PidFile {r}/sshd.pid\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\n")

    def start(self) -> Sshd:
        r = self.rundir
        r.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        if not (r / "host_ed25519").exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / "host_ed25519")], check=True)
        (r / "authorized_keys").write_text(self.key + "\n")
        (r / "sshd_config").write_text(self.config())
        self.pid = SubprocessRunner().spawn(cmd("/usr/sbin/sshd", "-D", "-e", "-f", r / "sshd_config",
                                                netns=self.netns), log=str(r / "sshd.log"))
        deadline = time.monotonic() + 10
        while not probe.tcp_connect(self.netns, self.ip, 22, timeout=0.5):
            if time.monotonic() > deadline:
                raise DeployFailed(f"sshd on {self.ip} did not start: {(r / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.pid:
            kill_pid(self.pid)
            self.pid = None


# how long a guest's command may take beyond its own duration: a guest in a kvm L1 here is TCG
# inside TCG, where starting iperf3 (its libraries linked at each start) took over 20 s once
GUEST_SLACK_S = 120


def guest_rtt_ms(src: UserVm, ip: str, *, count: int = 10, interval: float = 0.2) -> float:
    """The mean RTT (ms) of ``count`` pings from inside the guest ``src`` (busybox ``ping``) to
    ``ip``, after one ping that resolves its ARP. :class:`DeployFailed` if none was answered."""
    src.shell(f"ping -c 1 -W 5 {ip} >/dev/null", timeout=GUEST_SLACK_S)
    rc, out = src.shell(f"ping -q -c {count} -i {interval} -W 5 {ip}", timeout=count * interval + GUEST_SLACK_S)
    m = re.search(r"min/avg/max = [\d.]+/([\d.]+)/[\d.]+ ms", out)
    if rc != 0 or not m:
        raise DeployFailed(f"{src.name} -> {ip}: ping exited {rc}: {out[-300:]}")
    return float(m.group(1))


def guest_iperf3(client: UserVm, server: UserVm, *, seconds: float = 3, port: int = 5201) -> tuple[float, int]:
    """TCP goodput (Mbit/s, what the receiver got) from the guest ``client`` to the guest
    ``server``, and the sender's retransmitted segments: iperf3 inside both (the server one-off,
    in the background)."""
    rc, out = server.shell(f"iperf3 -s -1 -D -p {port}", timeout=GUEST_SLACK_S)
    if rc != 0:
        raise DeployFailed(f"{server.name}: iperf3 -s exited {rc}: {out[-300:]}")
    deadline = time.monotonic() + 10
    while True:
        rc, out = client.shell(f"iperf3 -c {server.ip} -p {port} -t {seconds:g} -J", timeout=seconds + GUEST_SLACK_S)
        try:
            res = json.loads(out[out.index("{"):out.rindex("}") + 1])
        except ValueError:
            res = {"error": out[-300:]}
        if "error" not in res:
            return res["end"]["sum_received"]["bits_per_second"] / 1e6, int(res["end"]["sum_sent"].get("retransmits", 0))
        if time.monotonic() > deadline or "refused" not in str(res["error"]):  # the server starting
            raise DeployFailed(f"{client.name} -> {server.ip}: iperf3: {res['error']}")
        time.sleep(0.5)
