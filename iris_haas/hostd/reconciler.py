"""Reconcile one host to its desired op list (see :mod:`iris_haas.contract.ops`).

Three steps, kept apart so the decision can be read in a test without root:

1. :func:`observe` reads the host: OVS rows, links, qdiscs, L1s, volumes (:class:`Facts`, plain data);
2. :func:`plan` compares desired ops with the facts and returns typed actions (pure), one small
   function per concern: L1s, links, OVSDB, tc, volumes, the warm-up;
3. :func:`execute` applies them in order.

Only objects Iris made are changed or deleted: OVS rows with an ``iris-op`` external id, links
and namespaces named by :mod:`iris_haas.contract.names`. Lab infrastructure (``br-phy`` and its
ports) carries ``iris-owner`` but no ``iris-op`` and is left alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from iris_haas.contract import names
from iris_haas.contract.ops import (
    BridgeOp,
    CircuitOp,
    DesiredState,
    L1Op,
    Op,
    PortOp,
    ShapeOp,
    TunnelLimitOp,
    TunnelOp,
    VolumeOp,
    inner_mtu,
)
from iris_haas.contract.types import L1Kind
from iris_haas.hostd import stats, storage
from iris_haas.hostd.actions import (
    AddAddress,
    CircuitUnplaced,
    CircuitUp,
    CreateVeth,
    DeleteLink,
    DeleteNetns,
    L1Destroy,
    L1Prepare,
    L1Start,
    L1Step,
    OvsdbTransaction,
    SetMtu,
    TcChange,
    WarmUp,
    l1_driver,
)
from iris_haas.hostd.context import Context, HostAction, HostConfig
from iris_haas.hostd.l1 import L1Driver, L1Failed
from iris_haas.hostd.l1.base import matches as l1_matches
from iris_haas.hostd.l1.base import spec_of
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, tc
from iris_haas.linux.ovsdb import OvsState, matches
from iris_haas.linux.runner import Runner

__all__ = ["Facts", "Host", "HostConfig", "Wanted", "execute", "observe", "plan", "report"]

L1_NETNS = "iris-l1-netns"  # external id on a port row: the L1 namespace the port made


@dataclass
class Facts:
    ovs: OvsState
    links: dict[str, dict[str, Any]]
    l1: dict[str, dict[str, Any]] = field(default_factory=dict)  # port name -> {exists, mtu, rate, addrs}
    uplinks: dict[str, dict[int, float]] = field(default_factory=dict)  # uplink -> htb class -> Mbit/s
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # L1 name -> {kind, spec, running, keeps_disk}
    volumes: dict[str, storage.VolumeFacts] = field(default_factory=dict)
    circuits: dict[str, list[str]] = field(default_factory=dict)  # circuit bridge -> its addresses


@dataclass(frozen=True)
class Wanted:
    """The desired ops by kind, an L1's NIC among the ports (it is an ordinary port)."""

    bridges: list[BridgeOp]
    ports: list[PortOp]
    tunnels: list[TunnelOp]
    shapes: dict[str, ShapeOp]  # by port
    limits: list[TunnelLimitOp]
    l1s: list[L1Op]
    volumes: list[VolumeOp]
    circuits: list[CircuitOp] = field(default_factory=list)

    @classmethod
    def of(cls, ops: Sequence[Op]) -> Wanted:
        ops = with_l1_ports(ops)
        return cls(bridges=[o for o in ops if isinstance(o, BridgeOp)],
                   ports=[o for o in ops if isinstance(o, PortOp)],
                   tunnels=[o for o in ops if isinstance(o, TunnelOp)],
                   shapes={o.port: o for o in ops if isinstance(o, ShapeOp)},
                   limits=[o for o in ops if isinstance(o, TunnelLimitOp)],
                   l1s=[o for o in ops if isinstance(o, L1Op)],
                   volumes=[o for o in ops if isinstance(o, VolumeOp)],
                   circuits=[o for o in ops if isinstance(o, CircuitOp)])


def with_l1_ports(ops: Sequence[Op]) -> list[Op]:
    """The op list with the port op of every L1 op added (an L1's NIC is an ordinary port)."""
    return [*ops, *(o.port_op() for o in ops if isinstance(o, L1Op))]


