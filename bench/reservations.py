"""Reserve + commit latency and throughput with 1,000 nodes and 100,000 reservations in the calendar.

Beside Iris's admission (one range query over the calendar for all candidate nodes, then an in-memory
sweep), the same requests run through a naive baseline on an identical copy of the database (less
Iris's covering calendar index): one interval-overlap query per candidate node, as esi-leap checks
availability. Prints one JSON object.

    python bench/reservations.py [--nodes 1000] [--reservations 100000] [--requests 400]
        [--database-url postgresql] [--http [--clients 8]]

``--database-url postgresql`` runs both on a private PostgreSQL server the bench starts (Debian's
binaries, a Unix socket, stopped by its PID), the baseline on a copy made with ``CREATE DATABASE …
TEMPLATE``. ``--http`` sends Iris's requests through a real ``iris serve`` (a process of its own,
uvicorn) with the project's HTTP client, from ``--clients`` threads at once; the baseline stays in
process (it has no server), so ``speedup`` compares Iris over HTTP with the baseline's direct queries.
The clients start once every host is in sync: a new coordinator first sends each node its (empty)
state, and ``settled_s`` says how long that took.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, make_url, select  # noqa: E402

from iris_haas.api.client import ApiError, Client  # noqa: E402
from iris_haas.api.service import free_port  # noqa: E402
from iris_haas.contract.errors import ReserveFailed  # noqa: E402
from iris_haas.control.engine import Coordinator  # noqa: E402
from iris_haas.control.inventory import hash_token, new_token  # noqa: E402
from iris_haas.control.schemas import ReserveRequest, from_epoch  # noqa: E402
from iris_haas.lab.postgres import PostgresServer  # noqa: E402
from iris_haas.store import calendar  # noqa: E402
from iris_haas.store.db import Database  # noqa: E402
from iris_haas.store.models import Allocation, Criteria, Node, Reservation, Site, Tenant  # noqa: E402

YEAR = 365 * 86400.0
NODE = (32, 131072, 2000)  # cpus, MB, GB per L0


def populate(db: Database, nodes: int, reservations: int, t0: float, rng: random.Random, token: str) -> None:
    with db.transaction() as s:
        site = Site(name="haas", kind="haas")
        tenant = Tenant(name="bench", token_hash=hash_token(token), tunnel_key=1001, created_at=t0)
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
                        "lifecycle_state": "Created", "data_plane_active": False, "committed_end": end,
                        "created_at": t0})
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


def body(start: float, end: float, count: int, cpus: int) -> dict:
    return {"start": from_epoch(start).isoformat(), "end": from_epoch(end).isoformat(), "items": [
        {"kind": "compute", "count": count, "cpus": cpus, "memory_mb": 4096, "disk_gb": 20}]}



def measure_http(url: str, data_dir: Path, reqs, token: str, clients: int) -> tuple[list[float], float, float]:
    """Reserve + commit through ``iris serve`` (its own process) from ``clients`` threads at once;
    returns every request's latency, the wall time of them all, and how long the coordinator took
    after its start to have every host in sync (measured from then on: a new coordinator first
    sends each of the nodes its state, two transactions per host, which is not the steady state)."""
    port = free_port()
    log = open(data_dir / "serve.log", "w")  # noqa: SIM115 - closed after the server, below
    iris = Path(sys.executable).with_name("iris")  # the virtualenv's entry point
    serve = subprocess.Popen([str(iris), "serve", "--port", str(port), "--database-url", url, "--data-dir",
                              str(data_dir)], stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                Client(base, None, timeout=2).get("/health")
                break
            except ApiError:
                if serve.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"iris serve did not start; see {data_dir / 'serve.log'}") from None
                time.sleep(0.2)
        settled = settle(base, data_dir, deadline=time.monotonic() + 300)
        lat: list[float] = []
        lock = threading.Lock()

        def worker(part) -> None:
            with Client(base, token, timeout=60) as c:
                for start, end, count, cpus in part:
                    t = time.perf_counter()
                    try:
                        r = c.post("/reservations", body(start, end, count, cpus))
                        c.post(f"/reservations/{r['id']}/commit")
                    except ApiError as e:
                        if e.type != "ReserveFailed":
                            raise
                    with lock:
                        lat.append(time.perf_counter() - t)

        threads = [threading.Thread(target=worker, args=(reqs[i::clients],)) for i in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return lat, time.perf_counter() - t, settled
    finally:
        serve.terminate()  # our own child, by its PID
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        log.close()


def settle(base: str, data_dir: Path, deadline: float) -> float:
    """Wait until every host has acknowledged its generation, in sync (``GET /v1/hosts``); returns
    the seconds waited."""
    t = time.monotonic()
    with Client(base, (data_dir / "admin-token").read_text().strip(), timeout=30) as admin:
        while True:
            hosts = admin.get("/hosts")
            behind = [h for h in hosts if not (h["acked"] >= h["generation"] and h["in_sync"])]
            if hosts and not behind:
                return time.monotonic() - t
            if time.monotonic() > deadline:
                raise SystemExit(f"iris serve left {len(behind)} of {len(hosts)} hosts behind; "
                                 f"see {data_dir / 'serve.log'}")
            time.sleep(0.5)


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
                          lifecycle_state="Created", data_plane_active=False, committed_end=end, created_at=start))
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
    ap.add_argument("--database-url", default="sqlite",
                    help="sqlite (a file, the default) or postgresql (a private server the bench starts)")
    ap.add_argument("--http", action="store_true", help="Iris's requests through `iris serve` and its HTTP client")
    ap.add_argument("--clients", type=int, default=8, help="with --http: concurrent clients")
    args = ap.parse_args()
    kind = args.database_url.split(":")[0].split("+")[0]
    if kind not in ("sqlite", "postgresql") or (kind == "postgresql" and args.database_url != "postgresql"):
        ap.error("--database-url: sqlite or postgresql (the bench starts its own server)")
    if args.clients < 1:
        ap.error("--clients: at least 1")
    rng = random.Random(args.seed)
    # a server's clock is the real one: book from tomorrow on (in process, a fixed clock)
    t0 = time.time() + 86400 if args.http else 2_000_000_000.0
    token = new_token()
    tmp = Path(tempfile.mkdtemp(prefix="iris-bench-"))
    pg = PostgresServer() if kind == "postgresql" else None
    try:
        if pg is not None:
            pg.start()
            url = pg.fresh_database()
        else:
            url = f"sqlite:///{tmp / 'iris.db'}"
        db = Database(url)
        if pg is None:
            db.migrate()  # (the server's fresh database is a copy of a migrated template)
        t = time.perf_counter()
        populate(db, args.nodes, args.reservations, t0, rng, token)
        populate_s = time.perf_counter() - t
        if pg is not None:  # the statistics autovacuum would gather on a live database, now
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("ANALYZE")
        db.dispose()
        if pg is not None:  # the baseline's identical copy
            admin = Database(pg.url("postgres"))
            with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql(f"CREATE DATABASE iris_naive TEMPLATE {make_url(url).database}")
            admin.dispose()
            naive_url = pg.url("iris_naive")
        else:
            shutil.copy(tmp / "iris.db", tmp / "naive.db")
            naive_url = f"sqlite:///{tmp / 'naive.db'}"
        reqs = requests(args.requests, t0, rng)

        db = Database(url)
        with db.transaction() as s:
            tenant_id = s.scalar(select(Tenant.id))
            site_id = s.scalar(select(Site.id))
        settled_s = 0.0
        if args.http:
            db.dispose()
            ours, ours_total, settled_s = measure_http(url, tmp, reqs, token, args.clients)
        else:
            t = time.perf_counter()
            ours = measure_iris(db, reqs, t0, tenant_id)
            ours_total = time.perf_counter() - t
            db.dispose()

        naive_db = Database(naive_url)
        # The baseline is what a naive manager would have: its overlap query per node on the
        # (kind, node, start) index. Iris's covering calendar index goes from its copy: SQLite's
        # planner, without statistics, would otherwise scan that index from the calendar's start.
        with naive_db.engine.connect() as c:
            c.exec_driver_sql("DROP INDEX ix_alloc_calendar")
            c.commit()
        naive = measure_naive(naive_db, reqs[: args.baseline_requests], tenant_id, site_id)
        naive_db.dispose()
    finally:
        if pg is not None:
            pg.stop()
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
        "database": kind,
        "http": args.http,
        "clients": args.clients if args.http else 0,
        "populate_s": round(populate_s, 1),
        **({"settled_s": round(settled_s, 1)} if args.http else {}),
    }))


if __name__ == "__main__":
    main()
