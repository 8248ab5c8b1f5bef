"""Per-tenant overlays in the lab: from a list of L1 ports to each host's desired op list.

This is the lab's stand-in for the NRM's network decision (the real NRM emits the same ops).
For each tenant:

* on the HaaS gateway: the tenant's bridge, the inter-DC GRE trunk to the tenant's IaaS gateway
  (every VLAN, the tenant's key) and one mesh tunnel to every L0 that holds one of the tenant's
  ports, plus the tenant's limit on the inter-DC tunnel if one is set;
* on each L0 holding the tenant's ports: the tenant's bridge, a mesh tunnel to the gateway and to
  each other such L0 (same key), and the ports (L1 NICs) with their egress limits.

The mesh grows and shrinks with the set of L0s that hold ports. Mesh tunnels are OVS
``protected`` ports, so a frame never goes from one mesh tunnel to another: the full mesh needs
no spanning tree. Two tenants' bridges share no port and their tunnels differ by key, so the same
VLAN IDs and subnets on both never meet.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from iris_haas.contract import names
from iris_haas.contract.ops import BridgeOp, DesiredState, PortOp, ShapeOp, TunnelLimitOp, TunnelOp
from iris_haas.lab.topology import Topology, l0_index


@dataclass(frozen=True)
class L1Port:
    """One NIC of an L1 on an L0. ``l1`` names the L1 (its namespace is ``iris-<lab>-<l1>``)."""

    tenant: str
    node: str  # l0-<i>
    name: str  # unique in the lab; the L0-side interface is irisp-<name>
    vlan: int | None = None
    trunk: bool = False
    address: str | None = None
    rate_mbit: float | None = None
    l1: str | None = None

    def netns(self, topo: Topology) -> str:
        return topo.ns(self.l1 or self.name)

    def ifnames(self) -> tuple[str, str]:
        return names.l1_port(self.name)


def desired(topo: Topology, ports: list[L1Port], tenant_limits: dict[str, float] | None = None,
            version: int = 0) -> dict[str, DesiredState]:
    limits = tenant_limits or {}
    ops: dict[str, list] = {"hgw": [], **{n: [] for n in topo.l0_nodes()}}
    gw_fab = topo.fab_ip("hgw")
    for x in topo.iaas:
        t = x.tenant
        owner = f"tenant:{t}"
        br = names.tenant_bridge(t)
        mine = [p for p in ports if p.tenant == t]
        l0s = sorted({p.node for p in mine}, key=l0_index)
        g = ops["hgw"]
        g.append(BridgeOp(name=br, owner=owner, tenant=t))
        g.append(TunnelOp(bridge=br, name=names.tenant_tunnel(t, "x"), remote_ip=x.gateway_ip, key=x.key,
                          mesh=False, owner=owner, tenant=t))
        for n in l0s:
            g.append(TunnelOp(bridge=br, name=names.tenant_tunnel(t, str(l0_index(n))),
                              remote_ip=topo.fab_ip(n), key=x.key, mesh=True, owner=owner, tenant=t))
        if t in limits:
            g.append(TunnelLimitOp(uplink="up", remote_ip=x.gateway_ip, rate_mbit=limits[t], owner=owner, tenant=t))
        for n in l0s:
            o = ops[n]
            o.append(BridgeOp(name=br, owner=owner, tenant=t))
            o.append(TunnelOp(bridge=br, name=names.tenant_tunnel(t, "gw"), remote_ip=gw_fab, key=x.key,
                              mesh=True, owner=owner, tenant=t))
            for m in l0s:
                if m != n:
                    o.append(TunnelOp(bridge=br, name=names.tenant_tunnel(t, str(l0_index(m))),
                                      remote_ip=topo.fab_ip(m), key=x.key, mesh=True, owner=owner, tenant=t))
            for p in mine:
                if p.node != n:
                    continue
                l0if, l1if = p.ifnames()
                o.append(PortOp(bridge=br, name=l0if, l1_netns=p.netns(topo), l1_ifname=l1if, vlan=p.vlan,
                                trunk=p.trunk, address=p.address, owner=owner, tenant=t))
                if p.rate_mbit:
                    o.append(ShapeOp(port=l0if, rate_mbit=p.rate_mbit, owner=owner, tenant=t))
    return {n: DesiredState(version=version, ops=o) for n, o in ops.items()}


def push(lab, states: dict[str, DesiredState], only: set[str] | None = None) -> dict[str, dict]:
    """PUT each host's desired state to its agent, all agents at once."""
    targets = {n: s for n, s in states.items() if only is None or n in only}

    def one(item):
        n, s = item
        with lab.client(n) as c:
            return n, c.put(s)

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as ex:
        return dict(ex.map(one, targets.items()))
