"""Provisioning bench: from the reserve call to "the L1 answers from the IaaS side".

Brings up the default two-DC lab (4 L0s) and a coordinator wired to its agents, then for each L1
kind and each count (1, 4, 16 L1s of tenant a) and over repeats: reserve, commit and provision
through the coordinator's API (the CRM spreads the L1s over the L0s, the coordinator sends every
host its desired state at once, each agent creates and wires its L1s in parallel), and waits until
every L1's management address answers a ping from the tenant's management server in the IaaS DC.
That interval, from the reserve call, is the sample; the termination follows and is not timed.

``manual``: the same wiring for netns L1s done the way the paper's prototype did it, one shell
command per object, in sequence (``ip netns add``, ``ip link add ... type veth``, ``ip addr``,
``ethtool``, ``ovs-vsctl add-br`` / ``add-port`` for the tenant bridge, the GRE mesh and each
port), timed to the same "answers from the IaaS side".

Prints one JSON object: ``kinds -> kind -> count -> {p50_s, p95_s, n}``, ``manual -> count ->
{p50_s, n}``. Target for lxc: one node p50 <= 2 s, 16 nodes <= 15 s.

Run as root: ``python bench/provision.py [--kinds netns,lxc,kvm] [--counts 1,4,16] [--repeats 3]``,
or ``python bench/provision.py --lxc 64`` (64 lxc L1s at once; target ``kinds.lxc["64"].p50_s`` <= 6)
(about 8 minutes on 2 cores, most of it the kvm guests' TCG boots).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from iris_haas.api.service import LocalCoordinator
from iris_haas.contract.ops import BridgeOp, DesiredState, L1Op, TunnelOp
from iris_haas.control.sync import AgentDataPlane
from iris_haas.lab import realizer, tenants
from iris_haas.lab.register import register
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import cmd


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return round(s[max(0, math.ceil(p * len(s)) - 1)], 3)


def nodes_for(lab, kind: str, count: int) -> list[L1]:
    l0s = lab.topo.l0_nodes()
    return [L1("a", l0s[i % len(l0s)], f"{kind[0]}{i}", kind, f"10.0.101.{100 + i}/24",
                   memory_mb=128 if kind == "kvm" else 64) for i in range(count)]


def answers(ns: str, ip: str, timeout: float) -> bool:
    """Poll with one ping every 0.25 s at most (a lost ping costs 0.25 s, not 1 s)."""
    deadline = time.monotonic() + timeout
    c = cmd("ping", "-n", "-q", "-c", "1", "-W", "0.25", ip, netns=ns)
    while time.monotonic() < deadline:
        if subprocess.run(c.full_argv(), capture_output=True).returncode == 0:
            return True
    return False


def wait_answers(lab, ips: list[str], timeout: float) -> None:
    ns = lab.ns("amgmt")
    with ThreadPoolExecutor(max_workers=min(16, len(ips))) as ex:
        ok = list(ex.map(lambda ip: answers(ns, ip, timeout), ips))
    if not all(ok):
        raise RuntimeError(f"no answer from {[ip for ip, k in zip(ips, ok) if not k]}")


def reset(lab) -> None:
    tenants.realize(lab, [])
    nl.flush_neighbours(lab.ns("amgmt"), "eth0")


def one_run(lab, tenant, kind: str, count: int, timeout: float) -> float:
    """Through the coordinator's API: reserve -> commit -> provision (the CRM places the L1s, the
    agents create and wire them), timed until every L1 answers; then terminate (not timed)."""
    ips = [f"10.0.101.{100 + i}" for i in range(count)]
    t0 = time.monotonic()
    r = tenant.post("/reservations", {"duration_s": 600, "items": [
        {"kind": "compute", "count": count, "l1_kind": kind, "cpus": 1, "memory_mb": 128 if kind == "kvm" else 64,
         "disk_gb": 0, "addresses": [f"{ip}/24" for ip in ips]}]})
    tenant.post(f"/reservations/{r['id']}/commit")
    try:
        tenant.post(f"/reservations/{r['id']}/provision")
        wait_answers(lab, ips, timeout)
        return time.monotonic() - t0
    finally:
        tenant.post(f"/reservations/{r['id']}/terminate")
        nl.flush_neighbours(lab.ns("amgmt"), "eth0")


# ---------------------------------------------------------------- the paper's way

def manual_cmds(lab, count: int) -> list:
    """The shell commands, one per object, for ``count`` netns L1s (from the same decision)."""
    ports = nodes_for(lab, "netns", count)
    states = tenants.desired(lab.topo, ports)
    out = []
    for host, st in states.items():
        db = f"--db={lab.ovs(host).db}"
        hns = lab.ns(host)
        tunnels = []
        for o in st.ops:
            if isinstance(o, BridgeOp):
                out.append(cmd("ovs-vsctl", db, "add-br", o.name, "--", "set", "bridge", o.name,
                               f"datapath_type={lab.topo.datapath_type}"))
            elif isinstance(o, TunnelOp):
                out.append(cmd("ovs-vsctl", db, "add-port", o.bridge, o.name, "--", "set", "interface", o.name,
                               "type=gre", f"options:remote_ip={o.remote_ip}", f"options:key={o.key}",
                               "--", "set", "port", o.name, f"protected={'true' if o.mesh else 'false'}"))
                tunnels.append(o.remote_ip)
            elif isinstance(o, L1Op):  # a netns L1 is its NIC and nothing else
                o = o.port_op()
                l1ns, l1if = o.l1_netns, o.l1_ifname
                out += [cmd("ip", "netns", "add", l1ns),
                        cmd("ip", "-n", hns, "link", "add", o.name, "type", "veth", "peer", "name", l1if,
                            "netns", l1ns),
                        cmd("ip", "-n", l1ns, "link", "set", "lo", "up"),
                        cmd("ip", "-n", l1ns, "link", "set", l1if, "up"),
                        cmd("ip", "-n", hns, "link", "set", o.name, "up"),
                        cmd("ip", "-n", l1ns, "addr", "add", o.address, "dev", l1if),
                        cmd("ethtool", "-K", l1if, "tx", "off", netns=l1ns),
                        cmd("ovs-vsctl", db, "add-port", o.bridge, o.name, "--", "set", "port", o.name,
                            f"tag={o.vlan}", "vlan_mode=native-untagged")]
        # what the operator does so the userspace tunnels learn their peers: one arping each
        for ip in tunnels:
            dev = "br-fab" if host == "hgw" and ip.startswith(lab.topo.haas.fabric.rsplit(".", 1)[0]) else "br-phy"
            out.append(cmd("arping", "-q", "-C", "1", "-c", "1", "-w", "1", "-i", dev, ip, netns=hns, ok=(0, 1)))
    return out, ports, states


def manual_run(lab, count: int, timeout: float) -> float:
    cmds, ports, states = manual_cmds(lab, count)
    t0 = time.monotonic()
    try:
        for c in cmds:
            p = subprocess.run(c.full_argv(), capture_output=True, text=True)
            if p.returncode not in c.ok:
                raise RuntimeError(f"{c}: {p.stderr}")
        wait_answers(lab, [p.address.split("/")[0] for p in ports], timeout)
        return time.monotonic() - t0
    finally:
        for host, st in states.items():
            brs = [o.name for o in st.ops if isinstance(o, BridgeOp)]
            for b in brs:
                subprocess.run(cmd("ovs-vsctl", f"--db={lab.ovs(host).db}", "--if-exists", "del-br", b).full_argv(),
                               capture_output=True)
            for o in st.ops:
                if isinstance(o, L1Op):
                    nl.delete_link(lab.ns(host), o.port)
        for p in ports:
            nl.delete_netns(lab.ns(p.name))
        nl.flush_neighbours(lab.ns("amgmt"), "eth0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="netns,lxc,kvm")
    ap.add_argument("--counts", default="1,4,16")
    ap.add_argument("--kvm-counts", default="1,4,16")
    ap.add_argument("--kvm16-repeats", type=int, default=1,
                    help="repeats for 16 kvm L1s: 16 TCG guests booting on 2 cores take about a minute")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--lxc", type=int, metavar="N",
                    help="only N lxc L1s at once (same as --kinds lxc --counts N, without the manual runs)")
    args = ap.parse_args()
    if args.lxc is not None:
        if args.lxc < 1:
            ap.error("--lxc: at least 1")
        args.kinds, args.counts = "lxc", str(args.lxc)
    counts = [int(c) for c in args.counts.split(",")]
    name = "bp" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    out: dict = {"kinds": {}, "manual": {}, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    coord = None
    data_dir = Path(tempfile.mkdtemp(prefix="iris-bench-"))
    try:
        realizer.up(lab, ephemeral=True)
        coord = LocalCoordinator(data_dir, dataplane=AgentDataPlane(lab.coordinator_tls(), netns=lab.ns("ctl"), timeout=600))
        coord.__enter__()
        admin = coord.client(coord.admin_token, timeout=600)
        # enough CPUs on the L0s for the largest count of 1-CPU L1s
        per_l0 = max(8, math.ceil(max(counts) / len(lab.topo.l0_nodes())))
        tenant = coord.client(register(lab, admin, cpus=per_l0)["a"], timeout=600)
        for kind in args.kinds.split(","):
            ks = [int(c) for c in args.kvm_counts.split(",")] if kind == "kvm" else counts
            out["kinds"][kind] = {}
            for count in ks:
                try:
                    reps = min(args.repeats, args.kvm16_repeats) if kind == "kvm" and count >= 16 else args.repeats
                    tmo = max(args.timeout, 10.0 * count) if kind == "kvm" else args.timeout
                    xs = [one_run(lab, tenant, kind, count, tmo) for _ in range(reps)]
                    out["kinds"][kind][str(count)] = {"p50_s": pct(xs, 0.5), "p95_s": pct(xs, 0.95), "n": len(xs),
                                                      "samples_s": [round(x, 2) for x in xs]}
                except Exception as e:  # noqa: BLE001 - report, release, go on with the next
                    out["kinds"][kind][str(count)] = {"error": str(e)[:300]}
                    reset(lab)
        # the manual way starts from hosts that hold nothing of Iris's (no tenant bridge either)
        tenants.push(lab, {n: DesiredState() for n in lab.agent_nodes()})
        for count in counts if args.lxc is None else []:
            try:
                xs = [manual_run(lab, count, args.timeout) for _ in range(args.repeats)]
                out["manual"][str(count)] = {"p50_s": pct(xs, 0.5), "n": len(xs)}
            except Exception as e:  # noqa: BLE001
                out["manual"][str(count)] = {"error": str(e)[:300]}
    finally:
        try:
            if coord is not None:
                coord.__exit__(None, None, None)
            reset(lab)
        except Exception:  # noqa: BLE001 - the lab goes down anyway
            pass
        realizer.down(name)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
