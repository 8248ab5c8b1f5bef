"""Desired state at scale: what one provision costs with 10,000 active L1s, and a full resync.

1,000 L0s, one HaaS gateway, 200 tenants (an IaaS site each), all in one SQLite file. Each tenant
reserves, commits and provisions one reservation of 50 lxc L1s through the coordinator's engine
(``Coordinator.reserve/commit/provision``, in process, no HTTP): 10,000 active L1s, every tenant's
mesh over 50 L0s. Desired state goes to the in-memory data plane (``InMemoryDataPlane``: it
records what each host was told, as an agent would hold it). Then, ``--samples`` times, a random
tenant reserves and commits one more L1 (not timed) and provisions it: the sample is that
provision call, from the API's transaction through the derivation of the hosts it concerns and the
push to every host it changed (its new L0, the tenant's other mesh members, the gateway) until
each acknowledged; the L1 is terminated after (not timed). Apart from the sample, the states it
sent are serialized as ``AgentDataPlane`` puts them on the wire (``json_encode_p99_ms``): the
in-memory data plane keeps the op objects themselves. Before the samples, after populating, the
reconciler's full resync runs once (``full_resync_s``): every host's state derived again from the
database and compared with ``host_sync``, as the leader does every ``full_resync_every`` passes.

Prints one JSON object: ``incremental_ms`` (p99 of the samples; ``incremental_p50_ms``, and of that
the derivation, ``derive_p99_ms``, and the push, ``push_p99_ms``), ``full_resync_s``,
``peak_rss_mb`` (``ru_maxrss``), ``populate_s``, the counts. Targets: incremental_ms <= 50,
full_resync_s <= 5, peak_rss_mb <= 500.

    python bench/desired_scale.py [--nodes 1000] [--tenants 200] [--per-tenant 50] [--samples 100]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select  # noqa: E402

from iris_haas.control.engine import Coordinator  # noqa: E402
from iris_haas.control.schemas import ReserveRequest  # noqa: E402
from iris_haas.control.sync import InMemoryDataPlane  # noqa: E402
from iris_haas.store.db import Database  # noqa: E402
from iris_haas.store.models import Gateway, Node, Site, Tenant, TunnelKey, bump_inventory  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(p * len(s)) - 1)]


def inventory(db: Database, nodes: int, tenants: int) -> list[int]:
    """The HaaS inventory and the tenants, inserted in bulk (the admin's part, not the bench's)."""
    with db.transaction() as s:
        haas = Site(name="haas", kind="haas")
        s.add(haas)
        s.flush()
        s.execute(insert(Node), [
            {"name": f"l0-{i:04d}", "site_id": haas.id, "cpus": 16, "memory_mb": 65536, "disk_gb": 1000,
             "l1_kinds_text": ",lxc,", "state": "available", "underlay_address": f"10.{i // 250}.{i % 250}.10",
             "agent_url": f"https://10.{i // 250}.{i % 250}.11:7780"} for i in range(nodes)])
        s.add(Gateway(name="haas-gw", site_id=haas.id, underlay_address="198.18.0.1", fabric_address="10.255.0.1",
                      uplink="eth0", agent_url="https://10.255.0.2:7780"))
        s.execute(insert(TunnelKey), [{"key": 1000 + t, "owner": f"tenant:t{t}"} for t in range(tenants)])
        s.execute(insert(Tenant), [{"name": f"t{t:03d}", "token_hash": f"h{t}", "tunnel_key": 1000 + t,
                                    "created_at": 0.0} for t in range(tenants)])
        ids = list(s.scalars(select(Tenant.id).order_by(Tenant.id)))
        s.execute(insert(Site), [{"name": f"iaas-{tid}", "kind": "iaas", "tenant_id": tid, "mgmt_vlan": 101,
                                  "gateway_underlay": f"198.19.{tid // 250}.{tid % 250 + 1}"} for tid in ids])
        bump_inventory(s)
    return ids


def l1s(count: int) -> ReserveRequest:
    return ReserveRequest(duration_s=86400, items=[{"kind": "compute", "count": count, "l1_kind": "lxc", "cpus": 1,
                                                    "memory_mb": 512, "disk_gb": 0}])


class Timed:
    """Wraps the syncer's refresh and push to time them apart within one provision, and notes
    the states the data plane was sent."""

    def __init__(self, coord: Coordinator, dp: InMemoryDataPlane):
        self.derive = self.push = 0.0
        self.sent: list = []
        refresh, push, send = coord.sync.refresh, coord.sync.push, dp.push

        def timed_send(host, url, state):
            self.sent.append(state)
            return send(host, url, state)

        dp.push = timed_send  # type: ignore[method-assign]

        def timed_refresh(*a, **kw):
            t = time.perf_counter()
            try:
                return refresh(*a, **kw)
            finally:
                self.derive += time.perf_counter() - t

        def timed_push(*a, **kw):
            t = time.perf_counter()
            try:
                return push(*a, **kw)
            finally:
                self.push += time.perf_counter() - t

        coord.sync.refresh, coord.sync.push = timed_refresh, timed_push  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--tenants", type=int, default=200)
    ap.add_argument("--per-tenant", type=int, default=50)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="iris-bench-"))
    coord = None
    try:
        db = Database(f"sqlite:///{tmp / 'iris.db'}")
        db.migrate()
        tenants = inventory(db, args.nodes, args.tenants)
        dp = InMemoryDataPlane()
        coord = Coordinator(db, dataplane=dp, push_timeout_s=600, provision_timeout_s=600)
        t0 = time.perf_counter()
        for tid in tenants:
            rid = coord.reserve(tid, l1s(args.per_tenant)).id
            coord.commit(tid, rid)
            coord.provision(tid, rid)
        populate_s = time.perf_counter() - t0
        # the reconciler's full resync (it runs one every ``full_resync_every`` passes): every
        # host's state derived again from the database and compared with host_sync
        t = time.perf_counter()
        coord.sync.refresh(full=True)
        full_resync_s = time.perf_counter() - t
        active = sum(1 for st in dp.states.values() for o in st.ops if o.op == "l1")
        timed = Timed(coord, dp)
        total, derive, push, encode, hosts = [], [], [], [], []
        for _ in range(args.samples):
            tid = rng.choice(tenants)
            rid = coord.reserve(tid, l1s(1)).id
            coord.commit(tid, rid)
            timed.derive = timed.push = 0.0
            timed.sent = []
            t = time.perf_counter()
            res = coord.provision(tid, rid)
            total.append(time.perf_counter() - t)
            derive.append(timed.derive)
            push.append(timed.push)
            # what an agent data plane would serialize for these hosts (not part of the sample)
            t = time.perf_counter()
            for st in timed.sent:
                st.model_dump_json()
            encode.append(time.perf_counter() - t)
            hosts.append(len(timed.sent))
            assert res.provision_state == "Provisioned", res.provision_state
            coord.terminate(tid, rid)
        ops = sum(len(st.ops) for st in dp.states.values())
        out = {
            "nodes": args.nodes, "tenants": args.tenants, "active_l1s": active, "host_ops": ops,
            "samples": len(total),
            "incremental_ms": round(pct(total, 0.99) * 1000, 1),
            "incremental_p50_ms": round(pct(total, 0.5) * 1000, 1),
            "derive_p99_ms": round(pct(derive, 0.99) * 1000, 1),
            "push_p99_ms": round(pct(push, 0.99) * 1000, 1),
            "hosts_pushed_p50": pct(hosts, 0.5),
            "json_encode_p99_ms": round(pct(encode, 0.99) * 1000, 1),
            "full_resync_s": round(full_resync_s, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "populate_s": round(populate_s, 1),
            "database": "sqlite",
        }
    finally:
        if coord is not None:
            coord.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
