"""Gateway configuration (the paper's figure 5), as ops and as commands a person can read.

One OVS bridge on each side holds the DC's trunk uplink and one GRE port to the other gateway.
The GRE port has no tag and no trunks, so every VLAN 1-4094 crosses with its 802.1Q tag inside
GRE: the IaaS may pick guest VLAN IDs at run time without telling anyone.

Over an NSI circuit (``circuit_vlan``: the VLAN the provider chose, in the reservation's
``resources``) the GRE runs between the circuit's two ends instead of the public addresses: the
gateway holds the circuit's end (a bridge with the IaaS end's address, patched to the bridge of
its WAN NIC as an access port on the circuit's VLAN), and the tunnel leaves tagged into the
circuit. The WAN NIC must then be a port of an OVS bridge.

:func:`iaas_gateway_ops` is the IaaS side as an op list (what ``iris agent run --desired`` applies);
:func:`iaas_gateway_script` renders the same configuration as shell commands for an operator to
read and paste: the OVSDB rows the reconciler would write on an empty gateway
(:func:`iris_haas.hostd.reconciler.ovsdb_changes`) as one ``ovs-vsctl`` transaction, and the
same tc classes and filters (:mod:`iris_haas.linux.tc`).
"""

from __future__ import annotations

from dataclasses import dataclass

from iris_haas.contract import names
from iris_haas.contract.ops import (
    BridgeOp,
    CircuitOp,
    DesiredState,
    PortOp,
    TunnelLimitOp,
    TunnelOp,
    circuit_ends,
    gre_overhead,
)
from iris_haas.hostd.context import HostConfig
from iris_haas.hostd.reconciler import Wanted, circuit_rows, ovsdb_changes
from iris_haas.linux import ovs, tc
from iris_haas.linux.ovsdb import OvsState


@dataclass(frozen=True)
class GatewaySpec:
    tenant: str
    haas_gateway_ip: str  # the HaaS gateway's public (underlay) address
    key: int
    trunk_port: str  # the IaaS gateway's NIC towards its DC's switches (carries every VLAN)
    wan_port: str | None = None  # the NIC towards the internet (for the MTU note)
    bridge: str = "br-int"
    tunnel: str = "gre-haas"
    rate_mbit: float | None = None  # optional limit for IaaS -> HaaS traffic
    local_ip: str | None = None
    datapath_type: str = "system"
    circuit_vlan: int | None = None  # the trunk runs in this NSI circuit (needs wan_port)


def iaas_gateway_ops(g: GatewaySpec) -> DesiredState:
    owner = f"gateway:{g.tenant}"
    remote, local = g.haas_gateway_ip, g.local_ip
    ops: list = [
        BridgeOp(name=g.bridge, owner=owner, tenant=g.tenant, datapath_type=g.datapath_type),  # type: ignore[arg-type]
        PortOp(bridge=g.bridge, name=g.trunk_port, owner=owner, tenant=g.tenant),
    ]
    if g.circuit_vlan is not None:
        if not g.wan_port:
            raise ValueError("a trunk over an NSI circuit needs the WAN NIC (wan_port)")
        haas, iaas = circuit_ends(g.circuit_vlan)
        remote, local = haas.split("/")[0], iaas.split("/")[0]
        ops.append(CircuitOp(name=names.circuit_bridge(g.circuit_vlan), uplink=g.wan_port, vlan=g.circuit_vlan,
                             address=iaas, owner=owner, tenant=g.tenant))
    ops.append(TunnelOp(bridge=g.bridge, name=g.tunnel, remote_ip=remote, key=g.key, local_ip=local,
                        mesh=False, owner=owner, tenant=g.tenant))
    if g.rate_mbit and g.wan_port and g.circuit_vlan is None:
        ops.append(TunnelLimitOp(uplink=g.wan_port, remote_ip=g.haas_gateway_ip, rate_mbit=g.rate_mbit,
                                 owner=owner, tenant=g.tenant))
    return DesiredState(ops=ops)


