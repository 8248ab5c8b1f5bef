"""Reconcile one host's network to its desired op list (see :mod:`iris_haas.contract.ops`).

Three steps, kept apart so the decision can be read in a test without root:

1. :func:`observe` reads the host: OVS rows, links, qdiscs (:class:`Facts`, plain data);
2. :func:`plan` compares desired ops with the facts and returns :class:`Action` s (pure);
3. :func:`execute` performs them: netlink first (the veths OVS will open), then *one* OVSDB
   transaction for every bridge/port/tunnel change, then tc, then a warm-up ping per new tunnel
   (OVS's userspace tunnels learn the peer's MAC from ARP they see on the underlay bridge).

Only objects Iris made are changed or deleted: OVS rows with an ``iris-op`` external id, links
and namespaces named by :mod:`iris_haas.contract.names`. Lab infrastructure (``br-phy`` and its
ports) carries ``iris-owner`` but no ``iris-op`` and is left alone.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from iris_haas.contract import names
from iris_haas.contract.ops import (
    BridgeOp,
    DesiredState,
    L1Op,
    PortOp,
    ShapeOp,
    TunnelLimitOp,
    TunnelOp,
    VolumeOp,
    inner_mtu,
)
from iris_haas.hostd import storage
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, tc
from iris_haas.linux.runner import Cmd, Runner, SubprocessRunner, cmd

L1_NETNS = "iris-l1-netns"  # external id on a port row: the L1 namespace the port made


@dataclass
class HostConfig:
    db: str
    netns: str | None = None  # the host's own namespace; None: the one this process runs in
    datapath_type: str = "system"
    underlay_mtu: int = 1500
    warmup: bool = True
    l1_dir: str = ""  # state of the L1 drivers (iris_haas.hostd.l1); empty: this host runs no L1s
    storage_dir: str = ""  # registry of volumes (iris_haas.hostd.storage); empty: this host keeps none


@dataclass
class Facts:
    ovs: ovs.OvsState
    links: dict[str, dict]
    l1: dict[str, dict] = field(default_factory=dict)  # port name -> {exists, mtu, rate, addrs}
    uplinks: dict[str, dict[int, float]] = field(default_factory=dict)  # uplink -> htb class -> Mbit/s
    nodes: dict[str, dict] = field(default_factory=dict)  # L1 name -> {kind, spec, running}
    volumes: dict[str, Any] = field(default_factory=dict)  # volume name -> storage.VolumeFacts


@dataclass(frozen=True)
class Action:
    kind: str  # veth | mtu | addr | ovs | dellink | delnetns | tc | warmup
    args: tuple = ()

    def __str__(self) -> str:
        return f"{self.kind} {' '.join(str(a) for a in self.args)}"


# ---------------------------------------------------------------- decision (pure)

def port_columns(o: PortOp | TunnelOp) -> dict[str, Any]:
    if isinstance(o, TunnelOp):
        return {"tag": None, "trunks": None, "vlan_mode": None, "protected": o.mesh}
    if o.vlan is None:
        return {"tag": None, "trunks": None, "vlan_mode": "trunk", "protected": False}
    return {"tag": o.vlan, "trunks": None, "vlan_mode": "native-untagged" if o.trunk else "access",
            "protected": False}


def _ids(o, **extra) -> dict[str, str]:
    d = {names.OWNER: o.owner, names.OP: o.op, names.TENANT: o.tenant}
    d.update({k: v for k, v in extra.items() if v})
    return d


def _norm_list(v) -> list | None:
    if v is None:
        return None
    return sorted(v) if isinstance(v, list) else [v]


def _port_matches(o: PortOp | TunnelOp, row: dict | None, iface: dict | None) -> bool:
    if row is None or iface is None or row.get("bridge") != o.bridge:
        return False
    want = port_columns(o)
    if row.get("tag") != want["tag"] or _norm_list(row.get("trunks")) != want["trunks"]:
        return False
    if (row.get("vlan_mode") or None) != want["vlan_mode"] or bool(row.get("protected")) != want["protected"]:
        return False
    ids = row.get("external_ids") or {}
    if ids.get(names.OWNER) != o.owner or ids.get(names.TENANT) != o.tenant or ids.get(names.OP) != o.op:
        return False
    if isinstance(o, TunnelOp):
        opts = iface.get("options") or {}
        want_opts = {"remote_ip": o.remote_ip}
        if o.key is not None:
            want_opts["key"] = str(o.key)
        if o.local_ip:
            want_opts["local_ip"] = o.local_ip
        return iface.get("type") == "gre" and opts == want_opts
    return True


def _port_subs(o: PortOp | TunnelOp, cfg: HostConfig) -> list[ovs.Sub]:
    cols = port_columns(o)
    if isinstance(o, TunnelOp):
        return ovs.gre_port(o.bridge, o.name, remote_ip=o.remote_ip, key=o.key, local_ip=o.local_ip,
                            protected=o.mesh, external_ids=_ids(o))
    return ovs.add_port(o.bridge, o.name, tag=cols["tag"], vlan_mode=cols["vlan_mode"], protected=False,
                        external_ids=_ids(o, **{L1_NETNS: o.l1_netns or ""}))


def with_l1_ports(ops: list) -> list:
    """The op list with the port op of every L1 op added (an L1's NIC is an ordinary port)."""
    return [*ops, *(o.port_op() for o in ops if isinstance(o, L1Op))]


def plan_l1(ops: list, facts: Facts) -> tuple[list[Action], list[Action], list[Action]]:
    """(destroy before anything else, prepare before the NIC is wired, start after it)."""
    want = {o.name: o for o in ops if isinstance(o, L1Op)}
    down, prep, start = [], [], []
    for name, info in sorted(facts.nodes.items()):
        o = want.get(name)
        if o is None or o.kind != info.get("kind"):
            down.append(Action("l1down", (info.get("kind"), name)))
    from iris_haas.hostd.l1.base import spec_of

    for name, o in sorted(want.items()):
        info = facts.nodes.get(name)
        if info and info.get("kind") == o.kind and info.get("running") and info.get("spec") == spec_of(o):
            continue
        if info and info.get("kind") == o.kind:
            down.append(Action("l1down", (o.kind, name)))
        prep.append(Action("l1prep", (o.kind, name, o)))
        start.append(Action("l1up", (o.kind, name, o)))
    return down, prep, start


def plan(desired: DesiredState, facts: Facts, cfg: HostConfig) -> list[Action]:
    ops = with_l1_ports(desired.ops)
    l1_down, l1_prep, l1_start = plan_l1(ops, facts)
    bridges = [o for o in ops if isinstance(o, BridgeOp)]
    ports = [o for o in ops if isinstance(o, PortOp)]
    tunnels = [o for o in ops if isinstance(o, TunnelOp)]
    shapes = {o.port: o for o in ops if isinstance(o, ShapeOp)}
    limits = [o for o in ops if isinstance(o, TunnelLimitOp)]
    st = facts.ovs
    # volumes: released before the network (their namespace still exists), served after it
    vol_pre, vol_post = storage.plan([o for o in ops if isinstance(o, VolumeOp)], facts.volumes, cfg.storage_dir)
    actions: list[Action] = [*vol_pre, *l1_down, *l1_prep]
    mtu_cap = inner_mtu(cfg.underlay_mtu, 9000)

    # 1. links the OVS ports will open
    for p in ports:
        if not p.l1_netns:
            continue
        l1 = facts.l1.get(p.name) or {}
        mtu = min(p.mtu, mtu_cap)
        if p.name not in facts.links or not l1.get("exists"):
            actions.append(Action("veth", (p.name, p.l1_netns, p.l1_ifname or names.l1_port(p.name)[1], mtu,
                                           p.router)))
        elif l1.get("mtu") != mtu or facts.links[p.name]["mtu"] != mtu:
            actions.append(Action("mtu", (p.name, p.l1_netns, p.l1_ifname, mtu)))
        if p.address and p.address not in (l1.get("addrs") or []):
            actions.append(Action("addr", (p.l1_netns, p.l1_ifname or names.l1_port(p.name)[1], p.address)))

    # 2. one OVSDB transaction
    subs: list[ovs.Sub] = []
    want_bridges = {b.name for b in bridges}
    want_ports = {o.name for o in ports} | {o.name for o in tunnels}
    removed_ports = []
    for name, row in st.ports.items():
        ids = row.get("external_ids") or {}
        if ids.get(names.OP) in ("port", "tunnel") and name not in want_ports:
            subs += ovs.del_port(name)
            removed_ports.append(row)
    for name, row in st.bridges.items():
        ids = row.get("external_ids") or {}
        if ids.get(names.OP) == "bridge" and name not in want_bridges:
            subs += ovs.del_bridge(name)
    for b in bridges:
        row = st.bridges.get(b.name)
        dp = b.datapath_type or cfg.datapath_type
        ids = (row or {}).get("external_ids") or {}
        if row is None or row.get("datapath_type") != dp or ids != {k: v for k, v in _ids(b).items()}:
            subs += ovs.add_bridge(b.name, datapath_type=dp, external_ids=_ids(b))
    new_tunnels = []
    for o in [*ports, *tunnels]:
        row = st.ports.get(o.name)
        if not _port_matches(o, row, st.interfaces.get(o.name)):
            if row is not None and row.get("bridge") not in (None, o.bridge):
                subs += ovs.del_port(o.name)
            subs += _port_subs(o, cfg)
            if isinstance(o, TunnelOp):
                new_tunnels.append(o)
    for uplink in sorted({lim.uplink for lim in limits}):
        row = st.ports.get(uplink)
        if row is not None and not row.get("qos"):
            subs += [["set", "Port", uplink, "qos=@noop"],
                     ["--id=@noop", "create", "QoS", "type=linux-noop",
                      f'external_ids:{names.OWNER}="{limits[0].owner}"']]
    if subs:
        actions.append(Action("ovs", tuple(tuple(s) for s in subs)))
    actions += l1_start

    # 3. links and namespaces of released L1 ports
    for row in removed_ports:
        ids = row.get("external_ids") or {}
        if ids.get(names.OP) != "port":
            continue
        name = row["name"]
        l1ns = ids.get(L1_NETNS)
        if l1ns and name in facts.links:
            actions.append(Action("dellink", (name,)))
        if l1ns and l1ns.startswith(names.PREFIX) and l1ns not in {p.l1_netns for p in ports}:
            actions.append(Action("delnetns", (l1ns,)))

    # 4. tc
    for p in ports:
        if not p.l1_netns:
            continue
        l1if = p.l1_ifname or names.l1_port(p.name)[1]
        rate = (facts.l1.get(p.name) or {}).get("rate")
        s = shapes.get(p.name)
        if s is not None and rate != round(s.rate_mbit, 3):
            actions.append(Action("tc", (p.l1_netns, l1if, tuple(tc.port_limit_requests(s.rate_mbit)))))
        elif s is None and rate is not None:
            actions.append(Action("tc", (p.l1_netns, l1if, tuple(tc.clear_requests()))))
    by_uplink: dict[str, list[TunnelLimitOp]] = {}
    for lim in limits:
        by_uplink.setdefault(lim.uplink, []).append(lim)
    for uplink, have in facts.uplinks.items():
        if have and uplink not in by_uplink:
            actions.append(Action("tc", (cfg.netns, uplink, tuple(tc.clear_requests()))))
    for uplink, lims in by_uplink.items():
        have = facts.uplinks.get(uplink, {})
        want = {tc.tenant_class(x.remote_ip): round(x.rate_mbit, 3) for x in lims}
        if have == want:
            continue
        reqs = list(tc.clear_requests()) if set(have) - set(want) else []
        reqs += tc.uplink_root_requests()
        for x in lims:
            reqs += tc.tenant_limit_requests(x.remote_ip, x.rate_mbit)
        actions.append(Action("tc", (cfg.netns, uplink, tuple(reqs))))

    actions += vol_post

    # 5. warm-up
    if cfg.warmup:
        for t in new_tunnels:
            actions.append(Action("warmup", (t.remote_ip,)))
    return actions


# ---------------------------------------------------------------- side effects

def observe(desired: DesiredState | None, cfg: HostConfig, runner: Runner) -> Facts:
    st = ovs.observe(runner, cfg.db)
    links = nl.links(cfg.netns)
    facts = Facts(ovs=st, links=links)
    ops = with_l1_ports(desired.ops) if desired else []
    for drv in l1_drivers(cfg, runner).values():
        facts.nodes.update(drv.list())
    if cfg.storage_dir:
        facts.volumes = storage.observe([o for o in ops if isinstance(o, VolumeOp)], cfg.storage_dir)
    for p in ops:
        if isinstance(p, PortOp) and p.l1_netns:
            l1if = p.l1_ifname or names.l1_port(p.name)[1]
            info: dict[str, Any] = {"exists": False}
            if nl.netns_exists(p.l1_netns):
                ln = nl.links(p.l1_netns).get(l1if)
                if ln:
                    rates = tc.htb_rates(p.l1_netns, l1if)
                    info = {"exists": True, "mtu": ln["mtu"], "rate": rates.get(tc.PORT_CLASS),
                            "addrs": nl.addresses(p.l1_netns, l1if)}
            facts.l1[p.name] = info
    uplinks = {o.uplink for o in ops if isinstance(o, TunnelLimitOp)}
    uplinks |= {n for n, r in st.ports.items() if r.get("qos") and n in links}
    for u in uplinks:
        if u in links:
            rates = tc.htb_rates(cfg.netns, u)
            facts.uplinks[u] = {k: v for k, v in rates.items() if k != tc.PORT_CLASS}
    return facts


_L1_DRIVERS: dict[tuple, dict] = {}


def l1_drivers(cfg: HostConfig, runner: Runner) -> dict:
    """The L1 drivers of this host (none without ``cfg.l1_dir``), one set per configuration."""
    if not cfg.l1_dir:
        return {}
    key = (cfg.l1_dir, cfg.netns, id(runner))
    if key not in _L1_DRIVERS:
        from iris_haas.hostd.l1 import make_drivers

        _L1_DRIVERS[key] = make_drivers(cfg.l1_dir, runner, cfg.netns)
    return _L1_DRIVERS[key]


def _l1_batch(batch: list[Action], cfg: HostConfig, runner: Runner) -> list[tuple[str, str]]:
    """Run one kind of L1 step for several L1s at once; returns every failure, none hidden."""
    drivers = l1_drivers(cfg, runner)
    if not drivers:
        from iris_haas.hostd.l1 import L1Failed

        raise L1Failed("this host runs no L1s (no l1_dir configured)")

    def one(a: Action):
        kind, name = a.args[0], a.args[1]
        d = drivers[kind]
        if a.kind == "l1down":
            d.destroy(name)
        elif a.kind == "l1prep":
            d.prepare(a.args[2])
        else:
            d.start(a.args[2])

    errors = []
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(batch)))) as ex:
        for a, fut in [(a, ex.submit(one, a)) for a in batch]:
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001 - collected and raised together by execute
                errors.append((a.args[1], f"{a.kind} {a.args[1]}: {e}"))
    return errors


