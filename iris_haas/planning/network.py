"""The network decision: per tenant, per segment, which bridges, tunnels and limits each host holds.

* On each HaaS gateway: the segment's bridge, one GRE trunk to each of the tenant's IaaS gateways
  (every VLAN 1-4094 inside GRE, the segment's key), and a mesh tunnel to each L0 holding a part
  of the segment; per tenant, its limit on the inter-DC tunnel towards each IaaS site.
* On each such L0: the segment's bridge and mesh tunnels to the gateways and to every other such
  L0, so the mesh grows and shrinks with the L0s that hold the segment's L1s and volume exports.
  Mesh tunnels are OVS ``protected`` ports: a frame never goes from one mesh tunnel to another
  (split horizon), so the full mesh needs no spanning tree.
* A site reached through an NSI provider (``IaasSite.nsi``) has no best-effort trunk: while the
  provider has the circuit up, each gateway holds the circuit's end (a ``circuit`` op: its
  address on the circuit's VLAN, out of the gateway's uplink) and the trunk's GRE runs between
  the circuit's two ends, so the tenant's frames cross the WAN inside the circuit only. The
  circuit's capacity is the provider's to enforce; Iris adds no limit of its own on it.
* Model (b): a pod is a segment of its own (own bridge, own key), trunked like the tenant's.
  Model (c): a routed segment has no trunk; a router on the first gateway joins it to the tenant's
  own L2, which must then be there.

Two tenants' bridges share no port and their tunnels differ by key, so the same VLAN IDs and
subnets on both never meet.
"""

from __future__ import annotations

from iris_haas.contract import names
from iris_haas.contract.ops import BridgeOp, CircuitOp, Op, PortOp, TunnelLimitOp, TunnelOp, circuit_ends
from iris_haas.planning.model import L0, IaasSite, Segment, Tenant


def segments(t: Tenant) -> list[Segment]:
    """The segments the tenant's parts sit on; a tenant with nothing yet has its own L2 extension."""
    segs = {x.segment for x in t.l1s} | {v.segment for v in t.volumes} | {r.segment for r in t.routers}
    if t.routers or not segs:
        segs.add(t.segment)
    return sorted(segs, key=lambda s: s.name)


def mesh_members(t: Tenant, seg: Segment) -> list[L0]:
    """The L0s that hold the segment's L1s and serve its exported volumes."""
    l0s = {x.l0 for x in t.l1s if x.segment == seg}
    l0s |= {v.l0 for v in t.volumes if v.segment == seg and v.l0 is not None}
    return sorted(l0s, key=lambda n: n.id)


def trunk_ends(site: IaasSite, first: bool) -> tuple[str, str | None] | None:
    """(remote, local) addresses of a gateway's trunk to the site: the site's gateway's underlay
    address, or the circuit's two ends (on the first HaaS gateway: a circuit ends on one port);
    None where an NSI site has no circuit up."""
    if not site.nsi:
        return site.gateway, None
    if site.circuit_vlan is None or not first:
        return None
    haas, iaas = circuit_ends(site.circuit_vlan)
    return iaas.split("/")[0], haas.split("/")[0]


def plan(t: Tenant) -> list[tuple[str, Op]]:
    out: list[tuple[str, Op]] = []
    owner = t.owner
    for gw in t.gateways:
        for site in t.sites:
            if site.nsi and site.circuit_vlan is not None and gw is t.gateways[0]:
                out.append((gw.host, CircuitOp(name=names.circuit_bridge(site.circuit_vlan), uplink=gw.uplink,
                                               vlan=site.circuit_vlan, address=circuit_ends(site.circuit_vlan)[0],
                                               owner=owner, tenant=t.name)))
            elif site.rate_mbit and not site.nsi:
                out.append((gw.host, TunnelLimitOp(uplink=gw.uplink, remote_ip=site.gateway, rate_mbit=site.rate_mbit,
                                                   owner=owner, tenant=t.name)))
    for seg in segments(t):
        def tunnel(peer: str, remote: str, mesh: bool = True, seg: Segment = seg, local: str | None = None
                   ) -> TunnelOp:
            return TunnelOp(bridge=seg.bridge, name=names.segment_tunnel(seg.name, peer), remote_ip=remote,
                            local_ip=local, key=seg.key, mesh=mesh, owner=owner, tenant=t.name)

        # The tunnel towards a member is the same op on every host that has one (its name says
        # the peer, not the host): made once, so a mesh of k members costs k ops, not k * k.
        members = mesh_members(t, seg)
        bridge_op = BridgeOp(name=seg.bridge, owner=owner, tenant=t.name)
        to_l0 = [(n, tunnel(names.l0_peer(n.id), n.underlay)) for n in members if n.underlay]
        to_gw = [tunnel(names.gateway_peer(gw.id), gw.fabric) for gw in t.gateways]
        for gw in t.gateways:
            out.append((gw.host, bridge_op))
            for site in ([] if seg.routed else t.sites):
                ends = trunk_ends(site, gw is t.gateways[0])
                if ends is not None:
                    out.append((gw.host, tunnel(names.trunk_peer(site.id), ends[0], mesh=False, local=ends[1])))
            out += [(gw.host, op) for _, op in to_l0]
        for n in members:
            out.append((n.host, bridge_op))
            out += [(n.host, op) for op in to_gw]
            out += [(n.host, op) for m, op in to_l0 if m is not n]  # members are distinct objects
    for r in t.routers:
        legs = ((r.segment.bridge, r.legs[0], r.address), (t.segment.bridge, r.legs[1], r.iaas_address))
        for gw in t.gateways[:1]:
            for bridge, leg, address in legs:
                l0if, l1if = names.l1_port(leg)
                out.append((gw.host, PortOp(bridge=bridge, name=l0if, l1_netns=r.netns, l1_ifname=l1if, vlan=r.vlan,
                                            address=address, router=True, owner=r.owner, tenant=t.name)))
    return out
