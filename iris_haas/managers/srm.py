"""SRM: volumes in the HaaS site's storage pools."""

from __future__ import annotations

from sqlalchemy import select

from iris_haas.contract import names
from iris_haas.contract.errors import ReserveFailed
from iris_haas.contract.ops import PortOp, VolumeOp
from iris_haas.managers.base import ActiveView, Context, Offer, Query, ResourceManager
from iris_haas.store import calendar
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

    def availability(self, q: Query, item: dict) -> Offer:
        pools = q.session.scalars(select(StoragePool).where(StoragePool.site_id == q.site.id))
        return self._offer(q, {p.id: (p.capacity_gb,) for p in pools}, (item["size_gb"],), 1,
                           lambda free: {"storage_free_gb": max((f[0] for f in free.values()), default=None)})

    def desired(self, view: ActiveView):
        """Each volume on its pool's host: an ext4 image of the reserved size (the quota) and,
        when the item gives an export address, an NFS server in a namespace of its own whose only
        NIC is an access port on the tenant's bridge, on the tenant's management/storage VLAN."""
        out = []
        for a in view.of("pool"):
            pool, tenant, item = view.pools[a.resource_id], view.tenant(a), view.item(a)
            if not (pool.host and pool.path):
                continue  # a pool without a serving host is accounted for, not realized
            name = f"iris-{a.reservation_id[:8]}-{a.item}"
            ns = volume_netns(a.reservation_id, a.item)
            address = item.get("export_address")
            if address:
                mgmt_vlan = next((x.mgmt_vlan for x in view.tenant_sites(tenant) if x.mgmt_vlan), None)
                l0if, l1if = names.l1_port(ns)
                out.append((pool.host, PortOp(bridge=view.segment(a).bridge, name=l0if, l1_netns=ns,
                                              l1_ifname=l1if, vlan=mgmt_vlan, address=address,
                                              owner=a.reservation_id, tenant=tenant.name)))
            out.append((pool.host, VolumeOp(name=name, pool=pool.path, size_gb=a.gb, keep=a.detail["keep"],
                                            netns=ns if address else None, address=address,
                                            owner=a.reservation_id, tenant=tenant.name)))
        return out


def volume_netns(reservation_id: str, item: int) -> str:
    return f"irisv{reservation_id[:8]}{item:x}"
