"""Gratuitous ARP: tell an L2 segment that an address is now at this interface's MAC.

What a host sends when an address comes up (an L1's management address, an NFS export made
again, a user VM after a migration): an ARP request with sender = target = the address, to
broadcast. Every switch on the path learns the new port at once and every neighbour that knew the
address under another MAC updates its cache, instead of probing the old MAC for seconds. Sent
from a raw packet socket, so no tool and no process is needed.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

from iris_haas.linux import netlink as nl
from iris_haas.linux.netns import socket_in_netns

ETH_P_ARP = 0x0806


def frame(mac: str, ip: str) -> bytes:
    """The Ethernet frame of a gratuitous ARP request for ``ip`` from ``mac``."""
    m = bytes.fromhex(mac.replace(":", ""))
    a = ipaddress.IPv4Address(ip).packed
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + m + a + b"\x00" * 6 + a
    return b"\xff" * 6 + m + struct.pack("!H", ETH_P_ARP) + arp


def announce(ns: str | None, ifname: str, ip: str, count: int = 1, interval: float = 0.1) -> bool:
    """Send ``count`` gratuitous ARPs for ``ip`` (an address, or an address/prefix) out of
    ``ifname`` in namespace ``ns``. An announcement is a courtesy (neighbours ask by ARP anyway),
    so a link that is gone or down is no error: returns whether the frames went out."""
    mac = (nl.links(ns).get(ifname) or {}).get("address")
    if not mac:
        return False
    data = frame(mac, ip.split("/")[0])
    s = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW) if ns else socket.socket(
        socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        for i in range(count):
            if i:
                time.sleep(interval)
            s.send(data)
    except OSError:
        return False
    finally:
        s.close()
    return True
