"""SRM: volumes in the HaaS site's storage pools."""

from __future__ import annotations

from sqlalchemy import select

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.errors import ReserveFailed
from iris_haas.managers.base import ActiveView, Context, Offer, Plans, Query, ResourceManager
from iris_haas.store import calendar
from iris_haas.store.models import StoragePool, next_number


class StorageManager(ResourceManager):
    name, item_kind, resource_kind = "srm", "storage", "pool"
    drains = True

    def reserve(self, ctx: Context, index: int, item: dict) -> None:
        pools = list(ctx.session.scalars(select(StoragePool).where(StoragePool.site_id == ctx.haas_site.id)))
        if not pools:
            raise ReserveFailed(f"site {ctx.haas_site.name} has no storage pool")
        free = self.free(ctx, {p.id: (p.capacity_gb,) for p in pools})
        chosen = calendar.place(free, (item["size_gb"],), 1)
        if chosen is None:
            raise ReserveFailed(
                f"storage item {index}: {item['size_gb']} GB not free in any pool over the interval; "
                f"at most {max(f[0] for f in free.values())} GB is"
            )
        pool = next(p for p in pools if p.id == chosen[0])
        # a modified volume stays the same volume (its number names it on its host)
        previous = self._allocations(ctx, status="committed", item=index) if ctx.reservation.committed_version else []
        no = previous[0].detail["no"] if previous and "no" in previous[0].detail else next_number(ctx.session, "volume")
        self.hold(ctx, index, pool.id, {"pool": pool.name, "volume": names.volume(no), "no": no, "keep": item["keep"]},
                  gb=item["size_gb"])

    def availability(self, q: Query, item: dict) -> Offer:
        pools = q.session.scalars(select(StoragePool).where(StoragePool.site_id == q.site.id))
        return self._offer(q, {p.id: (p.capacity_gb,) for p in pools}, (item["size_gb"],), 1,
                           lambda free: {"storage_free_gb": max((f[0] for f in free.values()), default=None)})

    def plan(self, view: ActiveView, plans: Plans) -> None:
        """Each volume on its pool's host and, when the item gives an export address, its export
        on the tenant's management/storage VLAN. A pool without a serving host is accounted for in
        the calendar, not realized."""
        for a in view.of("pool"):
            pool, tenant, item = view.pools[a.resource_id], view.tenant(a), view.item(a)
            if not (pool.host and pool.path):
                continue
            node = view.node_named(pool.host)
            no = a.detail["no"]
            netns = names.volume_netns(no)
            view.plan_of(plans, a).volumes.append(planning.Volume(
                name=names.volume(no), host=pool.host, pool=pool.path,
                segment=view.segment(a), owner=a.reservation_id, tenant=tenant.name, nic=names.volume_nic(no),
                l0=view.l0(node) if node is not None else None, size_gb=a.gb, keep=a.detail["keep"],
                netns=netns, address=item.get("export_address"),
                vlan=view.mgmt_vlan(tenant)))
