"""Reserve + commit latency and throughput with 1,000 nodes and 100,000 reservations in the calendar.

Beside Iris's admission (one range query over the calendar for all candidate nodes, then an in-memory
sweep), the same requests run through a naive baseline on an identical copy of the database: one
interval-overlap query per candidate node, as esi-leap checks availability. Prints one JSON object.

    python bench/reservations.py [--nodes 1000] [--reservations 100000] [--requests 400]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select  # noqa: E402

from iris_haas.contract.errors import ReserveFailed  # noqa: E402
from iris_haas.control.engine import Coordinator  # noqa: E402
from iris_haas.control.schemas import ReserveRequest, from_epoch  # noqa: E402
from iris_haas.store import calendar  # noqa: E402
from iris_haas.store.db import Database  # noqa: E402
from iris_haas.store.models import Allocation, Criteria, Node, Reservation, Site, Tenant  # noqa: E402

YEAR = 365 * 86400.0
NODE = (32, 131072, 2000)  # cpus, MB, GB per L0


def populate(db: Database, nodes: int, reservations: int, t0: float, rng: random.Random) -> None:
    with db.transaction() as s:
        site = Site(name="haas", kind="haas")
        tenant = Tenant(name="bench", token_hash="bench", tunnel_key=1001, created_at=t0)
        s.add_all([site, tenant])
        s.flush()
        s.execute(insert(Node), [
            {"name": f"l0-{i:04d}", "site_id": site.id, "cpus": NODE[0], "memory_mb": NODE[1], "disk_gb": NODE[2],
             "l1_kinds_text": ",lxc,kvm,netns,", "state": "available"} for i in range(nodes)])
        site_id, tenant_id = site.id, tenant.id
    batch = 10_000
    for off in range(0, reservations, batch):
        res, crit, alloc = [], [], []
        for _ in range(min(batch, reservations - off)):
            rid = uuid.uuid4().hex
            start = t0 + rng.uniform(0, YEAR)
            end = start + rng.uniform(3600, 8 * 3600)
            cpus = rng.randint(1, 8)
            res.append({"id": rid, "tenant_id": tenant_id, "site_id": site_id, "description": "", "version": 1,
                        "committed_version": 1, "reservation_state": "ReserveStart", "provision_state": "Released",
                        "lifecycle_state": "Created", "data_plane_active": False, "created_at": t0})
            crit.append({"reservation_id": rid, "version": 1, "start": start, "end": end, "items": [
                {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": cpus, "memory_mb": 4096, "disk_gb": 20}]})
            alloc.append({"reservation_id": rid, "version": 1, "item": 0, "resource_kind": "node",
                          "resource_id": rng.randint(1, nodes), "start": start, "end": end,
                          "duration_s": end - start, "cpus": cpus, "memory_mb": 4096, "disk_gb": 20, "mbps": 0,
                          "gb": 0, "status": "committed", "detail": {}})
        with db.transaction() as s:
            s.execute(insert(Reservation), res)
            s.execute(insert(Criteria), crit)
            s.execute(insert(Allocation), alloc)


def requests(n: int, t0: float, rng: random.Random) -> list[tuple[float, float, int, int]]:
    out = []
    for _ in range(n):
        start = t0 + rng.uniform(0, YEAR)
        out.append((start, start + rng.uniform(3600, 8 * 3600), rng.randint(1, 4), rng.randint(1, 8)))
    return out


def measure_iris(db: Database, reqs, t0: float, tenant_id: int) -> list[float]:
    coord = Coordinator(db, clock=lambda: t0)
    lat = []
    for start, end, count, cpus in reqs:
        req = ReserveRequest(start=from_epoch(start), end=from_epoch(end), items=[
            {"kind": "compute", "count": count, "cpus": cpus, "memory_mb": 4096, "disk_gb": 20}])
        t = time.perf_counter()
        try:
            res = coord.reserve(tenant_id, req)
            coord.commit(tenant_id, res.id)
        except ReserveFailed:
            pass
        lat.append(time.perf_counter() - t)
    return lat


def naive_reserve(db: Database, start: float, end: float, count: int, cpus: int, tenant_id: int, site_id: int) -> None:
    """The baseline: the same decision, but one overlap query per candidate node."""
    need = (cpus, 4096, 20)
    with db.transaction() as s:
        nodes = s.execute(select(Node.id, Node.cpus, Node.memory_mb, Node.disk_gb).where(
            Node.site_id == site_id, Node.state == "available")).all()
        free = {}
        for n in nodes:
            rows = s.execute(select(Allocation.start, Allocation.end, Allocation.cpus, Allocation.memory_mb,
                                    Allocation.disk_gb).where(
                Allocation.resource_kind == "node", Allocation.resource_id == n.id,
                Allocation.start < end, Allocation.end > start)).all()
            used = calendar.peak([(r[0], r[1], (r[2], r[3], r[4])) for r in rows], start, end, 3)
            free[n.id] = (n.cpus - used[0], n.memory_mb - used[1], n.disk_gb - used[2])
        chosen = calendar.place(free, need, count)
        if chosen is None:
            return
        rid = uuid.uuid4().hex
        s.add(Reservation(id=rid, tenant_id=tenant_id, site_id=site_id, description="", version=1,
                          committed_version=1, reservation_state="ReserveStart", provision_state="Released",
                          lifecycle_state="Created", data_plane_active=False, created_at=start))
        s.flush()
        s.add(Criteria(reservation_id=rid, version=1, start=start, end=end, items=[]))
        for node_id in chosen:
            s.add(Allocation(reservation_id=rid, version=1, item=0, resource_kind="node", resource_id=node_id,
                             start=start, end=end, duration_s=end - start, cpus=cpus, memory_mb=4096, disk_gb=20,
                             status="committed", detail={}))


def measure_naive(db: Database, reqs, tenant_id: int, site_id: int) -> list[float]:
    lat = []
    for start, end, count, cpus in reqs:
        t = time.perf_counter()
        naive_reserve(db, start, end, count, cpus, tenant_id, site_id)
        lat.append(time.perf_counter() - t)
    return lat


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else values[0] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--reservations", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--baseline-requests", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = 2_000_000_000.0
    tmp = Path(tempfile.mkdtemp(prefix="iris-bench-"))
    try:
        path = tmp / "iris.db"
        db = Database(f"sqlite:///{path}")
        db.migrate()
        t = time.perf_counter()
        populate(db, args.nodes, args.reservations, t0, rng)
        populate_s = time.perf_counter() - t
        db.dispose()
        shutil.copy(path, tmp / "naive.db")
        reqs = requests(args.requests, t0, rng)

        db = Database(f"sqlite:///{path}")
        with db.transaction() as s:
            tenant_id = s.scalar(select(Tenant.id))
            site_id = s.scalar(select(Site.id))
        t = time.perf_counter()
        ours = measure_iris(db, reqs, t0, tenant_id)
        ours_total = time.perf_counter() - t
        db.dispose()

        naive_db = Database(f"sqlite:///{tmp / 'naive.db'}")
        naive = measure_naive(naive_db, reqs[: args.baseline_requests], tenant_id, site_id)
        naive_db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p99, base_p99 = pct(ours, 99), pct(naive, 99)
    print(json.dumps({
        "nodes": args.nodes,
        "reservations": args.reservations,
        "requests": len(ours),
        "p50_ms": round(pct(ours, 50), 2),
        "p99_ms": round(p99, 2),
        "per_s": round(len(ours) / ours_total, 1),
        "baseline_p50_ms": round(pct(naive, 50), 2),
        "baseline_p99_ms": round(base_p99, 2),
        "speedup": round(base_p99 / p99, 1),
        "database": "sqlite",
        "populate_s": round(populate_s, 1),
    }))


if __name__ == "__main__":
    main()
