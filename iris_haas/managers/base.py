"""The one interface the coordinator drives every resource manager through.

reserve / commit / abort / provision / release / terminate / query, as in GridARS and NSI, so a
coordinator can co-allocate across managers (and, later, across several HaaS domains). A manager
chooses concrete resources at reserve time (rows in the calendar); from the committed allocations of
the reservations whose data plane is active, it derives its part of the planning inputs
(``plan``: its L1s, volumes, links); the planning layer (:mod:`iris_haas.planning`) turns them
into the ops each host must hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.types import ServiceModel
from iris_haas.planning.model import L0, Segment
from iris_haas.store import calendar
from iris_haas.store.models import Allocation, Criteria, Gateway, Link, Node, Reservation, Site, StoragePool, Tenant


@dataclass
class Context:
    """What one manager call sees: the open transaction and the reservation being worked on."""

    session: Session
    reservation: Reservation
    start: float
    end: float
    held: list[Allocation] = field(default_factory=list)  # what this reserve call has held so far

    # Looked up on first use: a commit or an abort never needs them.
    @property
    def tenant(self) -> Tenant:
        return self.session.get_one(Tenant, self.reservation.tenant_id)

    @property
    def haas_site(self) -> Site:
        return self.session.get_one(Site, self.reservation.site_id)


def segment_of(reservation: Reservation, tenant: Tenant) -> Segment:
    """Model (a): the tenant's one overlay, shared by all its reservations. Model (b), a pod: a
    segment of the reservation's own, with its own key, isolated from every other HaaS resource
    and extended to the IaaS as a separate network (the IaaS adds it as a new pod). Model (c): a
    segment of its own too, not extended: reached through a router (see the NRM)."""
    if (reservation.service_model in (ServiceModel.POD, ServiceModel.ROUTED) and reservation.segment_no is not None
            and reservation.segment_key is not None):
        return Segment.of(names.pod_segment(reservation.segment_no), reservation.segment_key,
                          routed=reservation.service_model == ServiceModel.ROUTED)
    return tenant_segment(tenant)


def tenant_segment(tenant: Tenant) -> Segment:
    """The tenant's own overlay (model a), which its IaaS L2 extends into."""
    return Segment.of(names.tenant_segment(tenant.id), tenant.tunnel_key)


@dataclass
class Fleet:
    """The inventory rows planning reads (tenants, sites, nodes, gateways, pools), loaded at once:
    a coordinator keeps one while the inventory generation (``Meta`` ``inventory``) stays the
    same, so re-planning one tenant does not read a thousand nodes again."""

    tenants: dict[int, Tenant]
    sites: dict[int, Site]
    nodes: dict[int, Node]
    gateways: list[Gateway]
    pools: dict[int, StoragePool]
    nsi_sites: frozenset[int] = frozenset()  # the sites with an NSI link: reached through circuits only

    @classmethod
    def load(cls, session: Session) -> Fleet:
        nsi = session.execute(select(Link.site_a_id, Link.site_b_id).where(Link.kind == "nsi")).all()
        return cls(tenants={t.id: t for t in session.scalars(select(Tenant))},
                   sites={x.id: x for x in session.scalars(select(Site))},
                   nodes={n.id: n for n in session.scalars(select(Node))},
                   gateways=list(session.scalars(select(Gateway).order_by(Gateway.id))),
                   pools={p.id: p for p in session.scalars(select(StoragePool))},
                   nsi_sites=frozenset(x for pair in nsi for x in pair))


