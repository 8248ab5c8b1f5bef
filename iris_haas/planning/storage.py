"""The storage decision: each volume on its pool's host, an ext4 image of the reserved size (the
quota) and, when it is exported, an NFS server in a namespace of its own whose only NIC is an
access port on the tenant's segment (its management/storage VLAN): never another tenant's."""

from __future__ import annotations

from iris_haas.contract import names
from iris_haas.contract.ops import Op, PortOp, VolumeOp
from iris_haas.planning.model import Tenant


def plan(t: Tenant) -> list[tuple[str, Op]]:
    out: list[tuple[str, Op]] = []
    for v in t.volumes:
        netns = v.netns if v.address else None
        if netns:
            l0if, l1if = names.l1_port(v.nic)
            out.append((v.host, PortOp(bridge=v.segment.bridge, name=l0if, l1_netns=netns, l1_ifname=l1if,
                                       vlan=v.vlan, address=v.address, owner=v.owner, tenant=t.name)))
        out.append((v.host, VolumeOp(name=v.name, pool=v.pool, size_gb=v.size_gb, size_mb=v.size_mb, keep=v.keep,
                                     netns=netns, address=v.address if netns else None, owner=v.owner,
                                     tenant=t.name)))
    return out
