"""Does every host of the lab hold exactly what the coordinator's database wants?

For each agent host: the ops the database derives for it (``GET /v1/hosts/{host}/desired-state``)
against what its agent finds really there (``GET /v1/state``: OVS rows, L1s, tc classes,
volumes), and whether a reconcile would still change anything; and, over the whole machine,
every namespace named as a coordinator names L1s, exports and routers that nothing wants.
"""

from __future__ import annotations

import os
import re
import time

from iris_haas.api.client import ApiError, Client

# what a coordinator's L1s, exports and routers are called (contract.names): iris<n>, irisv<n>, irisr<n>
L1_NETNS = re.compile(r"^iris[rv]?[0-9a-z]+$")


def namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _ident(o: dict) -> tuple:
    if o["op"] == "shape":
        return ("shape", o["port"])
    if o["op"] == "tunnel_limit":
        return ("tunnel_limit", o["uplink"])
    return (o["op"], o["name"])


def audit(lab, admin: Client, ignore: set[str] = frozenset()) -> list[str]:
    """Every difference: what a host holds that the database does not want, and what it lacks.
    ``ignore``: namespaces that were there before (another run's), not this coordinator's."""
    out: list[str] = []
    wanted_ns: set[str] = set()
    for host in lab.agent_nodes():
        want = admin.get(f"/hosts/{host}/desired-state")["ops"]
        with lab.client(host, timeout=20) as agent:
            st = agent.state()
        if st["pending"]:
            out.append(f"{host}: would still do {st['pending']}")
        have = {_ident(o) for o in st["observed"]}
        need = {_ident(o) for o in want}
        for o in want:
            if o["op"] == "l1":  # its NIC is observed as a port
                need.add(("port", o["port"]))
            wanted_ns |= {o[k] for k in ("netns", "l1_netns") if o.get(k)}
        out += [f"{host}: holds {i} that nothing wants" for i in sorted(have - need, key=str)]
        out += [f"{host}: lacks {i}" for i in sorted(need - have, key=str)]
    for ns in sorted(namespaces() - wanted_ns - set(ignore)):
        if L1_NETNS.match(ns):
            out.append(f"namespace {ns} that nothing wants")
    return out


def converged(lab, admin: Client, timeout: float, ignore: set[str] = frozenset()) -> list[str]:
    """Wait until every host holds its generation, is in sync and matches the database; the
    differences left at ``timeout`` (none: converged)."""
    t0 = time.monotonic()
    diffs = ["not checked yet"]
    while time.monotonic() - t0 < timeout:
        try:
            hosts = admin.get("/hosts")
            behind = [h["host"] for h in hosts if not (h["acked"] == h["generation"] and h["in_sync"])]
            diffs = [f"{h}: behind its generation" for h in behind] or audit(lab, admin, ignore)
            if not diffs:
                return []
        except (ApiError, OSError) as e:
            diffs = [f"{type(e).__name__}: {e}"]
        time.sleep(0.25)
    return diffs
