"""NRM: bandwidth on the inter-DC link between the tenant's IaaS site and the HaaS site."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iris_haas.contract import names
from iris_haas.contract.errors import InvalidInput, ReserveFailed
from iris_haas.contract.ops import BridgeOp, PortOp, TunnelLimitOp, TunnelOp
from iris_haas.control.schemas import router_interface
from iris_haas.managers.base import ActiveView, Context, Offer, Query, ResourceManager, segment_of, tenant_segment
from iris_haas.store import calendar
from iris_haas.store.models import Link, Site, Tenant


def tenant_site(session: Session, tenant: Tenant, name: str | None) -> Site:
    """The tenant's IaaS site by name, or its only one."""
    sites = list(session.scalars(select(Site).where(Site.tenant_id == tenant.id, Site.kind == "iaas")))
    if name is not None:
        sites = [s for s in sites if s.name == name]
        if not sites:
            raise InvalidInput(f"tenant {tenant.name} has no IaaS site named {name}", field="tenant_site")
    if len(sites) != 1:
        raise InvalidInput(
            f"tenant {tenant.name} has {len(sites)} IaaS sites; name one in tenant_site", field="tenant_site"
        )
    return sites[0]


def links_between(session: Session, a: int, b: int) -> list[Link]:
    return list(
        session.scalars(
            select(Link).where(
                or_((Link.site_a_id == a) & (Link.site_b_id == b), (Link.site_a_id == b) & (Link.site_b_id == a))
            ).order_by(Link.id)
        )
    )