class ActiveView:
    """Everything the managers' ``plan`` reads, loaded once: the committed allocations of the
    reservations whose data plane is active (of the tenants in ``tenant_ids``; None: of every
    tenant), their criteria, and the inventory rows they refer to (``fleet``; None: read now)."""

    def __init__(self, session: Session, tenant_ids: Collection[int] | None = None, fleet: Fleet | None = None):
        self.session = session
        active = [Reservation.data_plane_active.is_(True)]
        if tenant_ids is not None:
            active.append(Reservation.tenant_id.in_(list(tenant_ids)))
        rows = session.execute(
            select(Allocation, Reservation)
            .join(Reservation, Reservation.id == Allocation.reservation_id)
            .where(*active, Allocation.status == "committed")
            .order_by(Allocation.reservation_id, Allocation.item, Allocation.id)
        ).all()
        self.allocations: list[Allocation] = [a for a, _ in rows]
        self.reservations: dict[str, Reservation] = {r.id: r for _, r in rows}
        # the committed version's items, in one query (not one lazy load per reservation)
        committed = and_(Criteria.reservation_id == Reservation.id, Criteria.version == Reservation.committed_version)
        self.items: dict[str, list] = dict(session.execute(  # type: ignore[arg-type]
            select(Criteria.reservation_id, Criteria.items).join(Reservation, committed).where(*active)).all())
        fleet = fleet if fleet is not None else Fleet.load(session)
        self.tenants, self.sites, self.nodes = fleet.tenants, fleet.sites, fleet.nodes
        self.gateways, self.pools, self.nsi_sites = fleet.gateways, fleet.pools, fleet.nsi_sites
        self._by_name = {n.name: n for n in self.nodes.values()}
        self._sites_of: dict[int, list[Site]] = {}
        for x in self.sites.values():
            if x.tenant_id is not None and x.kind == "iaas":
                self._sites_of.setdefault(x.tenant_id, []).append(x)
        self.by_tenant: dict[int, list[Allocation]] = {}
        self.link_mbps: dict[str, int] = {}  # per reservation: its active bandwidth
        for a in self.allocations:
            self.by_tenant.setdefault(self.reservations[a.reservation_id].tenant_id, []).append(a)
            if a.resource_kind == "link":
                self.link_mbps[a.reservation_id] = self.link_mbps.get(a.reservation_id, 0) + a.mbps

    def of(self, kind: str) -> list[Allocation]:
        return [a for a in self.allocations if a.resource_kind == kind]

    def tenant(self, a: Allocation) -> Tenant:
        return self.tenants[self.reservations[a.reservation_id].tenant_id]

    def item(self, a: Allocation) -> dict:
        return self.items[a.reservation_id][a.item]

    def segment(self, a: Allocation) -> Segment:
        return segment_of(self.reservations[a.reservation_id], self.tenant(a))

    def tenant_sites(self, tenant: Tenant) -> list[Site]:
        return self._sites_of.get(tenant.id, [])

    def gateways_of(self, site_id: int) -> list[Gateway]:
        return [g for g in self.gateways if g.site_id == site_id]

    def mgmt_vlan(self, tenant: Tenant) -> int | None:
        """The tenant's management VLAN: native on its L1s' NICs and on its exports' ports."""
        return next((x.mgmt_vlan for x in self.tenant_sites(tenant) if x.mgmt_vlan), None)

    def l0(self, node: Node) -> L0:
        return L0(id=node.id, host=node.name, underlay=node.underlay_address)

    def node_named(self, name: str) -> Node | None:
        return self._by_name.get(name)

    def plan_of(self, plans: Plans, a: Allocation) -> planning.Tenant:
        """The planning input of the allocation's tenant, created on first use."""
        tenant = self.tenant(a)
        if tenant.id not in plans:
            plans[tenant.id] = planning.Tenant(tenant.name, tenant_segment(tenant))
        return plans[tenant.id]


Plans = dict[int, "planning.Tenant"]  # tenant id -> what is planned for it


@dataclass(frozen=True)
class Query:
    """An availability question, put to each manager an item concerns: at which HaaS site, for
    which tenant (None: the admin asks), and the earliest start considered."""

    session: Session
    site: Site
    tenant: Tenant | None
    start: float


@dataclass(frozen=True)
class Offer:
    """One manager's free capacity for one item from ``Query.start`` on: the resources that could
    serve it, everything booked on them from then on, and what the item needs. The manager
    decides all of it; the coordinator only slides a window along and asks ``fit``."""

    capacities: dict[int, tuple[int, ...]]
    usage: dict[int, list[calendar.Interval]]
    need: tuple[int, ...]
    count: int  # units of ``need``, each wholly on one resource
    report: Callable[[dict[int, tuple[int, ...]]], dict]  # what to tell about a window that fits, from its free capacity

    def ends(self) -> set[float]:
        """When an allocation on these resources ends: the only instants its free capacity grows."""
        return {e for intervals in self.usage.values() for (_, e, _) in intervals}

    def fit(self, lo: float, hi: float) -> dict | None:
        """The manager's report on [lo, hi) if the item fits over all of it, else None."""
        free = calendar.free_capacity(self.capacities, self.usage, lo, hi)
        if calendar.fit_count(free, self.need) < self.count:
            return None
        return self.report(free)