def l1_ifname(p: PortOp) -> str:
    return p.l1_ifname or names.l1_port(p.name)[1]


# ---------------------------------------------------------------- the rows an op wants

def _ids(o: BridgeOp | PortOp | TunnelOp | CircuitOp, **extra: str) -> dict[str, str]:
    d = {names.OWNER: o.owner, names.OP: o.op, names.TENANT: o.tenant}
    d.update({k: v for k, v in extra.items() if v})
    return d


def bridge_row(b: BridgeOp, cfg: HostConfig) -> dict[str, Any]:
    return ovs.bridge_columns(datapath_type=b.datapath_type or cfg.datapath_type, external_ids=_ids(b))


def port_rows(o: PortOp | TunnelOp) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Port columns, Interface columns) of a port or tunnel op: what the plan compares the rows
    with, and what it writes when they differ."""
    if isinstance(o, TunnelOp):
        return (ovs.port_columns(protected=o.mesh, external_ids=_ids(o)),
                ovs.gre_columns(remote_ip=o.remote_ip, key=o.key, local_ip=o.local_ip))
    vlan_mode = "trunk" if o.vlan is None else "native-untagged" if o.trunk else "access"
    return ovs.port_columns(tag=o.vlan, vlan_mode=vlan_mode, external_ids=_ids(o, **{L1_NETNS: o.l1_netns or ""})), {}


def circuit_mac(cidr: str) -> str:
    """A locally administered MAC made of the circuit end's IPv4 address: 02:00 and its 4 bytes."""
    return "02:00:" + ipaddress.ip_interface(cidr).ip.packed.hex(":")


def circuit_rows(c: CircuitOp, cfg: HostConfig, uplink_bridge: str | None) -> list[ovs.AddBridge | ovs.AddPort]:
    """An NSI circuit's end: its bridge, the patch port on it and, on ``uplink_bridge`` (the bridge
    holding the uplink; None: none does), the patch port that is an access port on the circuit's
    VLAN. The bridge's MAC is its address's (``circuit_mac``): an end made again after the circuit
    went down and up keeps it, so the other end's tunnel, which keeps the MAC it learnt, still
    reaches it."""
    up, down = names.circuit_patch(c.vlan)
    ids = _ids(c)
    bridge = {**ovs.bridge_columns(datapath_type=cfg.datapath_type, external_ids=ids),
              "other_config": {"hwaddr": circuit_mac(c.address)}}
    rows: list[ovs.AddBridge | ovs.AddPort] = [
        ovs.AddBridge(c.name, bridge),
        ovs.AddPort(c.name, down, ovs.port_columns(external_ids=ids), ovs.patch_columns(up))]
    if uplink_bridge:
        rows.append(ovs.AddPort(uplink_bridge, up, ovs.port_columns(tag=c.vlan, vlan_mode="access", external_ids=ids),
                                ovs.patch_columns(down)))
    return rows


def _uplink_bridge(c: CircuitOp, st: OvsState) -> str | None:
    return (st.ports.get(c.uplink) or {}).get("bridge")


def _holds(st: OvsState, change: ovs.AddBridge | ovs.AddPort) -> bool:
    """Whether OVSDB already holds what ``change`` would write (a port on its bridge)."""
    if isinstance(change, ovs.AddBridge):
        row = st.bridges.get(change.name)
    else:
        row = st.ports.get(change.name)
        row = row if row and row.get("bridge") == change.bridge else None
    return matches(change.columns, row) and matches(change.interface, st.interfaces.get(change.name))


def _circuit_changes(w: Wanted, st: OvsState, cfg: HostConfig) -> list[ovs.Change]:
    """The circuits' rows that are missing or differ."""
    return [row for c in w.circuits for row in circuit_rows(c, cfg, _uplink_bridge(c, st)) if not _holds(st, row)]


# ---------------------------------------------------------------- decision (pure)

class L1Steps(NamedTuple):
    destroy: list[HostAction]  # before anything else
    prepare: list[HostAction]  # before the NIC is wired
    start: list[HostAction]  # after it