class NetworkManager(ResourceManager):
    name, item_kind, resource_kind = "nrm", "network", "link"

    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        site = tenant_site(ctx.session, ctx.tenant, item.get("tenant_site"))
        links = links_between(ctx.session, site.id, ctx.haas_site.id)
        if not links:
            raise ReserveFailed(f"no inter-DC link between {site.name} and {ctx.haas_site.name}")
        free = self.free(ctx, {link.id: (link.capacity_mbps,) for link in links})
        mbps = item["bandwidth_mbps"]
        chosen = calendar.place(free, (mbps,), 1)
        if chosen is None:
            raise ReserveFailed(
                f"network item {index}: {mbps} Mb/s between {site.name} and {ctx.haas_site.name} not free over "
                f"the interval; at most {max(f[0] for f in free.values())} Mb/s is"
            )
        link = next(link for link in links if link.id == chosen[0])
        self.hold(ctx, index, link.id, {"link": link.name, "tenant_site": site.name}, mbps=mbps)

    def availability(self, q: Query, item: dict) -> Offer:
        if q.tenant is None:
            raise InvalidInput("bandwidth availability is per tenant: ask with a tenant token", field="bandwidth_mbps")
        site = tenant_site(q.session, q.tenant, item.get("tenant_site"))
        caps = {link.id: (link.capacity_mbps,) for link in links_between(q.session, site.id, q.site.id)}
        return self._offer(q, caps, (item["bandwidth_mbps"],), 1,
                           lambda free: {"bandwidth_free_mbps": max((f[0] for f in free.values()), default=None)})

    def desired(self, view: ActiveView):
        """Per tenant with active reservations (the paper's sections 4.4-4.5), per segment (the
        tenant's overlay in model a, a pod's own in model b):

        * on each HaaS gateway: the segment's bridge, one GRE trunk to each of the tenant's IaaS
          gateways (every VLAN, the segment's key), a mesh tunnel to each L0 holding a part of the
          segment; and per tenant, its limit on the inter-DC tunnel (the sum of its active
          bandwidth reservations towards that site);
        * on each such L0: the segment's bridge and mesh tunnels to the gateway and to every other
          such L0, so the mesh grows and shrinks with the L0s that hold the segment's L1s and volumes;
        * model (c): the segment has no trunk; a router joins it to the tenant's L2.
        """
        out: list = []
        by_name = {n.name: n.id for n in view.nodes.values()}
        for tid in sorted({view.tenant(a).id for a in view.allocations}):
            tenant = view.tenants[tid]
            owner, t = f"tenant:{tenant.name}", tenant.name
            mine = [a for a in view.allocations if view.tenant(a).id == tid]
            gateways = [g for sid in sorted({view.reservations[a.reservation_id].site_id for a in mine})
                        for g in view.gateways_of(sid)]
            sites = [x for x in view.tenant_sites(tenant) if x.gateway_underlay]
            rate_to: dict[int, int] = {}
            for a in mine:
                if a.resource_kind == "link":
                    site = next(x for x in sites if x.name == a.detail["tenant_site"])
                    rate_to[site.id] = rate_to.get(site.id, 0) + a.mbps
            for gw in gateways:
                for site in sites:
                    if site.id in rate_to:
                        out.append((gw.name, TunnelLimitOp(uplink=gw.uplink, remote_ip=site.gateway_underlay,
                                                           rate_mbit=rate_to[site.id], owner=owner, tenant=t)))
            segments = {view.segment(a) for a in mine}
            routed = sorted({a.reservation_id for a in mine if view.segment(a).routed})
            if routed:  # a router's IaaS leg sits on the tenant's own L2: its segment must be there
                segments.add(tenant_segment(tenant))
            for seg in sorted(segments, key=lambda x: x.name):
                parts = [a for a in mine if view.segment(a) == seg]
                # the L0s that hold the segment's L1s, and those that serve its volumes
                l0s = sorted({a.resource_id for a in parts if a.resource_kind == "node"}
                             | {by_name[view.pools[a.resource_id].host] for a in parts
                                if a.resource_kind == "pool" and view.pools[a.resource_id].host in by_name})
                br, key, sn = seg.bridge, seg.key, seg.name

                def tunnel(name: str, remote: str, mesh: bool = True) -> TunnelOp:
                    return TunnelOp(bridge=br, name=names.tenant_tunnel(sn, name), remote_ip=remote, key=key,
                                    mesh=mesh, owner=owner, tenant=t)

                for gw in gateways:
                    out.append((gw.name, BridgeOp(name=br, owner=owner, tenant=t)))
                    for site in ([] if seg.routed else sites):
                        out.append((gw.name, tunnel(f"x{site.id}", site.gateway_underlay, mesh=False)))
                    for nid in l0s:
                        if view.nodes[nid].underlay_address:
                            out.append((gw.name, tunnel(f"n{nid}", view.nodes[nid].underlay_address)))
                for nid in l0s:
                    node = view.nodes[nid]
                    out.append((node.name, BridgeOp(name=br, owner=owner, tenant=t)))
                    for gw in view.gateways_of(node.site_id):
                        out.append((node.name, tunnel(f"g{gw.id}", gw.fabric_address or gw.underlay_address)))
                    for mid in l0s:
                        if mid != nid and view.nodes[mid].underlay_address:
                            out.append((node.name, tunnel(f"n{mid}", view.nodes[mid].underlay_address)))
            # model (c): a router per reservation, on the (first) HaaS gateway: a namespace that
            # forwards, one leg on the reservation's segment (the L1s' gateway), one on the
            # tenant's L2 (where the IaaS routes the subnet to it, across the inter-DC trunk)
            mgmt_vlan = next((x.mgmt_vlan for x in sites if x.mgmt_vlan), None)
            base = tenant_segment(tenant)
            for rid in routed:
                res = view.reservations[rid]
                ns = f"irisr{rid[:8]}"
                legs = ((segment_of(res, tenant).bridge, f"{ns}p", str(router_interface(res.routing["subnet"]))),
                        (base.bridge, f"{ns}i", res.routing["iaas_address"]))
                for gw in gateways[:1]:
                    for bridge, leg, address in legs:
                        l0if, l1if = names.l1_port(leg)
                        out.append((gw.name, PortOp(bridge=bridge, name=l0if, l1_netns=ns, l1_ifname=l1if, vlan=mgmt_vlan,
                                                    address=address, router=True, owner=rid, tenant=t)))
        return out
