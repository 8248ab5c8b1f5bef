"""Data-plane bench in the two-DC lab (the paper's tables 4 and 5, side by side).

Prints one JSON object:

* ``direct``:  two IaaS hosts on VLAN 101 behind the IaaS top-of-rack switch (IaaS <-> IaaS);
* ``tunnel``:  the IaaS management host <-> an L1 on an HaaS L0, through the inter-DC GRE trunk
  and the tenant's overlay (IaaS <-> HaaS(L));
* ``overlay``: two L1s of one tenant on two L0s, through one mesh tunnel (HaaS(L) <-> HaaS(L));

each ``{rtt_ms, goodput_mbps}`` (ping average, iperf3 TCP goodput at the receiver), plus
``goodput_ratio`` (tunnel / direct) and ``rtt_overhead_ms`` (tunnel - direct).

Run as root: ``python bench/dataplane.py [--seconds 5]``. The lab is private to the run and
removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from iris_haas.lab import probe, realizer, tenants
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs
from iris_haas.linux.runner import SubprocessRunner


def measure(lab, client_node: str, server_node: str, server_ip: str, seconds: float) -> dict:
    if not probe.reachable(lab.ns(client_node), server_ip, timeout=15):
        raise RuntimeError(f"{client_node} cannot reach {server_ip}")
    rtt = probe.rtt_ms(lab.ns(client_node), server_ip, count=50)
    with probe.Iperf3Server(lab.ns(server_node)):
        gp = probe.iperf3(lab.ns(client_node), server_ip, seconds=seconds)
    return {"rtt_ms": round(rtt, 3), "goodput_mbps": round(gp, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="iperf3 duration per path")
    args = ap.parse_args()
    name = "bd" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    r = SubprocessRunner()
    try:
        realizer.up(lab, ephemeral=True)
        # a second IaaS host on VLAN 101, on the IaaS's own switch
        h2 = lab.ns("amgmt2")
        nl.ensure_netns(h2)
        r.run(nl.netns_sysctl_cmds(h2))
        nl.ensure_veth("mgmt2", lab.ns("ator"), "eth0", h2)
        r.run(ovs.txn(lab.ovs("ator").db, *ovs.add_port("tor", "mgmt2", tag=101, vlan_mode="access")))
        nl.ensure_addr(h2, "eth0", "10.0.101.11/24")
        r.run(nl.tx_offload_off_cmd(h2, "eth0"))
        tenants.realize(lab, [L1("a", "l0-1", "v1", vlan=101, address="10.0.101.21/24"),
                              L1("a", "l0-2", "v2", vlan=101, address="10.0.101.22/24")])
        out = {
            "direct": measure(lab, "amgmt2", "amgmt", "10.0.101.10", args.seconds),
            "tunnel": measure(lab, "v1", "amgmt", "10.0.101.10", args.seconds),
            "overlay": measure(lab, "v1", "v2", "10.0.101.22", args.seconds),
        }
        out["goodput_ratio"] = round(out["tunnel"]["goodput_mbps"] / out["direct"]["goodput_mbps"], 3)
        out["rtt_overhead_ms"] = round(out["tunnel"]["rtt_ms"] - out["direct"]["rtt_ms"], 3)
    finally:
        realizer.down(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
