"""The demo's user VMs for the paper's tables 4 and 5: real QEMU guests, deployed over SSH.

Tenant a's IaaS management host logs into two hosts of its IaaS DC (namespaces with sshd) and
into L1s it reserved booted from the OS image with the IaaS stack (Open vSwitch, QEMU): two lxc
L1s and two kvm L1s (none in the quick mode; QEMU's TCG here, no KVM on this machine). On each
it prepares the host's own bridge and deploys one QEMU user VM on the guest VLAN
(:mod:`iris_haas.lab.uservm`: this machine's kernel, a busybox initramfs with iperf3). The pairs
are measured from inside the guests, through their serial shell: busybox ``ping`` for the RTT,
``iperf3`` guest to guest for the goodput. A user VM in a kvm L1 is TCG inside TCG: it boots in
minutes, not seconds, and its figures say what that costs, they are not hidden.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from iris_haas.contract import names
from iris_haas.hostd import images
from iris_haas.lab import probe, realizer, uservm

OWNER = "iaas:a"
L1_WORKDIR, L1_OVS_DB = "/var/lib/iris-uvm", "unix:/run/iris-ovs/db.sock"
# (label, client VM, server VM): the client pings the server and sends it TCP
PAIRS = [("IaaS-IaaS", "aqi1", "aqi2"), ("IaaS-HaaS(L)", "aqi1", "aql1"), ("HaaS(L)-HaaS(L)", "aql1", "aql2"),
         ("IaaS-HaaS(K)", "aqi1", "aqk1"), ("HaaS(K)-HaaS(K)", "aqk1", "aqk2")]


def build_images(progress=lambda _: None) -> dict[str, Path]:
    """The lxc and kvm OS images with the IaaS stack in the lab's image root (built once, kept)."""
    spec = images.inputs(packages=[*images.PACKAGES, *images.IAAS_STACK], mirror=images.apt_mirror())
    root = Path(realizer.LAB_IMAGE_ROOT)
    return {"lxc": images.build(root, spec, progress)[0], "kvm": images.build(root, {**spec, "kind": "kvm"}, progress)[0]}


def compute_items(pub: str, *, kvm: int) -> list[dict]:
    """The reservation's compute items: two lxc L1s and ``kvm`` kvm L1s from the images, the
    management host's key in them."""
    items = [{"kind": "compute", "count": 2, "l1_kind": "lxc", "cpus": 1, "memory_mb": 512, "disk_gb": 1,
              "addresses": ["10.0.101.53/24", "10.0.101.54/24"], "ssh_key": pub, "image": "iaas-lxc"}]
    if kvm:
        items.append({"kind": "compute", "count": kvm, "l1_kind": "kvm", "cpus": 1, "memory_mb": 768, "disk_gb": 2,
                      "addresses": [f"10.0.101.{55 + i}/24" for i in range(kvm)], "ssh_key": pub,
                      "image": "iaas-kvm"})
    return items


@dataclass
class Fleet:
    """The user VMs of the tables and the hosts they run on; torn down by :meth:`close`."""

    vms: dict[str, uservm.UserVm] = field(default_factory=dict)
    hosts: dict[str, uservm.HostSsh] = field(default_factory=dict)
    prepared: list[uservm.HostSsh] = field(default_factory=list)
    deployed_at: dict[str, float] = field(default_factory=dict)
    boot_s: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def deploy(self, host_key: str, name: str, tpl: uservm.Template, vlan: int, i: int) -> uservm.UserVm:
        t0 = time.monotonic()
        vm = uservm.deploy_user_vm(self.hosts[host_key], tpl, name, vlan, f"52:54:00:1a:00:{0x40 + i:02x}",
                                   f"10.1.0.{40 + i}/24", owner=OWNER)
        self.vms[name], self.deployed_at[name] = vm, t0
        return vm

    def wait(self, name: str, peer_ns: str, timeout: float) -> bool:
        """Until the guest answers a ping from ``peer_ns`` on its VLAN (its boot time, from the
        deploy call, in :attr:`boot_s`: a ping costs its host nothing, unlike an SSH login into a
        kvm L1 under TCG), then its serial shell."""
        vm = self.vms[name]
        try:
            probe.first_reply(peer_ns, vm.ip, timeout=timeout)
            self.boot_s[name] = round(time.monotonic() - self.deployed_at[name], 1)
        except TimeoutError:
            self.errors[name] = f"{name} did not answer a ping {timeout:.0f} s after its deploy"
            return False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if vm.shell("true", timeout=5)[0] == 0:
                    return True
            except uservm.DeployFailed:
                time.sleep(1)
        del self.boot_s[name]
        self.errors[name] = f"{name} answers a ping but not on its serial shell"
        return False

    def destroy(self) -> list[str]:
        """Every VM destroyed, every prepared L1's OVS stopped; what was left on the hosts."""
        left = []
        for vm in self.vms.values():
            vm.destroy()
            left += [f"{vm.name}: {x}" for x in vm.leftovers()]
        self.vms.clear()
        for h in self.prepared:
            uservm.unprepare_host(h)
        self.prepared.clear()
        return left

    def close(self) -> None:
        try:
            for vm in self.vms.values():
                vm.destroy()
        finally:
            self.stack.close()


def l1_host(mgmt_ns: str, key: Path, resource: dict, address: str) -> tuple[uservm.HostSsh, str]:
    """An L1 of the reservation as the management host reaches it; and its NIC's name in it."""
    host = uservm.HostSsh(mgmt_ns, key, address.split("/")[0], workdir=L1_WORKDIR, ovs_db=L1_OVS_DB)
    nic = "eth0" if resource["l1_kind"] == "kvm" else names.l1_port(resource["l1"])[1]
    return host, nic


def measure(fleet: Fleet, *, count: int, seconds: float, rtt_only: set[str] = frozenset()) -> dict:
    """RTT and goodput of each pair whose two VMs answer; the rest in ``not_measured``."""
    out: dict = {"rtt_ms": {}, "goodput_mbps": {}, "retransmits": {}, "not_measured": {}}
    for label, a, b in PAIRS:
        if a not in fleet.vms or b not in fleet.vms or a not in fleet.boot_s or b not in fleet.boot_s:
            why = "; ".join(fleet.errors.get(x, f"{x} not deployed") for x in (a, b) if x not in fleet.boot_s)
            out["not_measured"][label] = why
            continue
        try:
            out["rtt_ms"][label] = round(uservm.guest_rtt_ms(fleet.vms[a], fleet.vms[b].ip, count=count), 3)
            if label not in rtt_only:
                mbps, retransmits = uservm.guest_iperf3(fleet.vms[a], fleet.vms[b], seconds=seconds)
                out["goodput_mbps"][label], out["retransmits"][label] = round(mbps, 3), retransmits
        except uservm.DeployFailed as e:
            out["not_measured"][label] = str(e)[-300:]
    return out
