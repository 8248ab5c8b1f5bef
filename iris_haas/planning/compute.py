"""The compute decision: each L1 of its kind and flavor on its L0, with one NIC on its segment
(wired as a port op is, see :meth:`iris_haas.contract.ops.L1Op.port_op`) and, when it has one,
the egress limit of that NIC."""

from __future__ import annotations

from iris_haas.contract.ops import L1Op, Op, ShapeOp
from iris_haas.planning.model import Tenant


def plan(t: Tenant) -> list[tuple[str, Op]]:
    out: list[tuple[str, Op]] = []
    for x in t.l1s:
        l0if, l1if = x.ifnames
        out.append((x.l0.host, L1Op(kind=x.kind, name=x.name, bridge=x.segment.bridge, port=l0if, l1_ifname=l1if,
                                    netns=x.netns or x.name, vlan=x.vlan, trunk=x.trunk, mac=x.mac,
                                    address=x.address, gateway=x.gateway, cpus=x.cpus, memory_mb=x.memory_mb,
                                    disk_gb=x.disk_gb, ssh_key=x.ssh_key, image=x.image, owner=x.owner, tenant=t.name)))
        if x.rate_mbit:
            out.append((x.l0.host, ShapeOp(port=l0if, rate_mbit=x.rate_mbit, owner=x.owner, tenant=t.name)))
    return out
