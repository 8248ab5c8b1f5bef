"""Data-plane bench in the two-DC lab: the paper's tables 4 and 5, between user VMs as the demo has them.

The IaaS's host software stand-in (:mod:`iris_haas.lab.iaas`) runs on two IaaS hosts behind the
tenant's top-of-rack switch and inside two L1s on two L0s; each has one user VM on a guest VLAN.
Prints one JSON object:

* ``iaas_iaas``: user VM on IaaS host 1 <-> user VM on IaaS host 2 (IaaS <-> IaaS);
* ``iaas_haas``: user VM on IaaS host 1 <-> user VM in L1 1, through the inter-DC GRE trunk and
  the tenant's overlay (IaaS <-> HaaS(L));
* ``haas_haas``: user VM in L1 1 <-> user VM in L1 2, one mesh tunnel (HaaS(L) <-> HaaS(L));

each ``{rtt_ms, goodput_mbps}`` (ping average, iperf3 TCP goodput at the receiver; medians of
``--repeats``), ``structure_ratio`` (iaas_haas / iaas_iaas goodput), ``rtt_overhead_ms``
(iaas_haas - iaas_iaas RTT), ``hops`` (userspace switches, i.e. OVS instances, on each path),
``switches`` (which), and the settings measured under (``underlay_mtu``, ``tenant_mtu``,
``load_before``: the 1-minute load average when the run started, since other work on the machine
moves these figures).

Run as root: ``python bench/dataplane.py [--seconds 3] [--repeats 3] [--underlay-mtu 9000]
[--tenant-mtu N] [--tso] [--pin-ovs CPUS]``. ``--tenant-mtu`` defaults to the largest that fits the underlay
(underlay - 46: GRE with key + 802.1Q), at most 8000. The lab is private to the run and removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys

from iris_haas.contract import names
from iris_haas.contract.ops import DesiredState, inner_mtu
from iris_haas.lab import iaas, probe, realizer, tenants
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import SubprocessRunner, cmd

GUEST_VLAN = 200
# at underlay 9000: 8000 gave more than the largest that fits (8954) through the userspace
# tunnels here (IaaS-HaaS 974 and 937 Mbit/s against 526 and 884); see docs/dataplane.md
JUMBO_TENANT_MTU = 8000
T = "a"


def measure(x: iaas.UserVM, y: iaas.UserVM, seconds: float, repeats: int) -> dict:
    if not probe.reachable(x.netns, y.ip, timeout=15):
        raise RuntimeError(f"{x.name} cannot reach {y.ip}")
    rtts, gps = [], []
    with probe.Iperf3Server(y.netns):
        for _ in range(repeats):
            rtts.append(probe.rtt_ms(x.netns, y.ip, count=20))
            gps.append(probe.iperf3(x.netns, y.ip, seconds=seconds))
    return {"rtt_ms": round(statistics.median(rtts), 3), "goodput_mbps": round(statistics.median(gps), 1),
            "runs_mbps": [round(g, 1) for g in gps]}


def set_mtu(ns: str, ifnames: list[str], mtu: int) -> None:
    for n in ifnames:
        nl.set_link(ns, n, mtu=mtu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="iperf3 duration per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per path (medians reported)")
    ap.add_argument("--underlay-mtu", type=int, default=9000, help="the lab's underlay links (internet, fabric)")
    ap.add_argument("--tenant-mtu", type=int, default=0, help="user VMs, hosts, L1 NICs (0: largest that fits)")
    ap.add_argument("--tso", action="store_true", help="other_config:userspace-tso-enable on every OVS")
    ap.add_argument("--pin-ovs", default="", help="CPU list every ovs-vswitchd's threads are pinned to (taskset)")
    args = ap.parse_args()
    tmtu = args.tenant_mtu or min(inner_mtu(args.underlay_mtu, 9000), JUMBO_TENANT_MTU)
    name = "bd" + secrets.token_hex(2)
    lab = realizer.load(None, name=name, underlay_mtu=args.underlay_mtu)
    r = SubprocessRunner()
    load = os.getloadavg()[0]
    out: dict = {}
    stops = []
    try:
        realizer.up(lab, ephemeral=True)
        hosts = [iaas.add_iaas_host(lab, T, f"h{i}", f"10.0.101.{30 + i}/24") for i in (1, 2)]
        stops += [h.stop for h in hosts]
        l1s = [L1(T, f"l0-{i}", f"v{i}", address=f"10.0.101.{50 + i}/24") for i in (1, 2)]
        # the L1 NICs' MTU is desired state (the agents keep converging it), the rest is the IaaS's
        tenants.push(lab, {n: DesiredState(ops=[o.model_copy(update={"mtu": tmtu}) if hasattr(o, "mtu") else o
                                                for o in st.ops])
                           for n, st in tenants.desired(lab.topo, l1s).items()})
        l1_hosts = [iaas.in_l1(lab, T, x.name, x.nic()) for x in l1s]
        stops += [h.stop for h in l1_hosts]
        vms = {}
        for side, hs in (("i", hosts), ("h", l1_hosts)):
            for i, h in enumerate(hs, start=1):
                vms[f"{side}{i}"] = h.add_vm(iaas.UserVM(f"{T}v{side}{i}", lab.ns(f"{T}v{side}{i}"), GUEST_VLAN,
                                                         f"10.1.0.{(10 if side == 'i' else 20) + i}/24",
                                                         f"02:1a:00:0{int(side == 'h')}:00:0{i}"))
        # the tenant MTU, end to end: every link a tenant frame crosses before the underlay
        set_mtu(lab.ns(f"{T}gw"), ["tor"], tmtu)
        set_mtu(lab.ns(f"{T}tor"), ["gw", "h1", "h2"], tmtu)
        for h in hosts + l1_hosts:
            set_mtu(h.netns, ([] if h in l1_hosts else [h.nic]) + [iaas.vm_port(v.name) for v in h.vms.values()], tmtu)
            for v in h.vms.values():
                set_mtu(v.netns, ["eth0"], tmtu)
        if args.tso:
            for n in [o.node for o in lab.plan.ovs]:
                r.run(cmd("ovs-vsctl", f"--db={lab.ovs(n).db}", "set", "Open_vSwitch", ".",
                          "other_config:userspace-tso-enable=true"))
        if args.pin_ovs:
            insts = [lab.ovs(o.node) for o in lab.plan.ovs] + [h.ovs for h in hosts + l1_hosts]
            for inst in insts:
                r.run(cmd("taskset", "-a", "-p", "-c", args.pin_ovs, str(inst.pids()["ovs-vswitchd"])))
        switches = {
            "iaas_iaas": [f"{T}h1", f"{T}tor", f"{T}h2"],
            "iaas_haas": [f"{T}h1", f"{T}tor", f"{T}gw", "hgw", "l0-1", "v1"],
            "haas_haas": ["v1", "l0-1", "l0-2", "v2"],
        }
        out = {
            "iaas_iaas": measure(vms["i1"], vms["i2"], args.seconds, args.repeats),
            "iaas_haas": measure(vms["i1"], vms["h1"], args.seconds, args.repeats),
            "haas_haas": measure(vms["h1"], vms["h2"], args.seconds, args.repeats),
        }
        out["structure_ratio"] = round(out["iaas_haas"]["goodput_mbps"] / out["iaas_iaas"]["goodput_mbps"], 3)
        out["rtt_overhead_ms"] = round(out["iaas_haas"]["rtt_ms"] - out["iaas_iaas"]["rtt_ms"], 3)
        out["hops"] = {k: len(v) for k, v in switches.items()}
        out["switches"] = switches
        out.update(underlay_mtu=args.underlay_mtu, tenant_mtu=tmtu, tso=args.tso, pin_ovs=args.pin_ovs, repeats=args.repeats,
                   seconds=args.seconds, load_before=round(load, 2), l1_port=names.l1_port("v1")[0])
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception:  # noqa: BLE001 - the lab's down removes what is left
                pass
        realizer.down(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
