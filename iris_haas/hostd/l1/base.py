"""The L1 driver interface, its registry, and the in-memory twin.

An L1 is what HaaS lends: a node that the tenant's IaaS adds as a host. The reconciler
(:mod:`iris_haas.hostd.reconciler`) wires its one NIC (the port op an :class:`~iris_haas.contract.ops.L1Op`
derives) and calls the L1's driver around that wiring:

1. :meth:`L1Driver.prepare` before the NIC is wired (a kvm L1 creates its tap here, so OVS can
   open it in the same transaction as every other port);
2. :meth:`L1Driver.start` after it (an lxc L1 joins the namespace that holds its NIC; a kvm L1
   boots on its tap);
3. :meth:`L1Driver.destroy` when the L1 is no longer wanted, before its NIC is unwired.

Every step is idempotent and every destroy tolerant, so the same desired state applied again
changes nothing, and an apply after a crash half-way finishes the job. Each driver records the
spec an L1 was made from (a JSON file in its state directory); :meth:`L1Driver.list` reports
every L1 it finds with that spec and whether it runs, so the reconciler can tell "there and
right" from "there but different" (recreate) from "there but not wanted" (destroy).

Nothing an L1 driver creates gives the L1 a path to the control network: the only NIC is the
tenant's, and kvm guests get no user-mode network (``-nic none``, the tap only).
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path

from iris_haas.contract.errors import IrisError
from iris_haas.contract.ops import L1Op
from iris_haas.linux.runner import Runner, SubprocessRunner


class L1Failed(IrisError):
    status, type = 500, "L1Failed"


# udhcpc's event script (busybox): the L1's own DHCP client configuring its own NIC
DHCP_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) busybox ip -4 addr flush dev "$interface" ;;
  bound|renew)
    busybox ip -4 addr flush dev "$interface"
    busybox ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && busybox ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"""


def processes_in_netns(ns: str) -> list[int]:
    """PIDs of the processes inside network namespace ``ns`` (compared by inode)."""
    try:
        ino = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                    out.append(int(d))
            except OSError:
                pass
    return out


def stop_processes_in_netns(ns: str) -> None:
    """Destroying an L1 stops whatever runs on it (the IaaS's own software included), by PID."""
    from iris_haas.linux.ovs import kill_pid

    for pid in processes_in_netns(ns):
        kill_pid(pid)


def garp_frame(mac: str, ip: str) -> bytes:
    """A gratuitous ARP request (sender = target = ``ip``), broadcast: what a host sends when an
    address comes up, so neighbours that knew the address under another MAC update at once."""
    import ipaddress
    import struct

    m = bytes.fromhex(mac.replace(":", ""))
    a = ipaddress.IPv4Address(ip).packed
    return b"\xff" * 6 + m + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + m + a + b"\x00" * 6 + a


def announce(ns: str, ifname: str, cidr: str) -> None:
    """Send one gratuitous ARP for ``cidr``'s address out of ``ifname`` in namespace ``ns``."""
    import socket

    from iris_haas.agent.client import socket_in_netns
    from iris_haas.linux import netlink as nl

    mac = (nl.links(ns).get(ifname) or {}).get("address")
    if not mac:
        return
    s = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        s.send(garp_frame(mac, cidr.split("/")[0]))
    except OSError:
        pass  # an announcement is a courtesy; the L1 answers ARP anyway
    finally:
        s.close()


def spec_of(op: L1Op) -> dict:
    """What an L1 was made from: everything but owner bookkeeping."""
    return op.model_dump(mode="json")


