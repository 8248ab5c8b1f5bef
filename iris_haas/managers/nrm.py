"""NRM: bandwidth on the inter-DC link between the tenant's IaaS site and the HaaS site.

On a link of kind ``nsi`` the NRM is also an OGF NSI CS 2.0 requester: the bandwidth is a
connection an external provider reserves between the link's two STPs, driven through the same
two phases as the rest of the reservation (reserve -> reserve, commit -> reserveCommit, abort and
the hold timeout -> reserveAbort, provision, release, terminate). The connection is recorded in
the allocation's ``detail["nsi"]``: its connectionId, the provider and the STPs it confirmed,
with their VLAN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.errors import DataPlaneError, InvalidInput, ReserveFailed
from iris_haas.contract.types import ServiceModel, stp_vlans
from iris_haas.managers.base import (
    ActiveView,
    Context,
    Offer,
    Plans,
    Query,
    ResourceManager,
    segment_of,
)
from iris_haas.nsi import messages
from iris_haas.nsi.requester import NsiError, Provider, Requester
from iris_haas.planning import router_interface
from iris_haas.store import calendar
from iris_haas.store.models import Allocation, Link, Site, Tenant

log = logging.getLogger("iris.nrm")


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


def provider_of(nsi: dict) -> Provider:
    return Provider(nsi["provider"], nsi["provider_nsa"])


def _refused(e: NsiError) -> dict:
    """The provider's own error, for the tenant's errorEvent and the API's answer."""
    if e.exception is None:
        return {}
    return {"nsi_error_id": e.exception.error_id, "nsi_error_text": e.exception.text}


