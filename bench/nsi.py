"""NSI bench: inter-DC bandwidth on demand through the lab's NSI provider (the uPA).

Prints one JSON object:

* ``reserve_to_held_ms``: POST /reservations (one netns L1 and 100 Mb/s over the NSI link) until
  it answers ReserveHeld (the provider's reserveConfirmed received);
* ``commit_ms``: POST commit (reserveCommit first, then compute);
* ``provision_to_active_ms``: POST provision until the provider's dataPlaneStateChange (active)
  for the connection is among the reservation's events (its VLAN circuit up);

each the p50 over ``--runs`` reservations (each terminated after), plus ``p90`` of each, and
``messages`` / ``messages_valid``: every NSI message the coordinator sent or received, and how
many of them are valid against the OGF schemas (``--schemas``, default ../shared/nsi).
The IaaS gateway runs its trunk inside the circuit (as `iris gateway-config --circuit-vlan`
sets it, once the first reservation says its VLAN). ``circuit``: in the last run, iperf3 goodput
from the IaaS management host to the L1 (``up_mbps``) and back (``down_mbps``), 4 s each, beside
the ``reserved_mbps``: what the WAN holds the circuit to.

Run as root: ``python bench/nsi.py [--runs 20]``. The lab is private to the run and removed at
the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from iris_haas.api.service import LocalCoordinator
from iris_haas.control.sync import AgentDataPlane
from iris_haas.lab import probe, realizer
from iris_haas.lab.register import register
from iris_haas.lab.upa import lab_nsa, lab_stp
from iris_haas.nsi.xsd import Validator

ROOT = Path(__file__).resolve().parents[1]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def run(lab, runs: int, xsd: Validator, circuit_mbps: int = 100) -> dict:
    counts = {"messages": 0, "messages_valid": 0}

    def tap(_: str, data: bytes) -> None:
        counts["messages"] += 1
        errors = xsd.errors(data)
        counts["messages_valid"] += not errors
        if errors:
            print(f"invalid NSI message: {errors}", file=sys.stderr)

    ctl = lab.ns("ctl")
    sock, reply = lab.nsi_listener()
    times: dict[str, list[float]] = {"reserve_to_held_ms": [], "commit_ms": [], "provision_to_active_ms": []}
    with tempfile.TemporaryDirectory() as d, LocalCoordinator(
            Path(d), dataplane=AgentDataPlane(lab.coordinator_tls(), netns=ctl), sockets=[sock], nsi_reply_url=reply,
            agent_netns=ctl) as c:
        c.engine.nsi.tap = tap
        admin = c.client(c.admin_token)
        tokens = register(lab, admin)
        admin.delete("/links/inet-a")
        admin.post("/links", {"name": "wan-a", "site_a": "haas", "site_b": "iaas-a", "capacity_mbps": 10_000,
                              "kind": "nsi", "nsi_provider": lab.upa_url, "nsi_provider_nsa": lab_nsa(lab.name),
                              "source_stp": lab_stp(lab.name, "hgw"), "dest_stp": lab_stp(lab.name, "agw")})
        a = c.client(tokens["a"])
        body = {"duration_s": 600, "items": [
            {"kind": "compute", "count": 1, "l1_kind": "netns", "cpus": 1, "memory_mb": 256, "disk_gb": 1,
             "addresses": ["10.0.101.71/24"]}, {"kind": "network", "bandwidth_mbps": circuit_mbps}]}
        circuit_vlan = None
        for _ in range(runs):
            t0 = time.perf_counter()
            r = a.post("/reservations", body)
            times["reserve_to_held_ms"].append(_ms(t0))
            assert r["reservation_state"] == "ReserveHeld", r
            nsi = next(x for x in r["resources"] if x["manager"] == "nrm")["nsi"]
            cid = nsi["connection_id"]
            if circuit_vlan != nsi["vlan"]:  # the IaaS operator runs its trunk in the circuit (once: same VLAN each run)
                circuit_vlan = nsi["vlan"]
                realizer.iaas_gateway(lab, "a", circuit_vlan=circuit_vlan)
            t0 = time.perf_counter()
            a.post(f"/reservations/{r['id']}/commit")
            times["commit_ms"].append(_ms(t0))
            t0 = time.perf_counter()
            a.post(f"/reservations/{r['id']}/provision")
            deadline = time.time() + 30
            while not any(e["type"] == "dataPlaneStateChange" and e["detail"].get("connection_id") == cid
                          and e["detail"]["active"] for e in a.get(f"/reservations/{r['id']}/events")):
                if time.time() > deadline:
                    raise RuntimeError(f"connection {cid} never became active")
                time.sleep(0.005)
            times["provision_to_active_ms"].append(_ms(t0))
            if len(times["provision_to_active_ms"]) == runs:
                circuit = _goodput(lab, a, r, circuit_mbps)
            a.post(f"/reservations/{r['id']}/terminate")
        realizer.iaas_gateway(lab, "a")
    out: dict = {k: round(statistics.median(v), 1) for k, v in times.items()}
    out |= {k.replace("_ms", "_p90_ms"): round(statistics.quantiles(v, n=10)[-1], 1) for k, v in times.items()}
    return out | counts | {"runs": runs, "circuit": circuit}


def _goodput(lab, a, r: dict, mbps: int) -> dict:
    """The reservation's goodput through its circuit (``mbps`` reserved), both ways."""
    vlan = next(x for x in a.get(f"/reservations/{r['id']}")["resources"] if x["manager"] == "nrm")["nsi"]["vlan"]
    l1 = next(x["l1"] for x in a.get(f"/reservations/{r['id']}")["resources"] if "l1" in x)
    if not probe.reachable(lab.ns("amgmt"), "10.0.101.71", timeout=15):
        raise RuntimeError(f"the L1 does not answer through the circuit on VLAN {vlan}")
    with probe.Iperf3Server(l1):
        up = probe.iperf3(lab.ns("amgmt"), "10.0.101.71", seconds=4)
        down = probe.iperf3(lab.ns("amgmt"), "10.0.101.71", seconds=4, reverse=True)
    return {"reserved_mbps": mbps, "vlan": vlan, "up_mbps": round(up, 1), "down_mbps": round(down, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--schemas", type=Path, default=ROOT / ".." / "shared" / "nsi")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (the lab)"}))
        return 1
    xsd = Validator(args.schemas)
    name = "bn" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    try:
        realizer.up(lab, ephemeral=True)
        out = run(lab, args.runs, xsd)
    finally:
        realizer.down(name)
    out["leftovers"] = realizer.leftovers(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
