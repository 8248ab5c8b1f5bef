"""The host's network and L1 actions: one small frozen dataclass per kind of change.

Links first (the veths OVS will open), then *one* OVSDB transaction for every bridge, port and
tunnel change, then tc, then a warm-up ARP per new tunnel peer; the L1 steps around the wiring.
The order is the plan's (:mod:`iris_haas.hostd.reconciler`); each action only knows how to make
its own change.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from iris_haas.contract import failpoints
from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.hostd.context import Context, HostAction
from iris_haas.hostd.l1 import L1Driver, L1Failed
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, tc
from iris_haas.linux.runner import Cmd, CommandFailed, cmd


def _where(netns: str | None, ifname: str) -> str:
    return f"{netns or 'host'}:{ifname}"


# ---------------------------------------------------------------- links

@dataclass(frozen=True)
class CreateVeth(HostAction):
    """An L1 port's veth: ``port`` in the host's namespace, ``l1_ifname`` in ``l1_netns`` (made if
    missing, with quiet host-like defaults; forwarding on for a router's leg)."""

    port: str
    l1_netns: str
    l1_ifname: str
    mtu: int
    router: bool = False

    def apply(self, ctx: Context) -> None:
        if nl.ensure_netns(self.l1_netns):
            ctx.runner.run(nl.netns_sysctl_cmds(self.l1_netns, router=self.router))
        nl.ensure_veth(self.port, ctx.cfg.netns, self.l1_ifname, self.l1_netns, mtu=self.mtu)
        ctx.runner.run(nl.tx_offload_off_cmd(self.l1_netns, self.l1_ifname))

    def __str__(self) -> str:
        return (f"create veth {self.port} <-> {_where(self.l1_netns, self.l1_ifname)} mtu {self.mtu}"
                + (" (router)" if self.router else ""))


@dataclass(frozen=True)
class SetMtu(HostAction):
    port: str
    l1_netns: str
    l1_ifname: str
    mtu: int

    def apply(self, ctx: Context) -> None:
        nl.set_link(ctx.cfg.netns, self.port, mtu=self.mtu)
        nl.set_link(self.l1_netns, self.l1_ifname, mtu=self.mtu)

    def __str__(self) -> str:
        return f"set mtu {self.mtu} on {self.port} and {_where(self.l1_netns, self.l1_ifname)}"


@dataclass(frozen=True)
class AddAddress(HostAction):
    netns: str
    ifname: str
    cidr: str

    def apply(self, ctx: Context) -> None:
        nl.ensure_addr(self.netns, self.ifname, self.cidr)

    def __str__(self) -> str:
        return f"add address {self.cidr} on {_where(self.netns, self.ifname)}"


@dataclass(frozen=True)
class CircuitUp(HostAction):
    """An NSI circuit's end: its bridge's own device up with the circuit's address (after the
    OVSDB transaction made the bridge)."""

    name: str
    cidr: str

    def apply(self, ctx: Context) -> None:
        nl.set_link(ctx.cfg.netns, self.name, up=True)
        nl.ensure_addr(ctx.cfg.netns, self.name, self.cidr)

    def __str__(self) -> str:
        return f"circuit end {self.name} up with {self.cidr}"


@dataclass(frozen=True)
class CircuitUnplaced(HostAction):
    """A circuit whose uplink is no port of an OVS bridge here: nothing can carry it. Planned
    last, so the rest of the pass applies; the host stays out of sync, saying why."""

    name: str
    uplink: str

    def apply(self, ctx: Context) -> None:
        raise DataPlaneError(f"circuit {self.name}: uplink {self.uplink} is not a port of an OVS bridge on this host")

    def __str__(self) -> str:
        return f"circuit {self.name}: no OVS bridge holds uplink {self.uplink}"


@dataclass(frozen=True)
class DeleteLink(HostAction):
    """A released L1 port's veth, by its end in the host's namespace (the other end goes with it)."""

    name: str

    def apply(self, ctx: Context) -> None:
        nl.delete_link(ctx.cfg.netns, self.name)

    def __str__(self) -> str:
        return f"delete link {self.name}"


@dataclass(frozen=True)
class DeleteNetns(HostAction):
    name: str

    def apply(self, ctx: Context) -> None:
        nl.delete_netns(self.name)

    def __str__(self) -> str:
        return f"delete netns {self.name}"


# ---------------------------------------------------------------- OVSDB, tc

@dataclass(frozen=True)
class OvsdbTransaction(HostAction):
    """Every bridge, port and tunnel change of a pass, in one transaction."""

    changes: tuple[ovs.Change, ...]

    def apply(self, ctx: Context) -> None:
        ctx.ovsdb.apply(self.changes)
        failpoints.hit("agent.after_ovsdb")  # the crash tests: OVSDB changed, the L1s not yet started

    def __str__(self) -> str:
        return "ovsdb: " + "; ".join(str(c) for c in self.changes)


@dataclass(frozen=True)
class TcChange(HostAction):
    netns: str | None
    ifname: str
    requests: tuple[tc.TcReq, ...]

    def apply(self, ctx: Context) -> None:
        tc.execute(self.netns, self.ifname, list(self.requests))

    def __str__(self) -> str:
        return f"tc on {_where(self.netns, self.ifname)}: " + ", ".join(str(r) for r in self.requests)


# ---------------------------------------------------------------- warm-up

def warmup_cmd(ns: str | None, ip: str) -> Cmd | None:
    """One ARP request to a tunnel peer, sent out of the interface the kernel routes it by (None:
    no route, nothing to warm up).

    OVS's userspace tunnels need the peer's MAC in their own neighbour cache, which they fill
    only by snooping ARP *replies* crossing the underlay bridge (or by ARPing themselves, which
    drops the packet that asked). A ping does not always do it: when the peer has ARPed first,
    the kernel already knows the MAC and sends no request. ``arping`` always asks.
    """
    with nl.ipr(ns) as h:
        try:
            oif = h.route("get", dst=ip)[0].get_attr("RTA_OIF")
            dev = h.get_links(oif)[0].get_attr("IFLA_IFNAME")
        except Exception:  # noqa: BLE001 - no route (pyroute2 raises NetlinkError or IndexError)
            return None
    # Thomas Habets' arping (Debian's): -C 1 returns at the first reply
    return cmd("arping", "-q", "-C", "1", "-c", "1", "-w", "1", "-i", dev, ip, netns=ns, ok=(0, 1))


@dataclass(frozen=True)
class WarmUp(HostAction):
    """Teach OVS's userspace tunnel code the MAC of a new tunnel's peer (see :func:`warmup_cmd`).
    Changes nothing on the host; a failure is fine (OVS also ARPs by itself)."""

    parallel = True
    remote_ip: str

    def apply(self, ctx: Context) -> None:
        c = warmup_cmd(ctx.cfg.netns, self.remote_ip)
        if c is not None:
            try:
                ctx.runner.run(c, timeout=5.0)
            except CommandFailed:
                pass

    def __str__(self) -> str:
        return f"warm up the tunnel to {self.remote_ip}"


# ---------------------------------------------------------------- L1 steps

def l1_driver(ctx: Context, kind: L1Kind) -> L1Driver:
    d = ctx.l1_drivers.get(kind)
    if d is None:
        raise L1Failed(f"this host runs no {kind} L1s (no l1_dir configured)")
    return d


class L1Step(HostAction):
    """A step of one L1. The L1s of a host are independent: their steps of one kind run at once."""

    parallel = True

    @property
    @abc.abstractmethod
    def l1(self) -> str:
        """The L1's name."""


@dataclass(frozen=True)
class L1Destroy(L1Step):
    kind: L1Kind
    name: str

    @property
    def l1(self) -> str:
        return self.name

    def apply(self, ctx: Context) -> None:
        l1_driver(ctx, self.kind).destroy(self.name)

    def __str__(self) -> str:
        return f"destroy {self.kind} L1 {self.name}"


@dataclass(frozen=True)
class L1Prepare(L1Step):
    op: L1Op

    @property
    def l1(self) -> str:
        return self.op.name

    def apply(self, ctx: Context) -> None:
        l1_driver(ctx, self.op.kind).prepare(self.op)

    def __str__(self) -> str:
        return f"prepare {self.op.kind} L1 {self.op.name}"


@dataclass(frozen=True)
class L1Start(L1Step):
    """Start an L1 on its wired NIC. Announcing it waits for the end of the pass (after the
    warm-up, so the announcement crosses the new tunnels)."""

    op: L1Op

    @property
    def l1(self) -> str:
        return self.op.name

    def apply(self, ctx: Context) -> None:
        l1_driver(ctx, self.op.kind).start(self.op)

    def __str__(self) -> str:
        return f"start {self.op.kind} L1 {self.op.name}"