def plan_l1(l1s: Sequence[L1Op], facts: Facts) -> L1Steps:
    want = {o.name: o for o in l1s}
    steps = L1Steps([], [], [])
    for name, info in sorted(facts.nodes.items()):
        o = want.get(name)
        if o is None or o.kind != info.get("kind"):
            steps.destroy.append(L1Destroy(L1Kind(info["kind"]), name))
    for name, o in sorted(want.items()):
        have = facts.nodes.get(name)
        if l1_matches(o, have):
            continue
        restart = bool(have and have.get("keeps_disk") and have.get("spec") == spec_of(o))
        if have and have.get("kind") == o.kind and not restart:  # there but different, or stopped: made again
            steps.destroy.append(L1Destroy(o.kind, name))
        steps.prepare.append(L1Prepare(o))
        steps.start.append(L1Start(o))
    return steps


def plan_links(w: Wanted, facts: Facts, cfg: HostConfig) -> list[HostAction]:
    """The veths of L1 ports (the links OVS will open), their MTU and address."""
    out: list[HostAction] = []
    mtu_cap = inner_mtu(cfg.underlay_mtu, 9000)
    for p in w.ports:
        if not p.l1_netns:
            continue
        have = facts.l1.get(p.name) or {}
        mtu = min(p.mtu, mtu_cap)
        if p.name not in facts.links or not have.get("exists"):
            out.append(CreateVeth(p.name, p.l1_netns, l1_ifname(p), mtu, p.router))
        elif have.get("mtu") != mtu or facts.links[p.name]["mtu"] != mtu:
            out.append(SetMtu(p.name, p.l1_netns, l1_ifname(p), mtu))
        if p.address and p.address not in (have.get("addrs") or []):
            out.append(AddAddress(p.l1_netns, l1_ifname(p), p.address))
    return out


def released_ports(w: Wanted, st: OvsState) -> list[dict[str, Any]]:
    """Rows of ports and tunnels Iris made that no op wants any more."""
    want = {o.name for o in w.ports} | {o.name for o in w.tunnels} | {p for c in w.circuits for p in names.circuit_patch(c.vlan)}
    return [row for name, row in sorted(st.ports.items())
            if row.get("external_ids", {}).get(names.OP) in ("port", "tunnel", "circuit") and name not in want]


def stale_ports(w: Wanted, st: OvsState) -> list[PortOp | TunnelOp]:
    """The port and tunnel ops whose rows are missing or differ."""
    out: list[PortOp | TunnelOp] = []
    ops: list[PortOp | TunnelOp] = [*w.ports, *w.tunnels]
    for o in ops:
        if not _holds(st, ovs.AddPort(o.bridge, o.name, *port_rows(o))):
            out.append(o)
    return out


def ovsdb_changes(w: Wanted, st: OvsState, cfg: HostConfig) -> list[ovs.Change]:
    """Every OVSDB change of a pass: released rows out, then bridges, ports and tunnels in."""
    changes: list[ovs.Change] = [ovs.DelPort(row["name"]) for row in released_ports(w, st)]
    want_bridges = {b.name for b in w.bridges} | {c.name for c in w.circuits}
    changes += [ovs.DelBridge(name) for name, row in sorted(st.bridges.items())
                if row.get("external_ids", {}).get(names.OP) in ("bridge", "circuit") and name not in want_bridges]
    for b in w.bridges:
        cols = bridge_row(b, cfg)
        if not matches(cols, st.bridges.get(b.name)):
            changes.append(ovs.AddBridge(b.name, cols))
    for o in stale_ports(w, st):
        row = st.ports.get(o.name)
        if row is not None and row.get("bridge") not in (None, o.bridge):
            changes.append(ovs.DelPort(o.name))  # a port moves bridge by being made again
        changes.append(ovs.AddPort(o.bridge, o.name, *port_rows(o)))
    changes += _circuit_changes(w, st, cfg)
    for uplink in sorted({lim.uplink for lim in w.limits}):
        row = st.ports.get(uplink)
        if row is not None and not row.get("qos"):
            changes.append(ovs.NoopQos(uplink, {names.OWNER: w.limits[0].owner}))
    return changes


