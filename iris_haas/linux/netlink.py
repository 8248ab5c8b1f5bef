"""Netlink driver (pyroute2): namespaces, veth pairs, addresses, MTU, link state.

pyroute2's habits: verbs named after iproute2, a context manager for every handle, idempotent
create (EEXIST tolerated, then the result checked) and tolerant delete (ENODEV/ENOENT ignored).
Nothing here parses ``ip`` output.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as _netns
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from iris_haas.contract.errors import IrisError
from iris_haas.linux.netns import NETNS_DIR, socket_in_netns
from iris_haas.linux.runner import Cmd, cmd


class NetlinkFailed(IrisError):
    status, type = 500, "NetlinkFailed"


@contextmanager
def ipr(ns: str | None = None) -> Iterator[IPRoute]:
    """A netlink handle, in namespace ``ns`` if given. Its socket is made by a thread that enters
    the namespace (:func:`socket_in_netns`), not by pyroute2's own ``netns=``, which forks a child
    process for each handle: 17 ms and a fork of the agent each time, 0.7 ms this way."""
    sock = socket_in_netns(ns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE) if ns else None
    with (IPRoute(fileno=sock.detach()) if sock else IPRoute()) as h:
        yield h


def netns_exists(name: str) -> bool:
    return os.path.exists(f"{NETNS_DIR}/{name}")


def list_netns(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def ensure_netns(name: str) -> bool:
    """Create a named namespace (bind-mounted in /run/netns, like ``ip netns add``); True if created."""
    if netns_exists(name):
        return False
    try:
        _netns.create(name)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
        return False
    with ipr(name) as h:  # loopback up: ping to self, and sockets on 127.0.0.1, work as on a host
        idx = h.link_lookup(ifname="lo")
        if idx:
            h.link("set", index=idx[0], state="up")
    return True


def delete_netns(name: str) -> None:
    """Remove a namespace; tolerant of it being gone. Links inside die with it."""
    try:
        _netns.remove(name)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            raise


def netns_sysctl_cmds(ns: str, router: bool = False) -> Cmd:
    """Quiet, host-like defaults for a fresh namespace: no IPv6 chatter (so packet counts in tests
    mean something), answer ARP only for addresses on the asking interface (so a frame that
    reaches a bridge's internal port cannot learn the node's other addresses)."""
    kv = {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        "net.ipv4.conf.all.arp_ignore": "1",
        "net.ipv4.conf.default.arp_ignore": "1",
        "net.ipv4.ip_forward": "1" if router else "0",
    }
    return cmd("sysctl", "-q", "-w", *[f"{k}={v}" for k, v in kv.items()], netns=ns)


def link_index(h: IPRoute, ifname: str) -> int | None:
    idx = h.link_lookup(ifname=ifname)
    return idx[0] if idx else None


def link_exists(ns: str | None, ifname: str) -> bool:
    with ipr(ns) as h:
        return link_index(h, ifname) is not None


def ensure_veth(a: str, a_ns: str | None, b: str, b_ns: str | None, *, mtu: int | None = None,
                up: bool = True) -> bool:
    """A veth pair with end ``a`` in ``a_ns`` and end ``b`` in ``b_ns``; True if created.

    Both ends are created directly in their namespaces, so nothing ever appears in the host's
    own namespace. If only one end survives (the other namespace was deleted), it is recreated.
    """
    created = False
    with ipr(a_ns) as h:
        idx = link_index(h, a)
        if idx is not None and not link_exists(b_ns, b):
            h.link("del", index=idx)
            idx = None
        if idx is None:
            peer: dict[str, str] = {"ifname": b}
            if b_ns != a_ns:
                peer["net_ns_fd"] = f"{NETNS_DIR}/{b_ns}" if b_ns else "/proc/1/ns/net"
            try:
                h.link("add", ifname=a, kind="veth", peer=peer)
                created = True
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise NetlinkFailed(f"veth {a}/{b}: {e}") from e
            idx = link_index(h, a)
        if idx is None:
            raise NetlinkFailed(f"veth {a} not visible after create")
        kw: dict[str, str | int] = {"state": "up"} if up else {}
        if mtu:
            kw["mtu"] = mtu
        if kw:
            h.link("set", index=idx, **kw)
    if mtu or up:
        set_link(b_ns, b, mtu=mtu, up=up)
    return created


def set_link(ns: str | None, ifname: str, *, mtu: int | None = None, up: bool | None = None,
             address: str | None = None) -> None:
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            raise NetlinkFailed(f"no link {ifname} in {ns or 'host'}")
        kw: dict[str, str | int] = {}
        if mtu:
            kw["mtu"] = mtu
        if address:
            kw["address"] = address
        if up is not None:
            kw["state"] = "up" if up else "down"
        if kw:
            h.link("set", index=idx, **kw)


def delete_link(ns: str | None, ifname: str) -> None:
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            return
        try:
            h.link("del", index=idx)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise


def ensure_addr(ns: str | None, ifname: str, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            raise NetlinkFailed(f"no link {ifname} in {ns or 'host'}")
        try:
            h.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


def ensure_route(ns: str | None, dst: str, gateway: str) -> None:
    with ipr(ns) as h:
        try:
            h.route("add", dst=dst, gateway=gateway)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


def addresses(ns: str | None, ifname: str) -> list[str]:
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            return []
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in h.get_addr(index=idx)]


def links(ns: str | None) -> dict[str, dict[str, Any]]:
    """name -> {index, mtu, up, kind, address, rx/tx packets and bytes} for every link in the namespace."""
    out = {}
    with ipr(ns) as h:
        for ln in h.get_links():
            info = ln.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            st = ln.get_attr("IFLA_STATS64")
            out[ln.get_attr("IFLA_IFNAME")] = {
                "index": ln["index"],
                "mtu": ln.get_attr("IFLA_MTU"),
                "up": bool(ln["flags"] & 1),
                "kind": kind,
                "address": ln.get_attr("IFLA_ADDRESS"),
                "rx_packets": st["rx_packets"] if st else 0,
                "tx_packets": st["tx_packets"] if st else 0,
                "rx_bytes": st["rx_bytes"] if st else 0,
                "tx_bytes": st["tx_bytes"] if st else 0,
            }
    return out


def link_with_address(ns: str | None, ip: str) -> str | None:
    """The link that holds address ``ip`` in the namespace, if one does."""
    for dev in links(ns):
        if any(a.split("/")[0] == ip for a in addresses(ns, dev)):
            return dev
    return None


def tx_offload_off_cmd(ns: str | None, ifname: str) -> Cmd:
    """OVS's userspace datapath does not complete partial checksums: a packet a host hands to it
    with the checksum left to the NIC leaves it with the checksum still unfinished, so a host
    behind it must compute its own. With TX checksum offload off, TSO goes off too."""
    return cmd("ethtool", "-K", ifname, "tx", "off", netns=ns)


def flush_neighbours(ns: str | None, ifname: str) -> None:
    """Forget the ARP cache of one link (so a quiet host stays quiet: no reachability probes)."""
    with ipr(ns) as h:
        idx = link_index(h, ifname)
        if idx is None:
            return
        for n in h.get_neighbours(ifindex=idx):
            dst = n.get_attr("NDA_DST")
            if dst is None:
                continue
            try:
                h.neigh("del", ifindex=idx, dst=dst)
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.ESRCH):
                    raise
