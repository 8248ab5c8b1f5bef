"""Lab scale bench: how long the lab takes to come up, and how adding ports scales.

Brings up the default lab with 8 L0s, then adds 32 ports of one tenant, one at a time, spread
round-robin over the L0s (so the tenant's mesh grows with the first 8). Each add is what the NRM
would do: derive every host's desired state, send it to the agents whose state changed, and wait
until each reports it is in sync. Prints JSON: ``lab_up_s`` and ``add_port_s`` (32 seconds).
Targets: ``lab_up_s`` <= 10, the 32nd add <= 3x the 4th.

Run as root: ``python bench/lab_scale.py [--l0s 8] [--ports 32]``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time

from iris_haas.lab import realizer, tenants
from iris_haas.lab.tenants import L1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--l0s", type=int, default=8)
    ap.add_argument("--ports", type=int, default=32)
    args = ap.parse_args()
    name = "bs" + secrets.token_hex(2)
    lab = realizer.load(None, name=name, l0_count=args.l0s)
    out: dict = {"l0s": args.l0s}
    try:
        t0 = time.monotonic()
        realizer.up(lab, ephemeral=True)
        out["lab_up_s"] = round(time.monotonic() - t0, 3)
        ports: list[L1] = []
        current = tenants.desired(lab.topo, ports)
        times = []
        for k in range(args.ports):
            node = f"l0-{k % args.l0s + 1}"
            ports.append(L1("a", node, f"s{k}", vlan=101, address=f"10.0.101.{100 + k}/24"))
            t = time.monotonic()
            new = tenants.desired(lab.topo, ports)
            changed = {n for n in new if new[n] != current.get(n)}
            res = tenants.push(lab, new, only=changed)
            if not all(r["in_sync"] for r in res.values()):
                raise RuntimeError(f"port {k}: not in sync: {res}")
            times.append(round(time.monotonic() - t, 4))
            current = new
        out["add_port_s"] = times
        out["add_4th_s"], out["add_32nd_s"] = times[3], times[-1]
        out["ratio_last_to_4th"] = round(times[-1] / times[3], 2)
    finally:
        realizer.down(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
