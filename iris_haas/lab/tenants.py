"""The lab's tenants as planning inputs, for lab tests that want a data plane without a coordinator.

A test names the L1s and volumes it wants (:class:`L1`, :class:`Volume`: which tenant, which L0,
which address); :func:`desired` turns them into the planning layer's inputs from the topology
(the tenants' keys and IaaS gateways, the L0s' fabric addresses, the HaaS gateway) and lets
:func:`iris_haas.planning.desired` decide every host's ops: the same functions the coordinator's
managers call, so what these tests prove about packets holds for what the coordinator decides.
Nothing here derives an op.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.ops import DesiredState
from iris_haas.contract.types import L1Kind
from iris_haas.lab.topology import Topology, l0_index

GATEWAY = "hgw"
UPLINK = "up"  # the HaaS gateway's NIC towards the internet


@dataclass(frozen=True)
class L1:
    """An L1 of ``tenant`` on L0 ``node``. Its namespace is the lab's ``iris-<lab>-<name>``. Without
    ``vlan`` its NIC is an IaaS host's (the tenant's management VLAN native, every VLAN tagged, as
    the CRM wires it); with ``vlan`` an access port on that VLAN unless ``trunk``."""

    tenant: str
    node: str
    name: str
    kind: L1Kind = L1Kind.NETNS
    address: str | None = None
    vlan: int | None = None
    trunk: bool | None = None
    rate_mbit: float = 0
    cpus: int = 1
    memory_mb: int = 128
    disk_gb: int = 0
    ssh_key: str = ""
    mac: str | None = None
    image: str | None = None  # an OS image's path on the L0 (under the agents' image root)

    def port(self) -> str:
        return names.l1_port(self.name)[0]

    def nic(self) -> str:
        """The L1's NIC as its own system names it (a kvm guest calls it eth0)."""
        return "eth0" if self.kind == L1Kind.KVM else names.l1_port(self.name)[1]


@dataclass(frozen=True)
class Volume:
    """A volume of ``tenant`` in ``pool`` on ``node``; with ``address``, exported by a server in the
    lab namespace ``iris-<lab>-<export>`` on the tenant's management VLAN."""

    tenant: str
    node: str
    name: str
    pool: str
    size_mb: int = 16
    keep: bool = False
    export: str | None = None
    address: str | None = None


def gateway(topo: Topology) -> planning.HaasGateway:
    return planning.HaasGateway(id=1, host=GATEWAY, uplink=UPLINK, fabric=topo.fab_ip(GATEWAY))


def l0(topo: Topology, node: str) -> planning.L0:
    return planning.L0(id=l0_index(node), host=node, underlay=topo.fab_ip(node))


def segment(topo: Topology, tenant: str) -> planning.Segment:
    """The tenant's own segment, numbered by its place in the topology (as a database id would)."""
    index = next(i for i, x in enumerate(topo.iaas) if x.tenant == tenant)
    return planning.Segment.of(names.tenant_segment(index + 1), topo.tenant(tenant).key)


def tenants(topo: Topology, l1s: Iterable[L1] = (), volumes: Iterable[Volume] = (),
            limits: dict[str, float] | None = None) -> list[planning.Tenant]:
    """Every tenant of the topology, with its L1s, volumes and limit on the inter-DC tunnel."""
    l1s, volumes, limits = list(l1s), list(volumes), dict(limits or {})
    out = []
    for i, x in enumerate(topo.iaas):
        seg, owner = segment(topo, x.tenant), f"tenant:{x.tenant}"
        out.append(planning.Tenant(
            x.tenant, seg,
            sites=[planning.IaasSite(id=i + 1, gateway=x.gateway_ip, rate_mbit=limits.get(x.tenant, 0))],
            gateways=[gateway(topo)],
            l1s=[planning.L1(name=n.name, l0=l0(topo, n.node), segment=seg, owner=owner, tenant=x.tenant,
                             kind=n.kind, netns=topo.ns(n.name), vlan=n.vlan or x.mgmt_vlan,
                             trunk=(n.vlan is None) if n.trunk is None else n.trunk, address=n.address, mac=n.mac,
                             cpus=n.cpus, memory_mb=n.memory_mb, disk_gb=n.disk_gb, ssh_key=n.ssh_key,
                             image=n.image, rate_mbit=n.rate_mbit)
                 for n in l1s if n.tenant == x.tenant],
            volumes=[planning.Volume(name=v.name, host=v.node, pool=v.pool, segment=seg, owner=owner,
                                     tenant=x.tenant, l0=l0(topo, v.node), size_mb=v.size_mb, keep=v.keep,
                                     nic=v.export or v.name, netns=topo.ns(v.export) if v.export else None,
                                     address=v.address, vlan=x.mgmt_vlan)
                     for v in volumes if v.tenant == x.tenant],
        ))
    return out


def desired(topo: Topology, l1s: Iterable[L1] = (), volumes: Iterable[Volume] = (),
            limits: dict[str, float] | None = None) -> dict[str, DesiredState]:
    """Every agent host's desired state (the HaaS gateway and the L0s), planned."""
    per_host = planning.desired(tenants(topo, l1s, volumes, limits), [GATEWAY, *topo.l0_nodes()])
    return {h: DesiredState(ops=ops) for h, ops in per_host.items()}


def push(lab, states: dict[str, DesiredState], only: set[str] | None = None) -> dict[str, dict]:
    """PUT each host's desired state to its agent, all agents at once."""
    targets = {n: s for n, s in states.items() if only is None or n in only}

    def one(item):
        n, s = item
        with lab.client(n) as c:
            # the lab is one more controller: its state is newer than whatever the host holds
            return n, c.put(s.model_copy(update={"version": c.desired()["version"] + 1}))

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as ex:
        return dict(ex.map(one, targets.items()))


def realize(lab, l1s: Iterable[L1] = (), volumes: Iterable[Volume] = (),
            limits: dict[str, float] | None = None) -> dict[str, dict]:
    """Plan these L1s and volumes and send every agent its state; returns each agent's answer."""
    return push(lab, desired(lab.topo, l1s, volumes, limits))
