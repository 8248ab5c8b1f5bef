"""Property: random reserve / commit / abort / modify / terminate sequences over random schedules and
capacities never overbook any resource at any instant, and never refuse what fits.

The reference is brute force: usage summed at every allocation boundary, independent of the
calendar's sweep."""

from __future__ import annotations

import shutil
import uuid
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from iris_haas.contract.errors import IrisError, ReserveFailed
from iris_haas.control.schemas import ModifyRequest, ReserveRequest, from_epoch
from iris_haas.store import calendar
from iris_haas.store.db import Database
from iris_haas.store.models import Allocation, Link, Node, Reservation, Site, StoragePool, Tenant
from tests.conftest import T0, Clock, make_coordinator

UNIT = 100.0  # seconds per schedule unit

ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 8), st.integers(1, 6),  # start, duration (units)
                  st.sampled_from(["compute", "network", "storage", "all"]), st.integers(1, 3), st.integers(1, 3)),
        st.tuples(st.just("commit"), st.integers(0, 20)),
        st.tuples(st.just("abort"), st.integers(0, 20)),
        st.tuples(st.just("terminate"), st.integers(0, 20)),
        st.tuples(st.just("modify"), st.integers(0, 20), st.integers(1, 4), st.integers(0, 4)),
        st.tuples(st.just("tick"), st.integers(1, 3)),
    ),
    min_size=1, max_size=25,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


def brute_usage(allocs, kind, rid, lo, hi, dims):
    """Max over every instant in [lo, hi) of the summed usage: checked at lo and each start inside."""
    instants = {lo} | {a.start for a in allocs if lo < a.start < hi}
    best = [0] * len(dims)
    for t in instants:
        tot = [sum(getattr(a, d) for a in allocs if a.resource_kind == kind and a.resource_id == rid
                   and a.start <= t < a.end) for d in dims]
        best = [max(b, x) for b, x in zip(best, tot)]
    return best


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node_cpus=st.lists(st.integers(1, 4), min_size=1, max_size=3), link_cap=st.integers(1, 5),
       pool_cap=st.integers(1, 5), sequence=ops)
def test_never_overbooks(tmp_path, template, node_cpus, link_cap, pool_cap, sequence):
    path = tmp_path / f"{uuid.uuid4().hex}.db"
    shutil.copy(template, path)
    db = Database(f"sqlite:///{path}")
    clock = Clock()
    coord = make_coordinator(db, clock, hold_timeout_s=2 * UNIT)
    with db.transaction() as s:
        haas = Site(name="haas", kind="haas")
        tenant = Tenant(name="t", token_hash="x", tunnel_key=1001, created_at=0)
        s.add_all([haas, tenant])
        s.flush()
        iaas = Site(name="iaas", kind="iaas", tenant_id=tenant.id, gateway_underlay="198.18.1.1")
        s.add(iaas)
        s.flush()
        for i, c in enumerate(node_cpus):
            s.add(Node(name=f"n{i}", site_id=haas.id, cpus=c, memory_mb=10**6, disk_gb=10**6,
                       l1_kinds=["lxc"], state="available"))
        s.add(Link(name="l", site_a_id=haas.id, site_b_id=iaas.id, capacity_mbps=link_cap * 100))
        s.add(StoragePool(name="p", site_id=haas.id, capacity_gb=pool_cap * 10))
        tenant_id = tenant.id
    caps = {("node", i + 1): (c,) for i, c in enumerate(node_cpus)} | {("link", 1): (link_cap * 100,),
                                                                        ("pool", 1): (pool_cap * 10,)}
    dims = {"node": ("cpus",), "link": ("mbps",), "pool": ("gb",)}
    ids: list[str] = []

    def snapshot():
        with db.transaction() as s:
            return [Allocation(**{c.name: getattr(a, c.name) for c in Allocation.__table__.columns})
                    for a in s.query(Allocation).all()]

    try:
        for op in sequence:
            name = op[0]
            if name == "reserve":
                _, start_u, dur_u, what, count, size = op
                start = clock.t + start_u * UNIT
                items = []
                if what in ("compute", "all"):
                    items.append({"kind": "compute", "count": count, "cpus": size, "memory_mb": 64, "disk_gb": 0})
                if what in ("network", "all"):
                    items.append({"kind": "network", "bandwidth_mbps": size * 100})
                if what in ("storage", "all"):
                    items.append({"kind": "storage", "size_gb": size * 10})
                req = ReserveRequest(start=from_epoch(start), duration_s=int(dur_u * UNIT), items=items)
                before = snapshot()
                try:
                    ids.append(coord.reserve(tenant_id, req).id)
                except ReserveFailed as e:
                    ids.append(e.extra["reservation_id"])
                    if len(items) == 1:  # a single item refused: the reference must agree it does not fit
                        item = items[0]
                        kind = {"compute": "node", "network": "link", "storage": "pool"}[item["kind"]]
                        need = {"compute": size, "network": size * 100, "storage": size * 10}[item["kind"]]
                        want = count if kind == "node" else 1
                        fit = sum(
                            (cap[0] - brute_usage(before, k, r, start, start + dur_u * UNIT, dims[k])[0]) // need
                            for (k, r), cap in caps.items() if k == kind
                        ) if kind == "node" else max(
                            cap[0] - brute_usage(before, k, r, start, start + dur_u * UNIT, dims[k])[0]
                            for (k, r), cap in caps.items() if k == kind
                        ) // need
                        assert fit < want, f"refused {item} although the reference says {fit} fit"
            elif name == "tick":
                clock.advance(op[1] * UNIT)
                coord.tick()
            elif ids:
                rid = ids[op[1] % len(ids)]
                try:
                    if name == "modify":
                        res, *_ = coord.get(None, rid)
                        coord.modify(None, rid, ModifyRequest(
                            version=res.version + 1, count=op[2], bandwidth_mbps=op[2] * 100,
                            end=from_epoch(clock.t + (op[3] + 1) * UNIT)))
                    else:
                        getattr(coord, name)(None, rid)
                except IrisError:
                    pass  # illegal in the current state, or does not fit: both are fine here
            # the invariant, after every step, at every instant. A modify held beside its committed
            # version replaces it (one L1, one path, at a time), so a reservation counts with the
            # larger of its versions; different reservations add up.
            allocs = snapshot()
            for (kind, rid), cap in caps.items():
                mine = [a for a in allocs if a.resource_kind == kind and a.resource_id == rid]
                for t in {a.start for a in mine}:
                    per_version: dict[tuple[str, int], int] = {}
                    for a in mine:
                        if a.start <= t < a.end:
                            key = (a.reservation_id, a.version)
                            per_version[key] = per_version.get(key, 0) + getattr(a, dims[kind][0])
                    per_reservation: dict[str, int] = {}
                    for (res_id, _), amount in per_version.items():
                        per_reservation[res_id] = max(per_reservation.get(res_id, 0), amount)
                    used = sum(per_reservation.values())
                    assert used <= cap[0], f"{kind} {rid} overbooked at t={t - T0}: {used} > {cap[0]}"
    finally:
        db.dispose()


