"""SRM: volumes in the HaaS site's storage pools."""

from __future__ import annotations

from sqlalchemy import select

from iris_haas.coordinator import calendar
from iris_haas.errors import ReserveFailed
from iris_haas.managers.base import ActiveView, Context, ResourceManager
from iris_haas.store.models import StoragePool


class StorageManager(ResourceManager):
    name, item_kind, resource_kind = "srm", "storage", "pool"

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
        self.hold(ctx, index, pool.id,
                  {"pool": pool.name, "volume": f"iris-{ctx.reservation.id[:8]}-{index}", "keep": item["keep"]},
                  gb=item["size_gb"])

    def desired(self, view: ActiveView):
        # Volumes are realized by the storage driver (docs/storage.md); until the SRM's export op
        # lands, a volume is admitted and accounted for but not exported.
        return []
