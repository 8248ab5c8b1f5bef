"""NRM: bandwidth on the inter-DC link between the tenant's IaaS site and the HaaS site."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iris_haas.coordinator import calendar
from iris_haas.errors import InvalidInput, ReserveFailed
from iris_haas.drivers import names
from iris_haas.drivers.ops import BridgeOp, TunnelLimitOp, TunnelOp
from iris_haas.managers.base import ActiveView, Context, ResourceManager
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

    def desired(self, view: ActiveView):
        """Per tenant with active L1s or bandwidth (the paper's sections 4.4-4.5, model a):

        * on each HaaS gateway: the tenant's bridge, one GRE trunk to each of the tenant's IaaS
          gateways (every VLAN, the tenant's key), a mesh tunnel to each L0 holding one of the
          tenant's L1s, and the tenant's limit on the inter-DC tunnel (the sum of its active
          bandwidth reservations towards that site);
        * on each such L0: the tenant's bridge and mesh tunnels to the gateway and to every other
          such L0, so the mesh grows and shrinks with the L0s that hold the tenant's L1s.
        """
        out: list = []
        tenants = sorted({view.tenant(a).id for a in view.allocations})
        for tid in tenants:
            tenant = view.tenants[tid]
            owner, t, key, br = f"tenant:{tenant.name}", tenant.name, tenant.tunnel_key, names.tenant_bridge(tenant.name)
            mine = [a for a in view.allocations if view.tenant(a).id == tid]
            # the L0s that hold the tenant's L1s, and those that serve its volumes
            by_name = {n.name: n.id for n in view.nodes.values()}
            l0s = sorted({a.resource_id for a in mine if a.resource_kind == "node"}
                         | {by_name[view.pools[a.resource_id].host] for a in mine
                            if a.resource_kind == "pool" and view.pools[a.resource_id].host in by_name})
            haas_sites = {view.reservations[a.reservation_id].site_id for a in mine}
            rate_to: dict[int, int] = {}
            for a in mine:
                if a.resource_kind == "link":
                    site = next(x for x in view.tenant_sites(tenant) if x.name == a.detail["tenant_site"])
                    rate_to[site.id] = rate_to.get(site.id, 0) + a.mbps
            for gw in [g for sid in sorted(haas_sites) for g in view.gateways_of(sid)]:
                out.append((gw.name, BridgeOp(name=br, owner=owner, tenant=t)))
                for site in view.tenant_sites(tenant):
                    if not site.gateway_underlay:
                        continue
                    out.append((gw.name, TunnelOp(bridge=br, name=names.tenant_tunnel(t, f"x{site.id}"),
                                                  remote_ip=site.gateway_underlay, key=key, mesh=False,
                                                  owner=owner, tenant=t)))
                    if site.id in rate_to:
                        out.append((gw.name, TunnelLimitOp(uplink=gw.uplink, remote_ip=site.gateway_underlay,
                                                           rate_mbit=rate_to[site.id], owner=owner, tenant=t)))
                for nid in l0s:
                    node = view.nodes[nid]
                    if node.underlay_address:
                        out.append((gw.name, TunnelOp(bridge=br, name=names.tenant_tunnel(t, f"n{nid}"),
                                                      remote_ip=node.underlay_address, key=key, mesh=True,
                                                      owner=owner, tenant=t)))
            for nid in l0s:
                node = view.nodes[nid]
                out.append((node.name, BridgeOp(name=br, owner=owner, tenant=t)))
                for gw in view.gateways_of(node.site_id):
                    out.append((node.name, TunnelOp(bridge=br, name=names.tenant_tunnel(t, f"g{gw.id}"),
                                                    remote_ip=gw.fabric_address or gw.underlay_address, key=key,
                                                    mesh=True, owner=owner, tenant=t)))
                for mid in l0s:
                    peer = view.nodes[mid]
                    if mid != nid and peer.underlay_address:
                        out.append((node.name, TunnelOp(bridge=br, name=names.tenant_tunnel(t, f"n{mid}"),
                                                        remote_ip=peer.underlay_address, key=key, mesh=True,
                                                        owner=owner, tenant=t)))
        return out
