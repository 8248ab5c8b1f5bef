"""`iris demo --control-plane-only`: the coordinator's scenario, end to end through the real API over HTTP.

It starts a coordinator (SQLite in a temporary data directory, the scheduler running), registers a
HaaS inventory, lets two tenants reserve, commit, provision, modify, release and terminate, and
checks what the API and the desired data-plane state say at each step. The data plane behind the
managers here is the in-memory twin: this demo shows the coordinator, not packets.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import UTC
from pathlib import Path

from rich.console import Console
from rich.table import Table

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator


def run(console: Console, *, out: Path = Path("."), keep: bool = False) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="iris-demo-"))
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))
        mark = "[green]ok[/green]" if ok else "[red]FAILED[/red]"
        console.print(f"  {mark} {name}" + (f"  [dim]{detail}[/dim]" if detail else ""))

    def step(text: str) -> None:
        console.rule(f"[bold]{text}")

    try:
        with LocalCoordinator(data_dir, hold_timeout_s=2.0) as coord:
            admin = coord.client((data_dir / "admin-token").read_text().strip())
            step("HaaS admin registers the inventory")
            admin.post("/sites", {"name": "haas-dc"})
            for i in range(4):
                admin.post("/nodes", {"name": f"l0-{i}", "site": "haas-dc", "cpus": 8, "memory_mb": 16384,
                                      "disk_gb": 200, "l1_kinds": ["lxc", "kvm", "netns"],
                                      "underlay_address": f"198.18.1.{11 + i}"})
            admin.post("/gateways", {"name": "haas-gw", "site": "haas-dc", "underlay_address": "198.18.0.1",
                                     "fabric_address": "198.18.1.1", "uplink": "up"})
            admin.post("/storage-pools", {"name": "pool0", "site": "haas-dc", "capacity_gb": 500})
            tokens = {t: admin.post("/tenants", {"name": t})["token"] for t in ("tenant-a", "tenant-b")}
            tenant = {t: coord.client(tok) for t, tok in tokens.items()}
            for n, t in enumerate(tokens):
                tenant[t].post("/sites", {"name": f"iaas-{t[-1]}", "gateway_underlay": f"198.19.{n}.1",
                                          "vlans": "100-199", "mgmt_vlan": 101, "service_model": "a"})
                admin.post("/links", {"name": f"inet-{t[-1]}", "site_a": "haas-dc", "site_b": f"iaas-{t[-1]}",
                                      "capacity_mbps": 1000})
            console.print("  4 L0 nodes (8 cpus, 16 GB), a gateway, a 500 GB pool, two tenants with IaaS sites, "
                          "two 1 Gb/s links")

            a, b = tenant["tenant-a"], tenant["tenant-b"]
            step("Tenant A: 2 LXC L1 nodes + 200 Mb/s for ten minutes, model (a)")
            ra = a.post("/reservations", {"description": "peak offload", "duration_s": 600, "items": [
                {"kind": "compute", "count": 2, "l1_kind": "lxc", "cpus": 4, "memory_mb": 8192, "disk_gb": 50},
                {"kind": "network", "bandwidth_mbps": 200}]})
            check("reserve -> ReserveHeld", ra["reservation_state"] == "ReserveHeld", ra["id"])
            ra = a.post(f"/reservations/{ra['id']}/commit")
            check("commit -> ReserveStart, version 1 committed",
                  ra["reservation_state"] == "ReserveStart" and ra["committed_version"] == 1)
            ra = a.post(f"/reservations/{ra['id']}/provision")
            check("provision -> Provisioned, data plane active", ra["provision_state"] == "Provisioned"
                  and ra["data_plane_active"])
            hosts = {r["node"] for r in ra["resources"] if "node" in r}
            ops = {h: admin.get(f"/hosts/{h}/desired-state")["ops"] for h in hosts | {"haas-gw"}}
            ports = [o for h in hosts for o in ops[h] if o["op"] == "l1"]
            check("desired state: each L1 a NIC on tenant A's bridge, VLAN 101 native, all VLANs trunked",
                  len(ports) == 2 and all(p["vlan"] == 101 and p["trunk"] for p in ports), f"L1s on {sorted(hosts)}")
            check("the HaaS gateway: a GRE trunk to A's gateway with A's key, a 200 Mbit/s limit, a mesh to the L0s",
                  _limit(ops["haas-gw"], "tenant-a") == 200
                  and sum(o["op"] == "tunnel" and o["mesh"] for o in ops["haas-gw"]) == len(hosts)
                  and any(o["op"] == "tunnel" and not o["mesh"] and o["remote_ip"] == "198.19.0.1"
                          for o in ops["haas-gw"]))

            step("Tenant B: an advance reservation that starts in 2 s, provisioned before its start")
            rb = b.post("/reservations", {"start": _iso(time.time() + 2), "duration_s": 600, "items": [
                {"kind": "compute", "count": 2, "l1_kind": "lxc", "cpus": 4, "memory_mb": 8192, "disk_gb": 50},
                {"kind": "network", "bandwidth_mbps": 300}]})
            b.post(f"/reservations/{rb['id']}/commit")
            rb = b.post(f"/reservations/{rb['id']}/provision")
            check("provisioned before the start: data plane not active yet", not rb["data_plane_active"])
            rb = _wait(lambda: b.get(f"/reservations/{rb['id']}"), lambda r: r["data_plane_active"], 6)
            check("the scheduler activates it at the start time", rb["data_plane_active"])

            step("Admission never overbooks")
            try:
                b.post("/reservations", {"duration_s": 600, "items": [
                    {"kind": "compute", "count": 5, "cpus": 4, "memory_mb": 8192, "disk_gb": 50}]})
                check("5 more 4-cpu L1s are refused (only 4 fit)", False)
            except ApiError as e:
                check("5 more 4-cpu L1s are refused (only 4 fit)", e.status == 409 and e.type == "ReserveFailed",
                      e.message)
            win = b.get("/availability", params={"duration_s": 600, "count": 8, "cpus": 4, "memory_mb": 8192,
                                                 "disk_gb": 50})
            check("availability: 8 such L1s fit only once A's reservation ends", win["start"] >= ra["end"][:19],
                  f"earliest {win['start'][:19]}")

            step("Tenant A modifies: 200 -> 400 Mb/s (version 2)")
            a.post(f"/reservations/{ra['id']}/modify", {"version": 2, "bandwidth_mbps": 400})
            ra = a.post(f"/reservations/{ra['id']}/commit")
            check("version 2 committed and the gateway's limit follows", ra["committed_version"] == 2
                  and _limit(admin.get("/hosts/haas-gw/desired-state")["ops"], "tenant-a") == 400)

            step("Hold timeout (2 s in this demo; 60 s by default)")
            rt = b.post("/reservations", {"duration_s": 60, "items": [{"kind": "storage", "size_gb": 100}]})
            rt = _wait(lambda: b.get(f"/reservations/{rt['id']}"), lambda r: r["reservation_state"] == "ReserveTimeout", 6)
            evs = [e["type"] for e in b.get(f"/reservations/{rt['id']}/events")]
            check("an uncommitted hold times out", rt["reservation_state"] == "ReserveTimeout" and "reserveTimeout" in evs)

            step("Tenants are isolated")
            try:
                b.get(f"/reservations/{ra['id']}")
                check("tenant B cannot see tenant A's reservation", False)
            except ApiError as e:
                check("tenant B cannot see tenant A's reservation", e.status == 404)

            step("Release and terminate")
            for client, r in ((a, ra), (b, rb)):
                client.post(f"/reservations/{r['id']}/release")
                client.post(f"/reservations/{r['id']}/terminate")
            gone = all(not admin.get(f"/hosts/{h}/desired-state")["ops"] for h in hosts | {"haas-gw"})
            check("terminated: no desired state left on any host", gone)
            win = b.get("/availability", params={"duration_s": 600, "count": 8, "cpus": 4, "memory_mb": 8192,
                                                 "disk_gb": 50})
            check("everything free again: 8 L1s fit now", win["count_fit"] >= 8)
            rows = admin.get("/reservations")
            table = Table(title="reservations at the end")
            for c in ("id", "tenant_id", "version", "reservation_state", "provision_state", "lifecycle_state"):
                table.add_column(c)
            for r in rows:
                table.add_row(r["id"][:12], str(r["tenant_id"]), str(r["version"]), r["reservation_state"],
                              r["provision_state"], r["lifecycle_state"])
            console.print(table)
    except ApiError as e:
        check("the scenario ran without an API error", False, f"{e.type}: {e.message}")
    finally:
        report = {"checks": {name: ok for name, ok, _ in checks}}
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    failed = [name for name, ok, _ in checks if not ok]
    console.rule()
    console.print(f"{len(checks) - len(failed)} of {len(checks)} checks passed; report.json written"
                  + ("" if not keep else f"; data kept in {data_dir}"))
    return 1 if failed else 0


def _limit(ops: list[dict], tenant: str) -> float | None:
    return next((o["rate_mbit"] for o in ops if o["op"] == "tunnel_limit" and o["tenant"] == tenant), None)


def _iso(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def _wait(get, ok, timeout: float):
    deadline = time.time() + timeout
    value = get()
    while not ok(value) and time.time() < deadline:
        time.sleep(0.1)
        value = get()
    return value