@settings(max_examples=300, deadline=None)
@given(caps=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=12),
       used=st.dictionaries(st.integers(0, 11), st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=12),
       need=st.tuples(st.integers(0, 3), st.integers(1, 3)), count=st.integers(1, 8))
def test_placement_from_the_ranked_capacities_chooses_as_a_pass_over_every_resource(caps, used, need, count):
    """``place`` with ``ranked`` looks only at the changed resources and the first wholly free
    ones; it must choose exactly what a pass over every resource chooses."""
    capacities = dict(enumerate(caps))
    free = calendar.Free(capacities)
    for rid, (a, b) in used.items():
        if rid in free:
            free[rid] = (free[rid][0] - a, free[rid][1] - b)
    assert calendar.place(free, need, count, calendar.rank(capacities)) == calendar.place(dict(free), need, count)


@pytest.fixture(scope="module")
def calendar_db(template, tmp_path_factory):
    """One database for the calendar's examples: a site, a tenant and two reservations, whose
    allocations each example writes anew."""
    path = tmp_path_factory.mktemp("cal") / "calendar.db"
    shutil.copy(template, path)
    db = Database(f"sqlite:///{path}")
    with db.transaction() as s:
        site = Site(name="haas", kind="haas")
        tenant = Tenant(name="t", token_hash="x", tunnel_key=1001, created_at=0)
        s.add_all([site, tenant])
        s.flush()
        for rid in ("a", "b"):
            s.add(Reservation(id=rid, tenant_id=tenant.id, site_id=site.id, description="", version=1,
                              committed_version=1, reservation_state="ReserveStart", provision_state="Released",
                              lifecycle_state="Created", data_plane_active=False, created_at=0))
    yield db
    db.dispose()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(allocs=st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 4), st.integers(0, 12), st.integers(1, 6),
                                 st.sampled_from(["committed", "held", calendar.DRAINING]),
                                 st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))), max_size=20),
       lo=st.integers(0, 12), length=st.integers(1, 8), exclude=st.sampled_from([None, "a"]))
def test_the_used_capacity_is_the_peak_of_the_overlapping_intervals(calendar_db, allocs, lo, length, exclude):
    """``used`` (admission's read of the calendar) gives, per resource, the peak of what
    ``overlapping`` returns, draining allocations included, the excluded reservation left out."""
    with calendar_db.transaction() as s:
        s.execute(delete(Allocation))
        for rid, node, start, duration, status, (cpus, mem, disk) in allocs:
            s.add(Allocation(reservation_id=rid, version=1, item=0, resource_kind="node", resource_id=node,
                             start=float(start), end=float(start + duration), duration_s=float(duration),
                             cpus=cpus, memory_mb=mem, disk_gb=disk, mbps=0, gb=0, status=status, detail={}))
    with calendar_db.reading() as s:
        got = calendar.used(s, "node", lo, lo + length, exclude_reservation=exclude)
        intervals = calendar.overlapping(s, "node", lo, lo + length, exclude_reservation=exclude)
    assert got == {rid: calendar.peak(iv, lo, lo + length, 3) for rid, iv in intervals.items()}
    brute = {node: tuple(brute_usage([a for a in allocs_of(allocs, exclude)], "node", node, lo, lo + length,
                                     ("cpus", "memory_mb", "disk_gb"))) for node in range(1, 5)}
    assert {rid: u for rid, u in got.items() if any(u)} == {rid: u for rid, u in brute.items() if any(u)}


def allocs_of(allocs, exclude):
    """The examples' allocations as ``brute_usage`` reads them: a draining one over every instant."""
    return [SimpleNamespace(resource_kind="node", resource_id=node, start=-1e9 if status == calendar.DRAINING else start,
                            end=1e9 if status == calendar.DRAINING else start + duration, cpus=c, memory_mb=m, disk_gb=d)
            for rid, node, start, duration, status, (c, m, d) in allocs
            if status == calendar.DRAINING or rid != exclude]
