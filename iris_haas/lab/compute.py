"""L1 nodes in the lab: from a list of :class:`L1Node` to each host's desired op list.

The lab's stand-in for the CRM's decision (the real CRM emits the same :class:`L1Op`): every
L1 gets one NIC on its tenant's overlay, with the tenant's management VLAN native (untagged) and
every other VLAN tagged, and its management address on that NIC. The overlay around it (tenant
bridges, mesh and inter-DC tunnels) is :func:`iris_haas.lab.overlay.desired`'s, unchanged: an
L1's NIC is wired exactly as a port is, the L1 op only adds the node behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from iris_haas.contract import names
from iris_haas.contract.ops import DesiredState, L1Op, PortOp
from iris_haas.lab import overlay
from iris_haas.lab.topology import Topology


@dataclass(frozen=True)
class L1Node:
    tenant: str
    node: str  # the L0, l0-<i>
    name: str  # unique in the lab; the L1's namespace is iris-<lab>-<name>
    kind: str = "netns"
    address: str | None = None  # management address, CIDR, on the tenant's management VLAN
    cpus: int = 1
    memory_mb: int = 128
    ssh_key: str = ""
    mac: str | None = None

    def port(self) -> str:
        return names.l1_port(self.name)[0]

    def nic(self) -> str:
        """The L1's NIC as its own system names it (a kvm guest calls it eth0)."""
        return "eth0" if self.kind == "kvm" else names.l1_port(self.name)[1]


def l1_op(topo: Topology, n: L1Node) -> L1Op:
    x = topo.tenant(n.tenant)
    return L1Op(kind=n.kind, name=n.name, bridge=names.tenant_bridge(n.tenant), port=n.port(),
                l1_ifname=names.l1_port(n.name)[1], netns=topo.ns(n.name), vlan=x.mgmt_vlan, trunk=True,
                mac=n.mac, address=n.address, cpus=n.cpus, memory_mb=n.memory_mb, ssh_key=n.ssh_key,
                owner=f"tenant:{n.tenant}", tenant=n.tenant)


def desired(topo: Topology, nodes: Iterable[L1Node], ports: Iterable[overlay.L1Port] = (),
            version: int = 0) -> dict[str, DesiredState]:
    nodes = list(nodes)
    as_ports = [overlay.L1Port(n.tenant, n.node, n.name, vlan=topo.tenant(n.tenant).mgmt_vlan, trunk=True)
                for n in nodes]
    states = overlay.desired(topo, [*ports, *as_ports], version=version)
    by_port = {n.port(): l1_op(topo, n) for n in nodes}
    out = {}
    for host, st in states.items():
        ops = [by_port.get(o.name, o) if isinstance(o, PortOp) else o for o in st.ops]
        out[host] = DesiredState(version=st.version, ops=ops)
    return out


def push(lab, nodes: Iterable[L1Node], ports: Iterable[overlay.L1Port] = (), version: int = 0) -> dict:
    return overlay.push(lab, desired(lab.topo, nodes, ports, version))