class NetworkManager(ResourceManager):
    name, item_kind, resource_kind = "nrm", "network", "link"

    def __init__(self, nsi: Requester | None = None):
        self.nsi = nsi  # without it, an nsi link refuses every reservation

    def _nsi(self, ctx: Context, *statuses: str) -> list[Allocation]:
        """The allocations of connections a provider confirmed (one still checking has no connectionId)."""
        return [a for a in self._allocations(ctx) if "connection_id" in a.detail.get("nsi", {}) and a.status in statuses]

    def checking(self, ctx: Context) -> list[Allocation]:
        """This version's connections not yet asked of their provider (``nsi.checking``)."""
        return [a for a in self._allocations(ctx, status="held", version=ctx.reservation.version)
                if (a.detail.get("nsi") or {}).get("checking")]

    def ask(self, ctx: Context, a: Allocation) -> Callable[[], dict | ReserveFailed]:
        """The NSI reserve of a connection still checking, as a call to make outside any
        transaction (it waits for the provider, at most the requester's timeout): it answers the
        connection's record (held on reserveConfirmed), or the refusal (reserveFailed, a fault, no
        answer in time; the provider's errorId and text in it). A modify of a committed connection
        is a reserve on its connectionId, at the new version."""
        assert self.nsi is not None
        nsi = self.nsi
        link = ctx.session.get_one(Link, a.detail["nsi"]["link_id"])
        assert link.nsi_provider and link.nsi_provider_nsa and link.source_stp and link.dest_stp
        provider = Provider(link.nsi_provider, link.nsi_provider_nsa)
        previous = next((x.detail["nsi"] for x in self._allocations(ctx, status="committed", item=a.item)
                         if "connection_id" in x.detail.get("nsi", {})), None)
        criteria = messages.Criteria(version=ctx.reservation.version, start=ctx.start, end=ctx.end, capacity_mbps=a.mbps,
                                     source_stp=link.source_stp, dest_stp=link.dest_stp,
                                     service_type=link.service_type or "")
        rid, index = ctx.reservation.id, a.item

        def call() -> dict | ReserveFailed:
            try:
                ok = nsi.reserve(provider, criteria, global_reservation_id=f"urn:uuid:{_uuid(rid)}",
                                 description=f"iris reservation {rid} item {index}",
                                 connection_id=previous["connection_id"] if previous else None)
            except NsiError as e:
                if e.connection_id and previous is None:  # the provider keeps a failed connection until told
                    self._forget(provider, e.connection_id)
                return ReserveFailed(f"network item {index}: {e.message}", **_refused(e))
            confirmed = ok.criteria or criteria
            return {"connection_id": ok.connection_id, "provider": provider.url, "provider_nsa": provider.nsa,
                    "source_stp": confirmed.source_stp, "dest_stp": confirmed.dest_stp,
                    "vlan": _vlan(confirmed.source_stp), "service_type": confirmed.service_type,
                    "active": bool(previous and previous.get("active")), "new": previous is None}

        return call

    def forget(self, nsi: dict) -> None:
        """terminate a connection a provider confirmed that Iris will never use."""
        self._forget(provider_of(nsi), nsi["connection_id"])

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
        detail: dict = {"link": link.name, "tenant_site": site.name}
        if link.kind == "nsi":
            if self.nsi is None:
                raise ReserveFailed(f"network item {index}: link {link.name} is an NSI link and this coordinator has "
                                    "no NSI requester configured")
            # asked of the provider once this is stored (ReserveChecking), outside the transaction: see ``ask``
            detail["nsi"] = {"checking": True, "link_id": link.id, "provider": link.nsi_provider,
                             "provider_nsa": link.nsi_provider_nsa}
        self.hold(ctx, index, link.id, detail, mbps=mbps)

    def _each(self, allocations: list[Allocation], operation: str, *, strict: bool) -> None:
        """One NSI request per connection; with ``strict`` the first refusal raises, else it is
        logged (an abort or a terminate frees Iris's side whatever the provider says)."""
        assert self.nsi is not None or not allocations
        for a in allocations:
            nsi = a.detail["nsi"]
            try:
                assert self.nsi is not None
                self.nsi.request(provider_of(nsi), operation, nsi["connection_id"])
            except NsiError as e:
                if strict:
                    raise DataPlaneError(f"network item {a.item}: {e.message}", **_refused(e)) from None
                log.warning("NSI %s of %s: %s", operation, nsi["connection_id"], e.message)

    def commit(self, ctx: Context, version: int) -> None:
        """reserveCommit of every connection this version holds, before compute and storage commit
        (the coordinator commits the network first): a refusal aborts the whole commit."""
        held = [a for a in self._nsi(ctx, "held") if a.version == version]
        try:
            self._each(held, "reserveCommit", strict=True)
        except DataPlaneError as e:
            raise ReserveFailed(e.message, **{k: v for k, v in e.extra.items() if k.startswith("nsi_")}) from None
        super().commit(ctx, version)

    def _forget(self, provider: Provider, connection_id: str) -> None:
        """terminate a connection Iris will never use (best effort: the provider's own timers
        end it otherwise)."""
        assert self.nsi is not None
        try:
            self.nsi.request(provider, "terminate", connection_id)
        except NsiError as e:
            log.warning("NSI terminate of %s: %s", connection_id, e.message)

    def abort(self, ctx: Context) -> None:
        """reserveAbort of the held connections (a failed sibling, Iris's abort, the hold timeout);
        a connection with no committed version is then terminated: nothing will ever use it."""
        held = self._nsi(ctx, "held")
        self._each(held, "reserveAbort", strict=False)
        committed = {a.detail["nsi"]["connection_id"] for a in self._nsi(ctx, "committed")}
        for a in held:
            if a.detail["nsi"]["connection_id"] not in committed:
                self._forget(provider_of(a.detail["nsi"]), a.detail["nsi"]["connection_id"])
        super().abort(ctx)

    def provision(self, ctx: Context) -> None:
        """provision of every committed connection; the provider's dataPlaneStateChange later says
        when its data plane is up (``detail["nsi"]["active"]``)."""
        self._each(self._nsi(ctx, "committed"), "provision", strict=True)

    def release(self, ctx: Context) -> None:
        self._each(self._nsi(ctx, "committed"), "release", strict=True)

    def terminate(self, ctx: Context) -> None:
        self._each(self._nsi(ctx, "held", "committed"), "terminate", strict=False)
        super().terminate(ctx)

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
        inter-DC tunnel) or, for a site with an NSI link, the circuit its trunk runs in (the
        lowest VLAN of the tenant's connections to it whose data plane the provider has up), and,
        for each model (c) reservation, its router."""
        for a in view.allocations:
            view.plan_of(plans, a)  # every tenant with an active allocation is planned
        for tid, t in plans.items():
            tenant = view.tenants[tid]
            mine = view.by_tenant.get(tid, [])
            rate_to: dict[str, float] = {}
            circuits: dict[str, list[int]] = {}  # site -> the VLANs of its circuits the provider has up
            for a in mine:
                if a.resource_kind == "link":
                    rate_to[a.detail["tenant_site"]] = rate_to.get(a.detail["tenant_site"], 0) + a.mbps
                    nsi = a.detail.get("nsi") or {}
                    if nsi.get("active") and nsi.get("vlan"):
                        circuits.setdefault(a.detail["tenant_site"], []).append(nsi["vlan"])
            t.sites = [planning.IaasSite(id=x.id, gateway=x.gateway_underlay, rate_mbit=rate_to.get(x.name, 0),
                                         nsi=x.id in view.nsi_sites, circuit_vlan=min(circuits.get(x.name, [0])) or None)
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


def _vlan(stp: str) -> int | None:
    """The one VLAN of a confirmed STP (a provider confirms a single VLAN out of the range asked)."""
    vlans = stp_vlans(stp)
    return vlans[0] if vlans and vlans[0] == vlans[1] else None


def _uuid(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"