def plan_ovsdb(w: Wanted, st: OvsState, cfg: HostConfig) -> list[HostAction]:
    changes = ovsdb_changes(w, st, cfg)
    return [OvsdbTransaction(tuple(changes))] if changes else []


def plan_released_links(w: Wanted, facts: Facts) -> list[HostAction]:
    """The veths and namespaces of released L1 ports (after the OVSDB transaction let them go)."""
    out: list[HostAction] = []
    kept = {p.l1_netns for p in w.ports}
    for row in released_ports(w, facts.ovs):
        ids = row.get("external_ids", {})
        l1ns = ids.get(L1_NETNS)
        if ids.get(names.OP) != "port" or not l1ns:
            continue
        if row["name"] in facts.links:
            out.append(DeleteLink(row["name"]))
        if l1ns.startswith(names.PREFIX) and l1ns not in kept:
            out.append(DeleteNetns(l1ns))
    return out


def plan_tc(w: Wanted, facts: Facts, cfg: HostConfig) -> list[HostAction]:
    """The egress limit of each L1 port, and the per-tenant limits on each gateway uplink."""
    out: list[HostAction] = []
    for p in w.ports:
        if not p.l1_netns:
            continue
        rate = (facts.l1.get(p.name) or {}).get("rate")
        s = w.shapes.get(p.name)
        if s is not None and rate != round(s.rate_mbit, 3):
            out.append(TcChange(p.l1_netns, l1_ifname(p), tuple(tc.port_limit_requests(s.rate_mbit))))
        elif s is None and rate is not None:
            out.append(TcChange(p.l1_netns, l1_ifname(p), tuple(tc.clear_requests())))
    by_uplink: dict[str, list[TunnelLimitOp]] = {}
    for lim in w.limits:
        by_uplink.setdefault(lim.uplink, []).append(lim)
    for uplink, have in sorted(facts.uplinks.items()):
        if have and uplink not in by_uplink:
            out.append(TcChange(cfg.netns, uplink, tuple(tc.clear_requests())))
    for uplink, lims in by_uplink.items():
        have = facts.uplinks.get(uplink, {})
        want = {tc.tenant_class(x.remote_ip): round(x.rate_mbit, 3) for x in lims}
        if have == want:
            continue
        # a class cannot be deleted while a filter points to it: start from a clean root instead
        reqs = list(tc.clear_requests()) if set(have) - set(want) else []
        reqs += tc.uplink_root_requests()
        for x in lims:
            reqs += tc.tenant_limit_requests(x.remote_ip, x.rate_mbit)
        out.append(TcChange(cfg.netns, uplink, tuple(reqs)))
    return out


def plan_circuits(w: Wanted, facts: Facts) -> tuple[list[HostAction], list[HostAction]]:
    """(after the OVSDB transaction: each circuit's end up with its address; last: the circuits
    no OVS bridge here can carry)."""
    up: list[HostAction] = []
    unplaced: list[HostAction] = []
    for c in w.circuits:
        if not (facts.links.get(c.name) or {}).get("up") or c.address not in facts.circuits.get(c.name, []):
            up.append(CircuitUp(c.name, c.address))
        if _uplink_bridge(c, facts.ovs) is None:
            unplaced.append(CircuitUnplaced(c.name, c.uplink))
    return up, unplaced


def plan_warmup(w: Wanted, st: OvsState, cfg: HostConfig) -> list[HostAction]:
    if not cfg.warmup:
        return []
    peers = [o.remote_ip for o in stale_ports(w, st) if isinstance(o, TunnelOp)]
    return [WarmUp(ip) for ip in dict.fromkeys(peers)]


