"""Stand-ins for the IaaS's own doings in the lab (Iris never does these in production).

* :func:`add_host` / :func:`remove_host`: the IaaS adds a host on some VLAN to its own switch,
  as it does when a guest network appears (no change anywhere else).
* :func:`attach_user_vm`: inside an L1, the IaaS's software (CloudStack's KVM agent, say) puts a
  user VM on a guest VLAN. Nothing here can tag frames in the kernel, so the L1 runs its own OVS
  with a bridge (``cloudbr0``) on its trunk NIC, management VLAN native, guest VLANs tagged, just
  as the L0's port facing it.

All of it lives in the lab's namespaces and run directory, so ``iris lab down`` removes it.
"""

from __future__ import annotations

from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs
from iris_haas.linux.runner import SubprocessRunner

IAAS_BRIDGE = "cloudbr0"


def add_host(lab, tenant: str, name: str, vlan: int, address: str) -> str:
    """A host on ``vlan`` behind tenant's top-of-rack switch; returns its namespace."""
    r = SubprocessRunner()
    ns = lab.ns(f"{tenant}{name}")
    if nl.ensure_netns(ns):
        r.run(nl.netns_sysctl_cmds(ns))
    tor = lab.ns(f"{tenant}tor")
    nl.ensure_veth(name, tor, "eth0", ns)
    r.run(ovs.txn(lab.ovs(f"{tenant}tor").db, *ovs.add_port("tor", name, tag=vlan, vlan_mode="access")))
    nl.ensure_addr(ns, "eth0", address)
    r.run(nl.tx_offload_off_cmd(ns, "eth0"))
    return ns


def remove_host(lab, tenant: str, name: str) -> None:
    r = SubprocessRunner()
    r.run(ovs.txn(lab.ovs(f"{tenant}tor").db, *ovs.del_port(name)))
    nl.delete_netns(lab.ns(f"{tenant}{name}"))


def l1_ovs(lab, l1: str) -> ovs.OvsInstance:
    return ovs.OvsInstance(lab.dir / f"{l1}-ovs", lab.ns(l1), f"lab:{lab.name}")


def attach_user_vm(lab, l1: str, nic: str, vm: str, vlan: int, address: str, native_vlan: int = 101) -> str:
    """A user VM (a namespace) inside L1 ``l1`` on ``vlan``, through the L1's trunk NIC ``nic``."""
    r = SubprocessRunner()
    inst = l1_ovs(lab, l1)
    inst.start(r)
    vm_ns = lab.ns(vm)
    if nl.ensure_netns(vm_ns):
        r.run(nl.netns_sysctl_cmds(vm_ns))
    port = nl_name = f"vm-{vm}"[:15]
    nl.ensure_veth(nl_name, lab.ns(l1), "eth0", vm_ns)
    r.run(ovs.txn(inst.db,
                  *ovs.add_bridge(IAAS_BRIDGE, datapath_type=lab.topo.datapath_type),
                  *ovs.add_port(IAAS_BRIDGE, nic, tag=native_vlan, vlan_mode="native-untagged"),
                  *ovs.add_port(IAAS_BRIDGE, port, tag=vlan, vlan_mode="access")))
    nl.ensure_addr(vm_ns, "eth0", address)
    r.run(nl.tx_offload_off_cmd(vm_ns, "eth0"))
    return vm_ns


def detach_all(lab, l1: str, vms: list[str]) -> None:
    """Stop the L1's bridge and remove its user VMs."""
    l1_ovs(lab, l1).stop(SubprocessRunner())
    for vm in vms:
        nl.delete_netns(lab.ns(vm))
