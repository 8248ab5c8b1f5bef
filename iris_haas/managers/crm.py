"""CRM: places L1 nodes on L0s over the reservation's interval."""

from __future__ import annotations

from sqlalchemy import select

from iris_haas.coordinator import calendar
from iris_haas.errors import ReserveFailed
from iris_haas.managers.base import Context, ResourceManager
from iris_haas.store.models import Node


def l1_name(reservation_id: str, index: int, n: int) -> str:
    # ≤ 15 characters, so the name can also serve as an interface or namespace suffix.
    return f"iris{reservation_id[:6]}{index:x}{n:03x}"[:15]


class ComputeManager(ResourceManager):
    name, item_kind, resource_kind = "crm", "compute", "node"

    def candidates(self, ctx: Context, l1_kind: str) -> tuple[dict[int, tuple[int, int, int]], dict[int, str]]:
        nodes = ctx.session.execute(
            select(Node.id, Node.name, Node.cpus, Node.memory_mb, Node.disk_gb).where(
                Node.site_id == ctx.haas_site.id, Node.state == "available", Node.supports(l1_kind)
            )
        ).all()
        return {i: (c, m, d) for i, _, c, m, d in nodes}, {i: name for i, name, *_ in nodes}

    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        caps, names = self.candidates(ctx, item["l1_kind"])
        if not caps:
            raise ReserveFailed(f"no available L0 node at site {ctx.haas_site.name} supports L1 kind {item['l1_kind']}")
        free = self.free(ctx, caps)
        need = (item["cpus"], item["memory_mb"], item["disk_gb"])
        # A modify keeps each L1 where it is when it still fits, so no L1 moves; new ones are placed.
        kept: list[int] = []
        previous = self._allocations(ctx, status="committed", item=index) if ctx.reservation.committed_version else []
        for a in previous[: item["count"]]:
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