def plan(desired: DesiredState, facts: Facts, cfg: HostConfig) -> list[HostAction]:
    w = Wanted.of(desired.ops)
    l1 = plan_l1(w.l1s, facts)
    # volumes: released before the network (their namespace still exists), served after it
    vol_pre, vol_post = storage.plan(w.volumes, facts.volumes, cfg.storage_dir)
    circuits_up, unplaced = plan_circuits(w, facts)
    return [*vol_pre, *l1.destroy, *l1.prepare,
            *plan_links(w, facts, cfg), *plan_ovsdb(w, facts.ovs, cfg), *circuits_up, *l1.start,
            *plan_released_links(w, facts), *plan_tc(w, facts, cfg),
            *vol_post, *plan_warmup(w, facts.ovs, cfg), *unplaced]


# ---------------------------------------------------------------- side effects

def observe(desired: DesiredState | None, ctx: Context) -> Facts:
    cfg = ctx.cfg
    st = ctx.ovsdb.state()
    links = nl.links(cfg.netns)
    w = Wanted.of(desired.ops if desired else [])
    facts = Facts(ovs=st, links=links)
    for drv in ctx.l1_drivers.values():
        facts.nodes.update(drv.list())
    if cfg.storage_dir:
        facts.volumes = storage.observe(w.volumes, cfg.storage_dir)
    facts.circuits = {name: nl.addresses(cfg.netns, name) for name, row in st.bridges.items()
                      if (row.get("external_ids") or {}).get(names.OP) == "circuit" and name in links}
    for p in w.ports:
        if p.l1_netns:
            facts.l1[p.name] = _observe_l1_link(p.l1_netns, l1_ifname(p))
    uplinks = {o.uplink for o in w.limits} | {n for n, r in st.ports.items() if r.get("qos")}
    for u in sorted(uplinks & set(links)):
        rates = tc.htb_rates(cfg.netns, u)
        facts.uplinks[u] = {k: v for k, v in rates.items() if k != tc.PORT_CLASS}
    return facts


def _observe_l1_link(ns: str, ifname: str) -> dict[str, Any]:
    ln = nl.links(ns).get(ifname) if nl.netns_exists(ns) else None
    if not ln:
        return {"exists": False}
    return {"exists": True, "mtu": ln["mtu"], "rate": tc.htb_rates(ns, ifname).get(tc.PORT_CLASS),
            "addrs": nl.addresses(ns, ifname)}


def _batches(actions: Sequence[HostAction]) -> list[list[HostAction]]:
    """Consecutive actions of one parallel type together; every other action alone."""
    out: list[list[HostAction]] = []
    for a in actions:
        if out and a.parallel and type(out[-1][0]) is type(a):
            out[-1].append(a)
        else:
            out.append([a])
    return out


def _run_parallel(batch: list[HostAction], ctx: Context) -> list[tuple[HostAction, Exception]]:
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(batch)))) as ex:
        futures = [(a, ex.submit(a.apply, ctx)) for a in batch]
    failed = []
    for a, fut in futures:
        e = fut.exception()
        if isinstance(e, Exception):
            failed.append((a, e))
        elif e is not None:
            raise e
    return failed


def execute(actions: Sequence[HostAction], ctx: Context) -> None:
    """Apply the actions in order. An L1 step that fails stops neither the other L1s nor the rest
    of the host's changes; every failure is raised together at the end. A started L1 announces
    itself last, after the warm-up, so the announcement crosses the new tunnels."""
    failed: list[tuple[HostAction, Exception]] = []
    for batch in _batches(actions):
        if batch[0].parallel:
            failed += _run_parallel(batch, ctx)
        else:
            batch[0].apply(ctx)
    failed_l1s = {a.l1 for a, _ in failed if isinstance(a, L1Step)}
    for a in actions:
        if isinstance(a, L1Start) and a.l1 not in failed_l1s:
            l1_driver(ctx, a.op.kind).announce(a.op)
    if failed:
        raise L1Failed("; ".join(f"{a}: {e}" for a, e in failed))


