"""NRM: bandwidth on the inter-DC link between the tenant's IaaS site and the HaaS site."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iris_haas.coordinator import calendar
from iris_haas.errors import InvalidInput, ReserveFailed
from iris_haas.managers.base import Context, ResourceManager
from iris_haas.store.models import Gateway, Link, Site, Tenant


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

    def desired_ops(self, ctx, allocations):
        ops = []
        gateways = list(ctx.session.scalars(select(Gateway).where(Gateway.site_id == ctx.haas_site.id)))
        for a in allocations:
            site = ctx.session.scalar(select(Site).where(Site.name == a.detail["tenant_site"]))
            for gw in gateways:
                ops.append((gw.name, {"op": "tunnel", "tenant": ctx.tenant.name, "key": ctx.tenant.id,
                                      "local_ip": gw.underlay_address, "remote_ip": site.gateway_underlay}))
                ops.append((gw.name, {"op": "shape", "tenant": ctx.tenant.name, "mbps": a.mbps}))
        return ops
