"""CRM: places L1 nodes on L0s over the reservation's interval, and wires each L1's NIC."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.errors import ReserveFailed
from iris_haas.contract.types import L1Kind, NodeState, ServiceModel
from iris_haas.managers.base import ActiveView, Context, Offer, Plans, Query, ResourceManager
from iris_haas.planning import router_interface
from iris_haas.store import calendar
from iris_haas.store.models import Image, Meta, Node, next_number


def _gateway(reservation) -> str | None:
    """Model (c): the L1s' default route goes to the router."""
    if reservation.service_model == ServiceModel.ROUTED and reservation.routing:
        return str(router_interface(reservation.routing["subnet"]).ip)
    return None


class ComputeManager(ResourceManager):
    name, item_kind, resource_kind = "crm", "compute", "node"
    drains = True

    def __init__(self) -> None:
        # (site, L1 kind) -> (inventory generation, capacities, names, ids by capacity): admission
        # reads the node table again only after an inventory change, by any process sharing the database
        self._nodes: dict[tuple[int, str], tuple[int | None, dict, dict, list[int]]] = {}

    def candidates(self, ctx: Context, l1_kind: str) -> tuple[dict[int, tuple[int, ...]], dict[int, str], list[int]]:
        return self._candidates(ctx.session, ctx.reservation.site_id, l1_kind)

    def _candidates(self, session: Session, site_id: int, l1_kind: str) -> tuple[dict[int, tuple[int, ...]],
                                                                                 dict[int, str], list[int]]:
        generation = session.scalar(select(Meta.value).where(Meta.key == "inventory"))
        key = (site_id, l1_kind)
        cached = self._nodes.get(key)
        if cached is None or cached[0] != generation or generation is None:
            nodes = session.execute(
                select(Node.id, Node.name, Node.cpus, Node.memory_mb, Node.disk_gb).where(
                    Node.site_id == site_id, Node.state == NodeState.AVAILABLE, Node.supports(l1_kind)
                )
            ).all()
            caps: dict[int, tuple[int, ...]] = {i: (c, m, d) for i, _, c, m, d in nodes}
            cached = (generation, caps, {i: name for i, name, *_ in nodes}, calendar.rank(caps))
            self._nodes[key] = cached
        return cached[1], cached[2], cached[3]  # shared: read only (free capacity is a copy of it)

    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        caps, names_, ranked = self.candidates(ctx, item["l1_kind"])
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
        kept_names = [a.detail["l1"] for a in previous[: len(kept)]]  # an L1 that stays keeps its name
        rest = calendar.place(free, need, item["count"] - len(kept), ranked)
        if rest is None:
            raise ReserveFailed(
                f"compute item {index}: {item['count']} x {item['l1_kind']} ({need[0]} cpus, {need[1]} MB, "
                f"{need[2]} GB) do not fit over the interval; {len(kept) + calendar.fit_count(free, need)} would fit"
            )
        image = {}
        if item.get("image"):  # checked at reserve; its path is fixed for the reservation's life
            img = ctx.session.scalar(select(Image).where(Image.name == item["image"]))
            if img is None:
                raise ReserveFailed(f"compute item {index}: image {item['image']} was removed")
            image = {"image": img.path}
        first = next_number(ctx.session, "l1", len(rest)) if rest else 0
        l1s = kept_names + [names.l1_name(first + n) for n in range(len(rest))]
        for n, node_id in enumerate(kept + rest):
            self.hold(
                ctx, index, node_id,
                {"node": names_[node_id], "l1": l1s[n], "l1_kind": item["l1_kind"], "n": n, **image},
                cpus=need[0], memory_mb=need[1], disk_gb=need[2],
            )

    def availability(self, q: Query, item: dict) -> Offer:
        caps, _, _ = self._candidates(q.session, q.site.id, item["l1_kind"])
        need = (item["cpus"], item["memory_mb"], item["disk_gb"])
        return self._offer(q, caps, need, item["count"], lambda free: {"count_fit": calendar.fit_count(free, need)})

    def plan(self, view: ActiveView, plans: Plans) -> None:
        """Each L1 of its kind and flavor, with one NIC: a port on its segment carrying every VLAN,
        the tenant's management VLAN native (untagged), the management address and SSH key from the
        reservation, and an egress limit of the reservation's bandwidth when it has one."""
        for a in view.of("node"):
            tenant, item = view.tenant(a), view.item(a)
            mgmt_vlan = view.mgmt_vlan(tenant)
            addresses = item.get("addresses") or []
            n = a.detail.get("n", 0)
            rate = view.link_mbps.get(a.reservation_id, 0)
            view.plan_of(plans, a).l1s.append(planning.L1(
                name=a.detail["l1"], l0=view.l0(view.nodes[a.resource_id]), segment=view.segment(a),
                owner=a.reservation_id, tenant=tenant.name, kind=L1Kind(a.detail["l1_kind"]),
                vlan=mgmt_vlan, trunk=mgmt_vlan is not None,
                address=addresses[n] if n < len(addresses) else None,
                gateway=_gateway(view.reservations[a.reservation_id]), cpus=a.cpus, memory_mb=a.memory_mb,
                disk_gb=a.disk_gb, ssh_key=item.get("ssh_key") or "", image=a.detail.get("image"), rate_mbit=rate))
