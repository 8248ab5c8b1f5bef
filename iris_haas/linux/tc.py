"""Traffic control (tc htb) through pyroute2, with requests built by pure functions.

Three uses (paper §4.5 for the first two):

* the egress limit of an L1 port: an htb qdisc on the L1's end of its veth, one class with
  ``rate = ceil = limit``. The qdisc sits where the L1's packets are made, so TCP feels the
  backpressure of the queue and goodput stays close to the limit instead of collapsing into drops.
* the per-tenant limit on the inter-DC tunnel: an htb qdisc on the HaaS gateway's uplink with one
  class per tenant, chosen by a u32 filter on the outer destination address (the tenant's IaaS
  gateway). Traffic matching no filter is sent unshaped (htb ``default 0``). The uplink belongs to
  an OVS bridge, so its OVS ``Port`` carries a ``linux-noop`` QoS: without it OVS deletes any
  qdisc it did not make itself (observed with OVS 3.1).
* a wire between two links of one namespace: every frame received on one is sent out of the
  other (an ``ingress`` qdisc with a match-all u32 filter and a ``mirred`` redirect, each way).
  A kvm L1's tap is wired so to the L1's end of its veth, so what the guest sends leaves through
  that end's egress, where the port limit shapes it as for every other L1 (:func:`wire`).

``*_requests`` functions return :class:`TcReq` lists that a test can read without root;
:func:`execute` sends them. htb counts whole frames, so iperf3's TCP goodput is the limit times
payload/frame (about 0.96 for 1500-byte frames, 0.93 through GRE).
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from iris_haas.linux.netlink import NetlinkFailed, ipr, link_index

ROOT = 0x10000  # "1:"
PORT_CLASS = 0x10010  # "1:10"
INGRESS = 0xFFFF0000  # "ffff:"
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


@dataclass(frozen=True)
class TcReq:
    command: str
    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        k = self.kwargs
        out = f"{self.command} {self.kind}"
        if "handle" in k:
            out += f" {u32_handle(k['handle']) if self.kind == 'u32' else handle(k['handle'])}"
        if "rate" in k:
            out += f" rate {k['rate'] * 8 / 1_000_000:g}Mbit"
        if "target" in k:
            out += f" -> {handle(k['target'])}"
        return out


def handle(h: int) -> str:
    """A qdisc or class handle as tc(8) writes it: ``1:`` (a qdisc), ``1:10`` (a class)."""
    return f"{h >> 16:x}:{h & 0xFFFF:x}" if h & 0xFFFF else f"{h >> 16:x}:"


def u32_handle(h: int) -> str:
    """A u32 filter handle as tc(8) writes it: ``800::1ab`` (hash table 800, bucket 0, node 1ab)."""
    bucket = (h >> 12) & 0xFF
    return f"{h >> 20:x}:{bucket:x}:{h & 0xFFF:x}" if bucket else f"{h >> 20:x}::{h & 0xFFF:x}"


def _bps(mbit: float) -> int:
    """Rate in bytes per second, as the kernel's htb parameters hold it."""
    return int(mbit * 1_000_000 / 8)


def _burst(mbit: float) -> int:
    # enough for a few ms at the rate (htb's default burst is too small at 100+ Mbit/s with HZ
    # timers, and then TCP never reaches the limit)
    return max(15_000, int(_bps(mbit) * 0.004))


def port_limit_requests(rate_mbit: float) -> list[TcReq]:
    r = _bps(rate_mbit)
    b = _burst(rate_mbit)
    return [
        TcReq("add", "htb", {"handle": ROOT, "default": 0x10}),
        TcReq("replace-class", "htb", {"handle": PORT_CLASS, "parent": ROOT, "rate": r, "ceil": r,
                                       "burst": b, "cburst": b}),
    ]


def clear_requests() -> list[TcReq]:
    return [TcReq("del", "htb", {"handle": ROOT})]


def tenant_class(remote_ip: str) -> int:
    """The htb class (minor) of one tenant on the gateway uplink, derived from its peer's address."""
    return ROOT | (0x100 + int(ipaddress.ip_address(remote_ip)) % 0xFE00)


def uplink_root_requests() -> list[TcReq]:
    # default 0: unclassified traffic (other tenants without a limit, the gateway's own) goes unshaped
    return [TcReq("add", "htb", {"handle": ROOT, "default": 0})]


def tenant_limit_requests(remote_ip: str, rate_mbit: float) -> list[TcReq]:
    cls = tenant_class(remote_ip)
    r = _bps(rate_mbit)
    b = _burst(rate_mbit)
    key = f"0x{int(ipaddress.ip_address(remote_ip)):08x}/0xffffffff+16"  # IPv4 destination
    return [
        TcReq("replace-class", "htb", {"handle": cls, "parent": ROOT, "rate": r, "ceil": r, "burst": b,
                                       "cburst": b}),
        TcReq("replace-filter", "u32", {"parent": ROOT, "prio": 10, "protocol": ETH_P_IP,
                                         "handle": filter_handle(cls), "target": cls, "keys": [key]}),
    ]


