"""The one interface the coordinator drives every resource manager through.

reserve / commit / abort / provision / release / terminate / query, as in GridARS and NSI, so a
coordinator can co-allocate across managers (and, later, across several HaaS domains). A manager
chooses concrete resources at reserve time (rows in the calendar) and, at provision time,
derives the data-plane operations each host must apply (rows of desired state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from iris_haas.coordinator import calendar
from iris_haas.store.models import Allocation, DataPlaneOp, Reservation, Site, Tenant


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
        return self.session.get(Tenant, self.reservation.tenant_id)

    @property
    def haas_site(self) -> Site:
        return self.session.get(Site, self.reservation.site_id)


class ResourceManager(ABC):
    name: str  # "crm" | "nrm" | "srm"
    item_kind: str  # the reservation item kind it serves
    resource_kind: str  # the calendar's resource kind

    @abstractmethod
    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        """Hold concrete resources for one item over [ctx.start, ctx.end) or raise ReserveFailed."""

    @abstractmethod
    def desired_ops(self, ctx: Context, allocations: list[Allocation]) -> list[tuple[str, dict]]:
        """The (host, operation) pairs that realize these committed allocations."""

    def free(self, ctx: Context, capacities: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        """Free capacity of these resources over [ctx.start, ctx.end): capacity minus the calendar's
        peak (this reservation's committed version excluded, since the new one replaces it) minus
        what this reserve call has already held for sibling items."""
        usage = calendar.overlapping(ctx.session, self.resource_kind, ctx.start, ctx.end,
                                     exclude_reservation=ctx.reservation.id)
        free = calendar.free_capacity(capacities, usage, ctx.start, ctx.end)
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

    def provision(self, ctx: Context) -> set[str]:
        """Write the desired state for the committed allocations; return the hosts touched."""
        touched = self.release(ctx)
        for host, op in self.desired_ops(ctx, self._allocations(ctx, status="committed")):
            ctx.session.add(DataPlaneOp(reservation_id=ctx.reservation.id, manager=self.name, host=host, op=op))
            touched.add(host)
        return touched

    def release(self, ctx: Context) -> set[str]:
        """Remove this reservation's desired state; return the hosts touched."""
        s = ctx.session
        hosts = set(
            s.scalars(
                select(DataPlaneOp.host).where(
                    DataPlaneOp.reservation_id == ctx.reservation.id, DataPlaneOp.manager == self.name
                )
            )
        )
        s.execute(
            delete(DataPlaneOp).where(
                DataPlaneOp.reservation_id == ctx.reservation.id, DataPlaneOp.manager == self.name
            )
        )
        return hosts

    def terminate(self, ctx: Context) -> set[str]:
        touched = self.release(ctx)
        ctx.session.execute(
            delete(Allocation).where(
                Allocation.reservation_id == ctx.reservation.id,
                Allocation.resource_kind == self.resource_kind,
            )
        )
        return touched

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