class ResourceManager(ABC):
    name: str  # "crm" | "nrm" | "srm"
    item_kind: str  # the reservation item kind it serves
    resource_kind: str  # the calendar's resource kind

    @abstractmethod
    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        """Hold concrete resources for one item over [ctx.start, ctx.end) or raise ReserveFailed."""

    @abstractmethod
    def plan(self, view: ActiveView, plans: Plans) -> None:
        """Add this manager's part of the planning inputs (its L1s, volumes, links...) to ``plans``,
        from every committed allocation of the reservations whose data plane is active now. The
        planning layer turns the inputs into ops; desired state is derived, never stored: the same
        allocations always give the same ops, so a restart or a missed push changes nothing."""

    @abstractmethod
    def availability(self, q: Query, item: dict) -> Offer:
        """This manager's free capacity for one item (in the reservation item's form) from
        ``q.start`` on, for the coordinator's search of the earliest window where everything fits."""

    def _offer(self, q: Query, capacities: dict[int, tuple[int, ...]], need: tuple[int, ...], count: int,
               report: Callable[[dict[int, tuple[int, ...]]], dict]) -> Offer:
        # one query for the kind, filtered here: an IN over thousands of nodes costs more than it saves
        usage = calendar.overlapping(q.session, self.resource_kind, q.start, float("inf"))
        return Offer(capacities, {r: iv for r, iv in usage.items() if r in capacities}, need, count, report)

    def free(self, ctx: Context, capacities: dict[int, tuple[int, ...]]) -> calendar.Free:
        """Free capacity of these resources over [ctx.start, ctx.end): capacity minus the calendar's
        peak (this reservation's committed version excluded, since the new one replaces it) minus
        what this reserve call has already held for sibling items."""
        free = calendar.remaining(capacities, calendar.used(ctx.session, self.resource_kind, ctx.start, ctx.end,
                                                           exclude_reservation=ctx.reservation.id))
        dims = calendar.DIMENSIONS[self.resource_kind]
        for a in ctx.held:
            if a.resource_kind == self.resource_kind and a.resource_id in free:
                free[a.resource_id] = tuple(f - getattr(a, d) for f, d in zip(free[a.resource_id], dims))
        return free

    def _allocations(self, ctx: Context, **where) -> list[Allocation]:
        q = select(Allocation).where(
            Allocation.reservation_id == ctx.reservation.id,
            Allocation.resource_kind == self.resource_kind,
            *[getattr(Allocation, k) == v for k, v in where.items()],
        )
        return list(ctx.session.scalars(q.order_by(Allocation.item, Allocation.id)))

    def commit(self, ctx: Context, version: int) -> None:
        """Make the held version the committed one; the previous version's allocations go."""
        s, rid = ctx.session, ctx.reservation.id
        s.execute(
            delete(Allocation).where(
                Allocation.reservation_id == rid,
                Allocation.resource_kind == self.resource_kind,
                Allocation.status == "committed",
            )
        )
        s.execute(
            update(Allocation)
            .where(
                Allocation.reservation_id == rid,
                Allocation.resource_kind == self.resource_kind,
                Allocation.version == version,
            )
            .values(status="committed")
        )

    def abort(self, ctx: Context) -> None:
        ctx.session.execute(
            delete(Allocation).where(
                Allocation.reservation_id == ctx.reservation.id,
                Allocation.resource_kind == self.resource_kind,
                Allocation.status == "held",
            )
        )

    def provision(self, ctx: Context) -> None:  # noqa: B027 - a hook, empty by default
        """Hook at provision time, for a manager that must act then (an external NSI provider's
        provision). Iris's own managers realize the data plane through ``plan``."""

    def release(self, ctx: Context) -> None:  # noqa: B027 - a hook, empty by default
        """Hook at release time; see ``provision``."""

    # whether what this manager allocates lives on a host (an L1, a volume) that must confirm it
    # gone before the capacity is free again
    drains = False

    def terminate(self, ctx: Context) -> None:
        """Free everything the reservation holds. Committed allocations of a manager whose
        resources live on hosts drain instead: they keep their room in the calendar until the
        host confirms the state without them (``calendar.DRAINING``)."""
        mine = (Allocation.reservation_id == ctx.reservation.id, Allocation.resource_kind == self.resource_kind)
        if self.drains:
            ctx.session.execute(update(Allocation).where(*mine, Allocation.status == "committed")
                                .values(status=calendar.DRAINING, drain_generation=None))
            ctx.session.execute(delete(Allocation).where(*mine, Allocation.status == "held"))
        else:
            ctx.session.execute(delete(Allocation).where(*mine))

    def query(self, ctx: Context) -> list[dict]:
        return [
            {
                "manager": self.name,
                "item": a.item,
                "resource_kind": a.resource_kind,
                "resource_id": a.resource_id,
                "status": a.status,
                "version": a.version,
                **a.detail,
            }
            for a in self._allocations(ctx)
        ]

    def hold(self, ctx: Context, index: int, resource_id: int, detail: dict, **amounts) -> None:
        alloc = Allocation(
                reservation_id=ctx.reservation.id,
                version=ctx.reservation.version,
                item=index,
                resource_kind=self.resource_kind,
                resource_id=resource_id,
                start=ctx.start,
                end=ctx.end,
                duration_s=ctx.end - ctx.start,
                status="held",
                detail=detail,
                **amounts,
        )
        ctx.session.add(alloc)
        ctx.held.append(alloc)
