"""NRM: bandwidth on the inter-DC link between the tenant's IaaS site and the HaaS site."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.errors import InvalidInput, ReserveFailed
from iris_haas.contract.types import ServiceModel
from iris_haas.managers.base import (
    ActiveView,
    Context,
    Offer,
    Plans,
    Query,
    ResourceManager,
    segment_of,
)
from iris_haas.planning import router_interface
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
        caps: dict[int, tuple[int, ...]] = {link.id: (link.capacity_mbps,) for link in links_between(q.session, site.id, q.site.id)}
        return self._offer(q, caps, (item["bandwidth_mbps"],), 1,
                           lambda free: {"bandwidth_free_mbps": max((f[0] for f in free.values()), default=None)})

    def plan(self, view: ActiveView, plans: Plans) -> None:
        """Per tenant with active reservations: the HaaS gateways of the sites its reservations are
        at, its IaaS sites with the sum of its active bandwidth towards each (the limit on the
        inter-DC tunnel), and, for each model (c) reservation, its router."""
        for a in view.allocations:
            view.plan_of(plans, a)  # every tenant with an active allocation is planned
        for tid, t in plans.items():
            tenant = view.tenants[tid]
            mine = view.by_tenant.get(tid, [])
            rate_to: dict[str, float] = {}
            for a in mine:
                if a.resource_kind == "link":
                    rate_to[a.detail["tenant_site"]] = rate_to.get(a.detail["tenant_site"], 0) + a.mbps
            t.sites = [planning.IaasSite(id=x.id, gateway=x.gateway_underlay, rate_mbit=rate_to.get(x.name, 0))
                       for x in view.tenant_sites(tenant) if x.gateway_underlay]
            t.gateways = [planning.HaasGateway(id=g.id, host=g.name, uplink=g.uplink,
                                               fabric=g.fabric_address or g.underlay_address)
                          for sid in sorted({view.reservations[a.reservation_id].site_id for a in mine})
                          for g in view.gateways_of(sid)]
            for rid in sorted({a.reservation_id for a in mine}):
                res = view.reservations[rid]
                if res.service_model == ServiceModel.ROUTED and res.routing and res.segment_no is not None:
                    t.routers.append(planning.Router(
                        netns=names.router_netns(res.segment_no), segment=segment_of(res, tenant),
                        legs=(names.router_leg(res.segment_no, "segment"), names.router_leg(res.segment_no, "iaas")),
                        address=str(router_interface(res.routing["subnet"])), iaas_address=res.routing["iaas_address"],
                        owner=rid, vlan=view.mgmt_vlan(tenant)))
