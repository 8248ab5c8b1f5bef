"""CRM: places L1 nodes on L0s over the reservation's interval."""

from __future__ import annotations

from sqlalchemy import select

from iris_haas.coordinator import calendar
from iris_haas.errors import ReserveFailed
from iris_haas.managers.base import Context, ResourceManager
from iris_haas.store.models import Allocation, Node


def l1_name(reservation_id: str, index: int, n: int) -> str:
    # ≤ 15 characters, so the name can also serve as an interface or namespace suffix.
    return f"iris{reservation_id[:6]}{index:x}{n:03x}"[:15]


class ComputeManager(ResourceManager):
    name, item_kind, resource_kind = "crm", "compute", "node"

    def candidates(self, ctx: Context, l1_kind: str) -> dict[int, tuple[int, int, int]]:
        nodes = ctx.session.execute(
            select(Node.id, Node.cpus, Node.memory_mb, Node.disk_gb, Node.l1_kinds).where(
                Node.site_id == ctx.haas_site.id, Node.state == "available"
            )
        )
        return {n.id: (n.cpus, n.memory_mb, n.disk_gb) for n in nodes if l1_kind in n.l1_kinds}

    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        caps = self.candidates(ctx, item["l1_kind"])
        if not caps:
            raise ReserveFailed(f"no available L0 node at site {ctx.haas_site.name} supports L1 kind {item['l1_kind']}")
        usage = calendar.overlapping(
            ctx.session, "node", ctx.start, ctx.end, exclude_reservation=ctx.reservation.id
        )
        free = calendar.free_capacity(caps, usage, ctx.start, ctx.end)
        need = (item["cpus"], item["memory_mb"], item["disk_gb"])
        # Siblings of this reservation held in the same call already consume capacity.
        for a in ctx.session.scalars(
            select(Allocation).where(
                Allocation.reservation_id == ctx.reservation.id,
                Allocation.resource_kind == "node",
                Allocation.status == "held",
            )
        ):
            if a.resource_id in free:
                f = free[a.resource_id]
                free[a.resource_id] = (f[0] - a.cpus, f[1] - a.memory_mb, f[2] - a.disk_gb)
        # A modify keeps each L1 where it is when it still fits, so no L1 moves; new ones are placed.
        kept: list[int] = []
        for a in self._allocations(ctx, status="committed", item=index)[: item["count"]]:
            f = free.get(a.resource_id)
            if f is None or any(f[d] < need[d] for d in range(3)):
                break
            free[a.resource_id] = tuple(f[d] - need[d] for d in range(3))
            kept.append(a.resource_id)
        rest = calendar.place(free, need, item["count"] - len(kept))
        chosen = None if rest is None else kept + rest
        if chosen is None:
            fitting = calendar.fit_count(free, need)
            raise ReserveFailed(
                f"compute item {index}: {item['count']} x {item['l1_kind']} ({need[0]} cpus, {need[1]} MB, "
                f"{need[2]} GB) do not fit over the interval; {fitting} would fit"
            )
        names = {n.id: n.name for n in ctx.session.execute(select(Node.id, Node.name).where(Node.id.in_(set(chosen))))}
        for n, node_id in enumerate(chosen):
            self.hold(
                ctx, index, node_id,
                {"node": names[node_id], "l1": l1_name(ctx.reservation.id, index, n), "l1_kind": item["l1_kind"]},
                cpus=need[0], memory_mb=need[1], disk_gb=need[2],
            )

    def desired_ops(self, ctx, allocations):
        return [
            (
                a.detail["node"],
                {
                    "op": "l1",
                    "name": a.detail["l1"],
                    "l1_kind": a.detail["l1_kind"],
                    "tenant": ctx.tenant.name,
                    "cpus": a.cpus,
                    "memory_mb": a.memory_mb,
                    "disk_gb": a.disk_gb,
                },
            )
            for a in allocations
        ]
