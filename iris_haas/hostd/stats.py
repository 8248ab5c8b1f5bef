"""What a host has used and carried, read when an agent is scraped (its ``/metrics``).

:func:`measure` reads, for the objects of the desired state only (so what it reports is bounded by
what the coordinator placed here, and named as the coordinator named it):

* each L1's cgroup (:func:`iris_haas.linux.cgroup.usage`): lxc and kvm L1s both have one named
  after the L1's namespace; a netns L1 has none;
* each port's and tunnel's OVS ``Interface`` statistics, in one ``select`` on a connection of its
  own (:func:`iris_haas.linux.ovsdb.interface_statistics`), as the switch sees them: an L1 port's
  ``rx`` is what the L1 sent;
* each htb class Iris made (:func:`iris_haas.linux.tc.class_stats`): the egress limit on an L1's
  end of its NIC, the per-tenant limits on a gateway's uplink;
* each export's bytes, as its server's NIC counts them in the export's namespace (nfs-ganesha keeps
  its own counters behind D-Bus, not a file or netlink; the NIC carries nothing but the export).

It takes no lock and writes nothing: a reconcile pass may be making or removing an L1 at the same
moment, so whatever is not there (yet, or any more) is left out and the rest is reported, and a
source that fails as a whole (the OVSDB server down) is named in :attr:`HostStats.errors`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from iris_haas.contract import names
from iris_haas.contract.ops import DesiredState, L1Op, Op, PortOp, ShapeOp, TunnelLimitOp, TunnelOp, VolumeOp
from iris_haas.contract.types import L1Kind
from iris_haas.hostd.context import Context
from iris_haas.hostd.l1.base import nic
from iris_haas.linux import cgroup, ovsdb, tc
from iris_haas.linux import netlink as nl

COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_dropped", "tx_dropped")


@dataclass(frozen=True)
class PortCounters:
    """One OVS interface's counters since it was made (OVS's ``statistics`` keys)."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0

    @classmethod
    def of(cls, statistics: Mapping[str, int]) -> PortCounters:
        return cls(**{k: int(statistics.get(k, 0)) for k in COUNTERS})


@dataclass
class HostStats:
    l1s: dict[str, cgroup.Usage] = field(default_factory=dict)  # L1 name -> its cgroup's usage
    ports: dict[str, PortCounters] = field(default_factory=dict)  # port or tunnel name -> counters
    classes: dict[tuple[str, int], tc.ClassStats] = field(default_factory=dict)  # (port or uplink, class)
    exports: dict[str, tuple[int, int]] = field(default_factory=dict)  # volume -> its server NIC's (rx, tx) bytes
    errors: list[str] = field(default_factory=list)  # sources that could not be read at all


def l1_ends(ops: Sequence[Op]) -> dict[str, tuple[str, str]]:
    """Port name -> (namespace, interface) of the L1 end of every veth NIC of the ops (an L1's,
    an export's)."""
    out: dict[str, tuple[str, str]] = {}
    for o in ops:
        if isinstance(o, L1Op) and o.netns:
            out[o.port] = (o.netns, nic(o))
        elif isinstance(o, PortOp) and o.l1_netns:
            out[o.name] = (o.l1_netns, o.l1_ifname or names.l1_port(o.name)[1])
    return out


def port_names(ops: Sequence[Op]) -> list[str]:
    """Every OVS port of the ops: ports, tunnels and the L1s' NICs."""
    out = [o.name for o in ops if isinstance(o, PortOp | TunnelOp)]
    return out + [o.port for o in ops if isinstance(o, L1Op)]


def _classes(ns: str | None, ifname: str) -> dict[int, tc.ClassStats]:
    try:
        return tc.class_stats(ns, ifname)
    except (nl.NetlinkFailed, NetlinkError, OSError):  # the namespace or link went meanwhile
        return {}


def _export_bytes(ns: str, ip: str) -> tuple[int, int] | None:
    """The bytes received and sent by the link that holds an export's server address: what its
    clients wrote and read, with the protocol's own overhead (the server's only traffic)."""
    try:
        if not nl.netns_exists(ns):
            return None
        dev = nl.link_with_address(ns, ip)
        ln = nl.links(ns).get(dev) if dev is not None else None  # (None: it went meanwhile)
        if ln is not None:
            return ln["rx_bytes"], ln["tx_bytes"]
    except (nl.NetlinkFailed, NetlinkError, OSError):  # the namespace went meanwhile
        pass
    return None


def measure(desired: DesiredState, ctx: Context) -> HostStats:
    out = HostStats()
    for o in desired.ops:
        if isinstance(o, L1Op) and o.kind != L1Kind.NETNS and o.netns:
            use = cgroup.usage(o.netns)
            if use is not None:
                out.l1s[o.name] = use
    try:
        stats = ovsdb.interface_statistics(ctx.cfg.db)
    except ovsdb.OvsdbFailed as e:
        out.errors.append(str(e))
        stats = {}
    for name in port_names(desired.ops):
        if name in stats:
            out.ports[name] = PortCounters.of(stats[name])
    ends = l1_ends(desired.ops)
    for s in (o for o in desired.ops if isinstance(o, ShapeOp)):
        end = ends.get(s.port)
        if end is None or not nl.netns_exists(end[0]):
            continue
        cls = _classes(*end).get(tc.PORT_CLASS)
        if cls is not None:
            out.classes[(s.port, tc.PORT_CLASS)] = cls
    for v in (o for o in desired.ops if isinstance(o, VolumeOp)):
        if v.netns and v.address:  # exported
            counters = _export_bytes(v.netns, str(ipaddress.ip_interface(v.address).ip))
            if counters is not None:
                out.exports[v.name] = counters
    limits = [o for o in desired.ops if isinstance(o, TunnelLimitOp)]
    for uplink in sorted({x.uplink for x in limits}):
        have = _classes(ctx.cfg.netns, uplink)
        for x in limits:
            h = tc.tenant_class(x.remote_ip)
            if x.uplink == uplink and h in have:
                out.classes[(uplink, h)] = have[h]
    return out