def execute(actions: list[Action], cfg: HostConfig, runner: Runner) -> None:
    warm = []
    started = [a.args[2] for a in actions if a.kind == "l1up"]
    l1_errors: list[tuple[str, str]] = []  # (L1 name, message)
    i = 0
    while i < len(actions):
        a = actions[i]
        if a.kind.startswith("l1"):
            j = i
            while j < len(actions) and actions[j].kind == a.kind:
                j += 1
            # an L1 that fails does not stop the others, nor the rest of the host's changes
            l1_errors += _l1_batch(actions[i:j], cfg, runner)
            i = j
            continue
        i += 1
        k, args = a.kind, a.args
        if k.startswith("vol-"):
            storage.execute(a, cfg.storage_dir, runner)
        elif k == "veth":
            name, l1ns, l1if, mtu, router = args
            if nl.ensure_netns(l1ns):
                runner.run(nl.netns_sysctl_cmds(l1ns, router=router))
            nl.ensure_veth(name, cfg.netns, l1if, l1ns, mtu=mtu)
            runner.run(nl.tx_offload_off_cmd(l1ns, l1if))
        elif k == "mtu":
            name, l1ns, l1if, mtu = args
            nl.set_link(cfg.netns, name, mtu=mtu)
            nl.set_link(l1ns, l1if or names.l1_port(name)[1], mtu=mtu)
        elif k == "addr":
            l1ns, l1if, cidr = args
            nl.ensure_addr(l1ns, l1if, cidr)
        elif k == "ovs":
            runner.run(ovs.txn(cfg.db, *[list(s) for s in args]))
        elif k == "dellink":
            nl.delete_link(cfg.netns, args[0])
        elif k == "delnetns":
            nl.delete_netns(args[0])
        elif k == "tc":
            ns, dev, reqs = args
            tc.execute(ns, dev, list(reqs))
        elif k == "warmup":
            warm.append(args[0])
    if warm:
        warmup(cfg.netns, warm)
    failed = {name for name, _ in l1_errors}
    if started:  # after the warm-up, so the announcement crosses the new tunnels
        drivers = l1_drivers(cfg, runner)
        for o in started:
            if o.name not in failed:
                drivers[o.kind].announce(o)
    if l1_errors:
        from iris_haas.hostd.l1 import L1Failed

        raise L1Failed("; ".join(msg for _, msg in l1_errors))