def filter_handle(cls: int) -> int:
    """The u32 filter that sends traffic to tenant class ``cls``: 800::<n>, the default hash table,
    node n."""
    return 0x80000000 | (cls & 0xFFF)


def redirect_requests(target_index: int) -> list[TcReq]:
    """Every frame received is sent out of link ``target_index`` (u32 matching every frame: this
    kernel has no ``matchall``)."""
    return [
        TcReq("add", "ingress", {"handle": INGRESS}),
        TcReq("replace-filter", "u32", {"parent": INGRESS, "prio": 1, "protocol": ETH_P_ALL,
                                         "handle": filter_handle(1), "target": 0, "keys": ["0x0/0x0+0"],
                                         "action": {"kind": "mirred", "direction": "egress",
                                                    "action": "redirect", "ifindex": target_index}}),
    ]


def wire(ns: str | None, a: str, b: str) -> None:
    """Wire links ``a`` and ``b`` of namespace ``ns`` back to back (idempotent: the filters are
    replaced, so a link made again is wired to the new index)."""
    with ipr(ns) as h:
        ia, ib = link_index(h, a), link_index(h, b)
    if ia is None or ib is None:
        raise NetlinkFailed(f"tc: cannot wire {a} and {b} in {ns or 'host'}: missing")
    execute(ns, a, redirect_requests(ib))
    execute(ns, b, redirect_requests(ia))


def redirect_target(ns: str | None, ifname: str) -> int | None:
    """The ifindex the link's ingress redirects to (None: no redirect)."""
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            return None
        for f in h.get_filters(index=idx, parent=INGRESS):
            opts = f.get_attr("TCA_OPTIONS")
            acts = opts.get_attr("TCA_U32_ACT") if opts else None
            for _, act in (acts or {}).get("attrs", []):
                if act.get_attr("TCA_ACT_KIND") == "mirred":
                    parms = act.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
                    return int(parms["ifindex"])
    return None


# Removing one tenant's class: pyroute2 0.9.7 cannot encode a u32 ``del-filter`` (it builds htb
# rate tables for it and fails), and htb refuses to delete a class a filter points to; so the
# reconciler clears the uplink's root qdisc and re-adds the remaining tenants' classes.


_TOLERATED = {
    # the root htb is added once and then kept: classes are replaced, not the qdisc
    "add": (errno.EEXIST,),
    "del": (errno.ENOENT, errno.EINVAL, errno.ENODEV),
    "del-class": (errno.ENOENT, errno.EINVAL, errno.ENODEV),
    "del-filter": (errno.ENOENT, errno.EINVAL, errno.ENODEV),
}


def execute(ns: str | None, ifname: str, reqs: list[TcReq]) -> None:
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            raise NetlinkFailed(f"tc: no link {ifname} in {ns or 'host'}")
        for q in reqs:
            try:
                h.tc(q.command, kind=q.kind, index=idx, **q.kwargs)
            except NetlinkError as e:
                if e.code in _TOLERATED.get(q.command, ()):
                    continue
                raise NetlinkFailed(f"tc {q.command} {q.kind} on {ifname}: {e}") from e


def htb_rates(ns: str | None, ifname: str) -> dict[int, float]:
    """class handle -> rate in Mbit/s of the htb classes on a link (empty if no htb)."""
    out: dict[int, float] = {}
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            return out
        if not any(q.get_attr("TCA_KIND") == "htb" and q["handle"] == ROOT for q in h.get_qdiscs(index=idx)):
            return out
        for c in h.get_classes(index=idx):
            if c.get_attr("TCA_KIND") != "htb":
                continue
            opts = c.get_attr("TCA_OPTIONS")
            parms = opts.get_attr("TCA_HTB_PARMS") if opts else None
            if parms is None:
                continue
            rate = parms["rate"]
            rate64 = opts.get_attr("TCA_HTB_RATE64")
            if rate64:
                rate = rate64
            out[c["handle"]] = round(rate * 8 / 1_000_000, 3)
    return out




@dataclass(frozen=True)
class ClassStats:
    """What one htb class has sent (bytes, packets) and dropped, since the class was made."""

    bytes: int
    packets: int
    drops: int


def class_stats(ns: str | None, ifname: str) -> dict[int, ClassStats]:
    """class handle -> counters of the htb classes on a link (empty if no link or no htb): the
    kernel's own (``TCA_STATS2``, as ``tc -s class show`` prints them)."""
    out: dict[int, ClassStats] = {}
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            return out
        for c in h.get_classes(index=idx):
            if c.get_attr("TCA_KIND") != "htb":
                continue
            st = c.get_attr("TCA_STATS2")
            basic = st.get_attr("TCA_STATS_BASIC") if st else None
            queue = st.get_attr("TCA_STATS_QUEUE") if st else None
            if basic is None or queue is None:
                continue
            out[c["handle"]] = ClassStats(int(basic["bytes"]), int(basic["packets"]), int(queue["drops"]))
    return out
