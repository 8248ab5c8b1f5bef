"""Traffic probes between the lab's namespaces: ping, arping, TCP connect, iperf3.

Used by the lab tests and the benches. Every probe runs inside a lab namespace and targets an
address inside another lab namespace; nothing leaves the lab.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

from iris_haas.linux.netns import socket_in_netns
from iris_haas.linux.proc import kill_pid
from iris_haas.linux.runner import cmd

_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def ping(ns: str, ip: str, count: int = 3, wait: float = 1.0, interval: float = 0.2) -> int:
    """Number of replies."""
    c = cmd("ping", "-n", "-q", "-c", str(count), "-W", str(wait), "-i", str(interval), ip, netns=ns)
    p = _run(c.full_argv(), timeout=count * (interval + wait) + 5)
    m = re.search(r"(\d+) received", p.stdout)
    return int(m.group(1)) if m else 0


def reachable(ns: str, ip: str, timeout: float = 8.0) -> bool:
    """True as soon as one ping is answered (a fresh path may drop its first packets while
    ARP and OVS's tunnel neighbour cache fill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(ns, ip, count=1, wait=1.0) == 1:
            return True
    return False


def first_reply(ns: str, ip: str, timeout: float, wait: float = 0.2) -> float:
    """Seconds until ``ip`` answers a ping from namespace ``ns``: one echo request at a time,
    each waiting ``wait`` (finer than :func:`reachable`, whose tries wait a second each, for
    timing a guest's boot; one ``ping`` with a short interval would fill the unresolved
    neighbour's queue and give up); TimeoutError after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ping(ns, ip, count=1, wait=wait) == 1:
            return time.monotonic() - t0
    raise TimeoutError(f"{ip} did not answer from {ns} in {timeout}s")


def rtt_ms(ns: str, ip: str, count: int = 20) -> float:
    c = cmd("ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1", ip, netns=ns)
    p = _run(c.full_argv(), timeout=count + 10)
    m = _RTT.search(p.stdout)
    return float(m.group(1)) if m else float("nan")


def arping(ns: str, dev: str, ip: str, count: int = 2, deadline: int | None = None) -> list[str]:
    """MAC addresses that answered ARP requests for ``ip`` sent out ``dev`` (broadcast). Returns
    after ``count`` replies or ``deadline`` seconds."""
    deadline = deadline or count + 1
    c = cmd("arping", "-c", str(count), "-w", str(deadline), "-i", dev, ip, netns=ns, ok=(0, 1))
    p = _run(c.full_argv(), timeout=deadline + 10)
    return sorted(set(m.lower() for m in re.findall(r"from ([0-9a-fA-F:]{17})", p.stdout)))


def tcp_connect(ns: str, ip: str, port: int, timeout: float = 2.0) -> bool:
    code = (f"import socket,sys; s=socket.socket(); s.settimeout({timeout});\n"
            f"try:\n s.connect(('{ip}',{port})); sys.exit(0)\nexcept OSError: sys.exit(1)")
    import sys

    c = cmd(sys.executable, "-c", code, netns=ns, ok=(0, 1))
    return _run(c.full_argv(), timeout=timeout + 10).returncode == 0


class Sniffer:
    """Source and destination MACs of every frame received on one interface of a namespace, while
    active, and each frame's VLAN (None: untagged). The kernel hands a received frame's 802.1Q tag
    apart from its bytes (``PACKET_AUXDATA``); a tag still inside the frame is read there."""

    _SOL_PACKET, _PACKET_AUXDATA, _TP_STATUS_VLAN_VALID = 263, 8, 0x10

    def __init__(self, ns: str, dev: str):
        import socket
        import threading

        self.sock = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.setsockopt(self._SOL_PACKET, self._PACKET_AUXDATA, 1)
        self.sock.bind((dev, 0))
        self.sock.settimeout(0.1)
        self.frames: list[tuple[str, str]] = []  # (src MAC, dst MAC)
        self.vlans: list[int | None] = []  # each frame's VLAN, in the same order
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _vlan(self, data: bytes, ancillary: list) -> int | None:
        import struct

        for level, kind, aux in ancillary:
            if (level, kind) == (self._SOL_PACKET, self._PACKET_AUXDATA) and len(aux) >= 20:
                status, _, _, _, _, tci = struct.unpack_from("IIIHHH", aux)
                if status & self._TP_STATUS_VLAN_VALID:
                    return tci & 0x0FFF
        if data[12:14] in (b"\x81\x00", b"\x88\xa8"):
            return int.from_bytes(data[14:16], "big") & 0x0FFF
        return None

    def _loop(self):
        import socket

        while not self._stop.is_set():
            try:
                data, ancillary, _, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(32))
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            self.vlans.append(self._vlan(data, ancillary))
            self.frames.append((data[6:12].hex(":"), data[0:6].hex(":")))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        time.sleep(0.2)
        self._stop.set()
        self._t.join()
        self.sock.close()


class Iperf3Server:
    """``iperf3 -s`` in a namespace, stopped by its PID."""

    def __init__(self, ns: str, port: int = 5201):
        self.ns, self.port = ns, port
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        c = cmd("iperf3", "-s", "-p", str(self.port), netns=self.ns)
        self.proc = subprocess.Popen(c.full_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            kill_pid(self.proc.pid)
            self.proc.wait()


def iperf3(ns: str, server_ip: str, seconds: float = 3.0, port: int = 5201, reverse: bool = False) -> float:
    """TCP goodput in Mbit/s measured at the receiver (iperf3's sum_received)."""
    argv = ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-J", "-O", "1"]
    if reverse:
        argv.append("-R")
    c = cmd(*argv, netns=ns)
    deadline = time.monotonic() + 10
    while True:
        p = _run(c.full_argv(), timeout=seconds + 20)
        doc = json.loads(p.stdout)
        # a server started a moment ago on a busy machine may not listen yet: try again
        if "error" in doc and "connect" in doc["error"] and time.monotonic() < deadline:
            time.sleep(0.3)
            continue
        break
    if "error" in doc:
        raise RuntimeError(f"iperf3: {doc['error']}")
    return doc["end"]["sum_received"]["bits_per_second"] / 1e6
