"""The IaaS side of the lab: a stand-in for an IaaS host's software, its user VMs, migration.

What CloudStack's KVM agent does to a host, reduced to what the network sees:

* :class:`IaasHost`: an OVS bridge (``iris-cloudbr0``, the stand-in for ``cloudbr0``) with the
  host's NIC as uplink. The NIC carries the tenant's management VLAN untagged and every other VLAN
  tagged, so the uplink port is ``tag=MGMT, vlan_mode=native-untagged``: the same VLAN view the
  L0's port gives an L1 (this kernel has no 8021q module: a namespace cannot tag frames itself, OVS
  tags).
* :class:`UserVM`: an L2 user VM, a namespace with one NIC (``eth0``, fixed MAC and IP) whose
  other end is an access port of the host's bridge on a guest VLAN.
* :func:`migrate`: move a user VM from one host to another, keeping its namespace (its "memory"),
  MAC and IP, as a live migration does (paper section 5.2): the new NIC is prepared on the
  destination first, then the switch-over removes the old NIC, brings the new one up under the
  same name, MAC and address, and announces it with a gratuitous ARP so every switch on the path
  (both DCs' bridges and the tunnels between them) learns the new location at once.

The same stand-in runs on an IaaS host in the IaaS DC (:func:`add_iaas_host`, a namespace on a
trunk port of the tenant's top-of-rack switch) and inside an HaaS L1 (:func:`in_l1`, on the L1's
NIC in the L1's network namespace: for an lxc L1 that is the container's own namespace, so the
network view is the container's). Provisioning never touches it: it is what the IaaS would run.

Everything carries the ``iris`` prefix: namespaces ``iris-<lab>-...``, the bridge, the host-side
VM ports ``irisv-<vm>``. A user VM's own NIC is ``eth0``, like the lab's other IaaS hosts.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from iris_haas.contract import names
from iris_haas.linux import garp, ovs
from iris_haas.linux import netlink as nl
from iris_haas.linux.proc import kill_pid
from iris_haas.linux.runner import Runner, SubprocessRunner, cmd

BRIDGE = "iris-cloudbr0"


def vm_port(vm: str) -> str:
    return names.ifname("v", vm)


@dataclass
class UserVM:
    name: str
    netns: str
    vlan: int
    address: str  # CIDR
    mac: str

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass
class IaasHost:
    """The IaaS host software stand-in on one host (an IaaS-side host or an HaaS L1)."""

    name: str
    netns: str  # where the host's NIC is
    nic: str
    mgmt_vlan: int
    rundir: Path
    owner: str = ""
    runner: Runner = field(default_factory=SubprocessRunner)
    vms: dict[str, UserVM] = field(default_factory=dict)

    @property
    def ovs(self) -> ovs.OvsInstance:
        return ovs.OvsInstance(self.rundir, self.netns, self.owner)

    def start(self) -> IaasHost:
        self.ovs.start(self.runner)
        ids = {names.OWNER: self.owner}
        self.runner.run(ovs.txn(self.ovs.db, *ovs.add_bridge(BRIDGE, datapath_type="netdev", external_ids=ids),
                                *ovs.add_port(BRIDGE, self.nic, tag=self.mgmt_vlan, vlan_mode="native-untagged",
                                              external_ids=ids)))
        return self

    def add_vm(self, vm: UserVM) -> UserVM:
        """Create the VM's namespace (if new) and plug its NIC into this host on its VLAN."""
        if nl.ensure_netns(vm.netns):
            self.runner.run(nl.netns_sysctl_cmds(vm.netns))
        self._plug(vm, "eth0")
        nl.ensure_addr(vm.netns, "eth0", vm.address)
        self.vms[vm.name] = vm
        return vm

    def _plug(self, vm: UserVM, ifname: str, up: bool = True) -> None:
        port = vm_port(vm.name)
        nl.ensure_veth(port, self.netns, ifname, vm.netns, mtu=1500, up=False)
        nl.set_link(vm.netns, ifname, address=vm.mac)
        nl.set_link(self.netns, port, up=True)
        if up:
            nl.set_link(vm.netns, ifname, up=True)
        self.runner.run(nl.tx_offload_off_cmd(vm.netns, ifname))
        self.runner.run(ovs.txn(self.ovs.db, *ovs.add_port(BRIDGE, port, tag=vm.vlan, vlan_mode="access",
                                                           external_ids={names.OWNER: self.owner})))

    def unplug(self, vm: UserVM) -> None:
        port = vm_port(vm.name)
        nl.delete_link(self.netns, port)
        self.runner.run(ovs.txn(self.ovs.db, *ovs.del_port(port)))
        self.vms.pop(vm.name, None)

    def remove_vm(self, vm: UserVM) -> None:
        self.unplug(vm)
        nl.delete_netns(vm.netns)

    def stop(self) -> None:
        for vm in list(self.vms.values()):
            try:
                self.remove_vm(vm)
            except Exception:  # noqa: BLE001 - tolerant teardown; the namespace goes anyway
                nl.delete_netns(vm.netns)
        self.ovs.stop(self.runner)


