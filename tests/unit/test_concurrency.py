"""50 simultaneous reserve requests for the last few free nodes: exactly as many succeed as fit,
on SQLite and on PostgreSQL (the ``db`` fixture runs both)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from iris_haas.contract.errors import ReserveFailed
from iris_haas.control.schemas import ReserveRequest
from iris_haas.store.models import Allocation, Node, Site, Tenant
from tests.conftest import Clock, make_coordinator

FREE = 5


def test_50_concurrent_reserves_for_the_last_free_nodes(db):
    clock = Clock()
    coord = make_coordinator(db, clock)
    with db.transaction() as s:
        site = Site(name="haas", kind="haas")
        s.add(site)
        s.flush()
        for i in range(10):
            s.add(Node(name=f"n{i}", site_id=site.id, cpus=4, memory_mb=8192, disk_gb=100, l1_kinds=["lxc"],
                       state="available"))
        tenants = [Tenant(name=f"t{i}", token_hash=f"h{i}", tunnel_key=1000 + i, created_at=0) for i in range(50)]
        s.add_all(tenants)
        s.flush()
        tenant_ids = [t.id for t in tenants]
    whole_node = {"kind": "compute", "count": 1, "cpus": 4, "memory_mb": 8192, "disk_gb": 100}
    # fill all but FREE nodes first
    filler = coord.reserve(tenant_ids[0], ReserveRequest(duration_s=3600, items=[{**whole_node, "count": 10 - FREE}]))
    coord.commit(None, filler.id)

    barrier = threading.Barrier(50)
    results: list[str] = []
    lock = threading.Lock()

    def one(tid: int):
        barrier.wait()
        try:
            coord.reserve(tid, ReserveRequest(duration_s=3600, items=[whole_node]))
            outcome = "held"
        except ReserveFailed:
            outcome = "failed"
        except Exception as e:  # anything else (a deadlock, a lock timeout) is a bug
            outcome = f"error: {e!r}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one, args=(t,)) for t in tenant_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(results) <= {"failed", "held"}, results
    assert results.count("held") == FREE
    assert results.count("failed") == 50 - FREE
    with db.transaction() as s:
        assert s.scalar(select(func.sum(Allocation.cpus))) == 40
        per_node = s.execute(select(Allocation.resource_id, func.sum(Allocation.cpus)).group_by(Allocation.resource_id))
        assert all(total <= 4 for _, total in per_node)
        assert s.scalar(select(func.count()).select_from(Node)) == 10