def iaas_gateway_script(g: GatewaySpec, db: str = "unix:/var/run/openvswitch/db.sock") -> str:
    owner = f"gateway:{g.tenant}"
    ops, cfg = iaas_gateway_ops(g).ops, HostConfig(db=db, datapath_type=g.datapath_type)
    rows = ovsdb_changes(Wanted.of(ops), OvsState(), cfg)
    c = ovs.txn(db, *[s for row in rows for s in row.vsctl()])
    ovh = gre_overhead(True)
    lines = [
        "#!/bin/sh",
        f"# Iris: IaaS gateway for tenant {g.tenant!r} (paper figure 5). Run once, as root, on the gateway.",
        "# One bridge holds the DC trunk and one GRE tunnel to the HaaS gateway; the tunnel carries",
        "# every VLAN (1-4094), so guest VLANs need no further change here.",
        "set -e",
        "# one OVSDB transaction:",
        " \\\n    ".join(_split(str(c))),
        "",
        f"# MTU: GRE with a key plus the 802.1Q tag adds {ovh} bytes. Either the path to the HaaS",
        f"# gateway carries {1500 + ovh}-byte packets (set the WAN NIC's MTU to at least {1500 + ovh}),",
        f"# or every host on the trunked VLANs uses MTU {1500 - ovh} (OVS does not fragment GRE).",
    ]
    if g.wan_port:
        lines.append(f"ip link set dev {g.wan_port} mtu {1500 + ovh}")
    for circuit in (o for o in ops if isinstance(o, CircuitOp)):
        lines += _circuit_lines(circuit, cfg)
    lines += [
        "# Hosts whose traffic crosses an OVS *userspace* datapath (DPDK / netdev) must turn TX",
        "# checksum offload off (ethtool -K IF tx off); with the kernel datapath nothing is needed.",
    ]
    if g.rate_mbit and g.wan_port:
        lines.append(f"# IaaS -> HaaS limit: {g.rate_mbit} Mbit/s towards {g.haas_gateway_ip} (tc htb on {g.wan_port}):")
        cls = tc.tenant_class(g.haas_gateway_ip)
        classid, root = tc.handle(cls), tc.handle(tc.ROOT)
        fh = tc.u32_handle(tc.filter_handle(cls))
        noop = ovs.txn(db, *ovs.NoopQos(g.wan_port, {names.OWNER: owner}).vsctl())
        lines += [
            "# (only if the WAN NIC is itself an OVS port: then OVS must be told to leave its qdisc alone)",
            f"if ovs-vsctl --db={db} port-to-br {g.wan_port} >/dev/null 2>&1 && "
            f"[ -z \"$(ovs-vsctl --db={db} get Port {g.wan_port} qos | tr -d '[]')\" ]; then",
            f"  {noop}",
            "fi",
            "# (htb cannot be 'replaced' in place on this kernel: add the root qdisc once)",
            f"tc qdisc show dev {g.wan_port} | grep -q 'htb {root} root' || "
            f"tc qdisc add dev {g.wan_port} root handle {root} htb default 0",
            f"tc class replace dev {g.wan_port} parent {root} classid {classid} htb rate {g.rate_mbit}mbit",
            f"tc filter replace dev {g.wan_port} parent {root} protocol ip prio 10 handle {fh} u32 match ip dst "
            f"{g.haas_gateway_ip}/32 flowid {classid}",
        ]
    return "\n".join(lines) + "\n"


_UPLINK_BRIDGE = "IRISUPLINKBRIDGE"  # stands for the bridge of the WAN NIC, found when the script runs


def _circuit_lines(c: CircuitOp, cfg: HostConfig) -> list[str]:
    """The circuit's end: the patch port on the WAN NIC's bridge (found at run time), and the
    circuit's address on its bridge's own device (the transaction above made the bridge)."""
    patch = circuit_rows(c, cfg, _UPLINK_BRIDGE)[-1]  # the patch on the uplink's bridge
    txn = str(ovs.txn(cfg.db, *patch.vsctl())).replace(_UPLINK_BRIDGE, '"$uplink_bridge"')
    return [
        f"# NSI circuit on VLAN {c.vlan}: the tunnel runs between the circuit's ends ({c.address} here);",
        f"# its end is patched, as an access port on VLAN {c.vlan}, to the bridge of {c.uplink}:",
        f"uplink_bridge=$(ovs-vsctl --db={cfg.db} port-to-br {c.uplink})",
        txn,
        f"ip link set dev {c.name} up",
        f"ip address replace {c.address} dev {c.name}",
    ]


def _split(command: str) -> list[str]:
    # one line per OVSDB sub-command, for a reader
    parts = command.split(" -- ")
    return [parts[0]] + ["-- " + p for p in parts[1:]]