def migrate(vm: UserVM, src: IaasHost, dst: IaasHost) -> float:
    """Move ``vm`` from ``src`` to ``dst``; returns the switch-over time in seconds (the time
    the VM had no NIC)."""
    # prepare: the destination NIC exists, down, with the VM's MAC, already on the dst bridge
    dst._plug(vm, "mig0", up=False)
    t0 = time.monotonic()
    nl.delete_link(src.netns, vm_port(vm.name))  # the VM's old eth0 dies with its peer
    with nl.ipr(vm.netns) as h:
        idx = nl.link_index(h, "mig0")
        h.link("set", index=idx, ifname="eth0")
        h.link("set", index=idx, state="up")
    nl.ensure_addr(vm.netns, "eth0", vm.address)
    garp.announce(vm.netns, "eth0", vm.ip)
    dt = time.monotonic() - t0
    src.runner.run(ovs.txn(src.ovs.db, *ovs.del_port(vm_port(vm.name))))
    src.vms.pop(vm.name, None)
    dst.vms[vm.name] = vm
    return dt


def add_iaas_host(lab, tenant: str, name: str, mgmt_address: str) -> IaasHost:
    """A KVM host of the tenant's IaaS DC: a namespace on a trunk port of the tenant's
    top-of-rack switch (management VLAN native), running the stand-in. Lab setup of the IaaS
    side, never done by provisioning."""
    x = lab.topo.tenant(tenant)
    r = SubprocessRunner()
    ns = lab.ns(f"{tenant}{name}")
    tor = f"{tenant}tor"
    if nl.ensure_netns(ns):
        r.run(nl.netns_sysctl_cmds(ns))
    nl.ensure_veth(name, lab.ns(tor), "eth0", ns)
    r.run(ovs.txn(lab.ovs(tor).db, *ovs.add_port("tor", name, tag=x.mgmt_vlan, vlan_mode="native-untagged",
                                                 external_ids={names.OWNER: f"lab:{lab.name}"})))
    nl.ensure_addr(ns, "eth0", mgmt_address)
    r.run(nl.tx_offload_off_cmd(ns, "eth0"))
    return IaasHost(name=f"{tenant}{name}", netns=ns, nic="eth0", mgmt_vlan=x.mgmt_vlan,
                    rundir=lab.dir / f"{tenant}{name}-ovs", owner=f"lab:{lab.name}", runner=r).start()


def remove_iaas_host(lab, tenant: str, host: IaasHost) -> None:
    r = SubprocessRunner()
    host.stop()
    port = host.name[len(tenant):]
    r.run(ovs.txn(lab.ovs(f"{tenant}tor").db, *ovs.del_port(port)))
    nl.delete_netns(host.netns)


def in_l1(lab, tenant: str, l1_name: str, nic: str) -> IaasHost:
    """The stand-in inside an HaaS L1 (netns or lxc kind), on the L1's NIC."""
    x = lab.topo.tenant(tenant)
    return IaasHost(name=l1_name, netns=lab.ns(l1_name), nic=nic, mgmt_vlan=x.mgmt_vlan,
                    rundir=lab.dir / f"{l1_name}-ovs", owner=f"lab:{lab.name}").start()


@contextmanager
def dhcp_server(lab, tenant: str, first: int, last: int, tag: str = "udhcpd"):
    """A DHCP server of the IaaS's (busybox udhcpd) on the tenant's management server, leasing
    10.0.101.<first>..<last>; stopped by its PID and its files removed on the way out."""
    files = {k: lab.dir / f"{tag}.{k}" for k in ("conf", "leases", "pid")}
    files["conf"].write_text(f"start 10.0.101.{first}\nend 10.0.101.{last}\ninterface eth0\n"
                             f"lease_file {files['leases']}\npidfile {files['pid']}\n"
                             "option subnet 255.255.255.0\noption lease 600\n")
    files["leases"].touch()
    srv = subprocess.Popen(cmd("busybox", "udhcpd", "-f", str(files["conf"]), netns=lab.ns(f"{tenant}mgmt")).full_argv(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield srv
    finally:
        kill_pid(srv.pid)
        srv.wait()
        for f in files.values():
            f.unlink(missing_ok=True)