class L1Driver(abc.ABC):
    """One kind of L1 on one L0. ``state_dir`` is private to the driver (spec files, rootfs,
    pidfiles); ``host_netns`` is the L0's own namespace (None: the one this process runs in)."""

    kind: str = ""

    def __init__(self, state_dir: str | Path, runner: Runner | None = None, host_netns: str | None = None):
        self.dir = Path(state_dir) / self.kind
        self.runner = runner or SubprocessRunner()
        self.host_netns = host_netns

    # ---- spec files
    def _spec_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _save_spec(self, op: L1Op) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._spec_path(op.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(spec_of(op)))
        os.replace(tmp, self._spec_path(op.name))

    def _load_spec(self, name: str) -> dict | None:
        try:
            return json.loads(self._spec_path(name).read_text())
        except (OSError, ValueError):
            return None

    def _drop_spec(self, name: str) -> None:
        try:
            self._spec_path(name).unlink()
        except FileNotFoundError:
            pass

    def names(self) -> list[str]:
        try:
            return sorted(p.stem for p in self.dir.glob("*.json"))
        except OSError:
            return []

    # ---- the interface
    def list(self) -> dict[str, dict]:
        """name -> {kind, spec, running} for every L1 of this kind on this host."""
        return {n: {"kind": self.kind, "spec": self._load_spec(n), "running": self.running(n)} for n in self.names()}

    def matches(self, op: L1Op, info: dict | None) -> bool:
        return bool(info) and info.get("running") and info.get("spec") == spec_of(op)

    @abc.abstractmethod
    def running(self, name: str) -> bool: ...

    def prepare(self, op: L1Op) -> None:
        """Before the NIC is wired. Default: nothing."""

    @abc.abstractmethod
    def start(self, op: L1Op) -> None:
        """Make the L1 exist and run, on its wired NIC; idempotent. Records its spec last, so an
        L1 that failed half-way is seen as not matching and made again."""

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Stop and remove the L1 and everything it made; tolerant of any part being gone."""

    def start_dhcp(self, op: L1Op) -> None:
        """No management address in the reservation: the L1 asks the IaaS side's DHCP server, as
        a host on the IaaS's management network would (busybox ``udhcpc`` in the L1's namespace,
        kept running to renew; it is stopped with everything else in the L1 at destroy)."""
        if op.address or not op.netns:
            return
        from iris_haas.contract import names
        from iris_haas.linux.runner import cmd

        script = self.dir / "udhcpc.sh"
        if not script.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            script.write_text(DHCP_SCRIPT)
            script.chmod(0o755)
        ifname = op.l1_ifname or names.l1_port(op.port)[1]
        self.runner.spawn(cmd("busybox", "udhcpc", "-f", "-i", ifname, "-s", str(script), "-x", f"hostname:{op.name}",
                              netns=op.netns))

    def set_mac(self, op: L1Op) -> None:
        """The reservation's MAC (if any) on the L1's NIC (netns and lxc kinds: a veth end)."""
        if op.mac and op.netns:
            from iris_haas.contract import names
            from iris_haas.linux import netlink as nl

            ifname = op.l1_ifname or names.l1_port(op.port)[1]
            if (nl.links(op.netns).get(ifname) or {}).get("address") != op.mac:
                nl.set_link(op.netns, ifname, address=op.mac)

    def announce(self, op: L1Op) -> None:
        """Tell the tenant's L2 that the management address is here (a gratuitous ARP), once the
        overlay's tunnels are up, so a neighbour that knew the address under another MAC (an
        earlier L1) does not wait for its ARP entry to time out. A VM's guest does it itself."""
        if op.netns and op.address:
            from iris_haas.contract import names

            announce(op.netns, op.l1_ifname or names.l1_port(op.port)[1], op.address)


class MemoryL1(L1Driver):
    """In-memory twin: records L1s, runs nothing. ``fail`` names L1s whose start fails."""

    def __init__(self, kind: str = "netns", fail: set[str] | None = None):
        self.kind = kind
        self.nodes: dict[str, dict] = {}
        self.fail = set(fail or ())
        self.calls: list[tuple[str, str]] = []

    def list(self) -> dict[str, dict]:
        return {n: {"kind": self.kind, "spec": s, "running": True} for n, s in self.nodes.items()}

    def running(self, name: str) -> bool:
        return name in self.nodes

    def prepare(self, op: L1Op) -> None:
        self.calls.append(("prepare", op.name))

    def start(self, op: L1Op) -> None:
        self.calls.append(("start", op.name))
        if op.name in self.fail:
            raise L1Failed(f"{op.name}: start failed (twin told to fail)")
        self.nodes[op.name] = spec_of(op)

    def announce(self, op: L1Op) -> None:
        self.calls.append(("announce", op.name))

    def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        self.nodes.pop(name, None)


def make_drivers(state_dir: str | Path, runner: Runner | None = None, host_netns: str | None = None,
                 kinds: tuple[str, ...] = ("netns", "lxc", "kvm")) -> dict[str, L1Driver]:
    """The real drivers of the given kinds, sharing one state directory."""
    from iris_haas.hostd.l1.kvm import KvmL1
    from iris_haas.hostd.l1.lxc import LxcL1
    from iris_haas.hostd.l1.netns import NetnsL1

    classes = {"netns": NetnsL1, "lxc": LxcL1, "kvm": KvmL1}
    return {k: classes[k](state_dir, runner, host_netns) for k in kinds}