def report(facts: Facts) -> list[dict[str, Any]]:
    """What is really on the host, in op form (only Iris's own objects)."""
    out: list[dict[str, Any]] = []
    for name, b in sorted(facts.ovs.bridges.items()):
        ids = b.get("external_ids") or {}
        if ids.get(names.OP) == "bridge":
            out.append({"op": "bridge", "name": name, "datapath_type": b.get("datapath_type") or "",
                        "owner": ids.get(names.OWNER, ""), "tenant": ids.get(names.TENANT, "")})
        elif ids.get(names.OP) == "circuit":
            patch = facts.ovs.ports.get(f"{name}u") or {}  # names.circuit_patch: on the uplink's bridge
            out.append({"op": "circuit", "name": name, "vlan": patch.get("tag"), "uplink_bridge": patch.get("bridge"),
                        "addresses": facts.circuits.get(name, []), "up": (facts.links.get(name) or {}).get("up", False),
                        "owner": ids.get(names.OWNER, ""), "tenant": ids.get(names.TENANT, "")})
    for name, p in sorted(facts.ovs.ports.items()):
        ids = p.get("external_ids") or {}
        kind = ids.get(names.OP)
        iface = facts.ovs.interfaces.get(name) or {}
        base = {"name": name, "bridge": p.get("bridge"), "owner": ids.get(names.OWNER, ""),
                "tenant": ids.get(names.TENANT, "")}
        if kind == "tunnel":
            opts = iface.get("options") or {}
            out.append({"op": "tunnel", **base, "remote_ip": opts.get("remote_ip"),
                        "key": int(opts["key"]) if "key" in opts else None, "mesh": bool(p.get("protected"))})
        elif kind == "port":
            out.append({"op": "port", **base, "vlan": p.get("tag"), "trunk": p.get("vlan_mode") == "native-untagged",
                        "l1_netns": ids.get(L1_NETNS) or None, "up": (facts.links.get(name) or {}).get("up", False),
                        "ofport": iface.get("ofport"), "error": iface.get("error")})
    for port, info in sorted(facts.l1.items()):
        if info.get("rate") is not None:
            out.append({"op": "shape", "port": port, "rate_mbit": info["rate"]})
    for uplink, classes in sorted(facts.uplinks.items()):
        for cls, rate in sorted(classes.items()):
            out.append({"op": "tunnel_limit", "uplink": uplink, "class": tc.handle(cls), "rate_mbit": rate})
    for name, info in sorted(facts.nodes.items()):
        spec = info.get("spec") or {}
        out.append({"op": "l1", "name": name, "kind": info.get("kind"), "running": bool(info.get("running")),
                    "owner": spec.get("owner", ""), "tenant": spec.get("tenant", "")})
    out += storage.report(facts.volumes)
    return out


class Host:
    """The real driver for one host: observe, plan, execute. Holds the host's OVSDB connection
    (opened at first use) until :meth:`close`."""

    def __init__(self, cfg: HostConfig, runner: Runner | None = None, *,
                 l1_drivers: Mapping[L1Kind, L1Driver] | None = None):
        self.ctx = Context.of(cfg, runner, l1_drivers)

    @property
    def cfg(self) -> HostConfig:
        return self.ctx.cfg

    @property
    def runner(self) -> Runner:
        return self.ctx.runner

    @property
    def l1_drivers(self) -> Mapping[L1Kind, L1Driver]:
        return self.ctx.l1_drivers

    def observe(self, desired: DesiredState | None = None) -> Facts:
        return observe(desired, self.ctx)

    def plan(self, desired: DesiredState) -> list[HostAction]:
        return plan(desired, self.observe(desired), self.cfg)

    def execute(self, actions: Sequence[HostAction]) -> None:
        execute(actions, self.ctx)

    def apply(self, desired: DesiredState) -> list[HostAction]:
        actions = self.plan(desired)
        self.execute(actions)
        return actions

    def report(self, desired: DesiredState | None = None) -> list[dict[str, Any]]:
        return report(self.observe(desired))

    def status(self, desired: DesiredState) -> tuple[list[dict[str, Any]], list[HostAction]]:
        """(what is really there, what a reconcile would still do)"""
        facts = self.observe(desired)
        return report(facts), plan(desired, facts, self.cfg)

    def stats(self, desired: DesiredState) -> stats.HostStats:
        """What the objects of ``desired`` used and carried (:mod:`iris_haas.hostd.stats`)."""
        return stats.measure(desired, self.ctx)

    def close(self) -> None:
        self.ctx.ovsdb.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