def warmup_cmds(ns: str | None, ips: list[str]) -> list[Cmd]:
    """One ARP request to each tunnel peer, sent out the interface the kernel routes it by.

    OVS's userspace tunnels need the peer's MAC in their own neighbour cache, which they fill
    only by snooping ARP *replies* crossing the underlay bridge (or by ARPing themselves, which
    drops the packet that asked). A ping does not always do it: when the peer has ARPed first,
    the kernel already knows the MAC and sends no request. ``arping`` always asks.
    """
    out = []
    with nl.ipr(ns) as h:
        for ip in sorted(set(ips)):
            try:
                oif = h.route("get", dst=ip)[0].get_attr("RTA_OIF")
                dev = h.get_links(oif)[0].get_attr("IFLA_IFNAME")
            except Exception:  # no route: nothing to warm up
                continue
            # Thomas Habets' arping (Debian's): -C 1 returns at the first reply
            out.append(cmd("arping", "-q", "-C", "1", "-c", "1", "-w", "1", "-i", dev, ip, netns=ns, ok=(0, 1)))
    return out


def warmup(ns: str | None, ips: list[str]) -> None:
    """Run :func:`warmup_cmds` in parallel; failures are fine (OVS also ARPs by itself)."""
    procs = [subprocess.Popen(c.full_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for c in warmup_cmds(ns, ips)]
    for p in procs:
        p.wait()


def report(facts: Facts) -> list[dict]:
    """What is really on the host, in op form (only Iris's own objects)."""
    out: list[dict] = []
    for name, b in sorted(facts.ovs.bridges.items()):
        ids = b.get("external_ids") or {}
        if ids.get(names.OP) == "bridge":
            out.append({"op": "bridge", "name": name, "datapath_type": b.get("datapath_type") or "",
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
            out.append({"op": "tunnel_limit", "uplink": uplink, "class": f"{cls >> 16:x}:{cls & 0xffff:x}",
                        "rate_mbit": rate})
    for name, info in sorted(facts.nodes.items()):
        out.append({"op": "l1", "name": name, "kind": info.get("kind"), "running": bool(info.get("running")),
                    "owner": (info.get("spec") or {}).get("owner", ""),
                    "tenant": (info.get("spec") or {}).get("tenant", "")})
    out += storage.report(facts.volumes)
    return out


class Host:
    """The real driver for one host: observe, plan, execute."""

    def __init__(self, cfg: HostConfig, runner: Runner | None = None):
        self.cfg = cfg
        self.runner = runner or SubprocessRunner()

    def observe(self, desired: DesiredState | None = None) -> Facts:
        return observe(desired, self.cfg, self.runner)

    def plan(self, desired: DesiredState) -> list[Action]:
        return plan(desired, self.observe(desired), self.cfg)

    def apply(self, desired: DesiredState) -> list[Action]:
        actions = self.plan(desired)
        execute(actions, self.cfg, self.runner)
        return actions

    def report(self, desired: DesiredState | None = None) -> list[dict]:
        return report(self.observe(desired))

    def status(self, desired: DesiredState) -> tuple[list[dict], list[Action]]:
        """(what is really there, what a reconcile would still do)"""
        facts = self.observe(desired)
        return report(facts), plan(desired, facts, self.cfg)


