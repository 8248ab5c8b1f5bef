"""The three NSI state machines, driven through the API: every legal transition, a sample of
illegal ones, the hold timeout, PassedEndTime, activation at the start time, modify."""

from __future__ import annotations

import pytest

from iris_haas.contract.errors import DataPlaneError, ReserveFailed
from iris_haas.control.schemas import from_epoch
from iris_haas.control.states import MACHINES
from tests.conftest import T0


def compute(count=1, cpus=2):
    return {"kind": "compute", "count": count, "l1_kind": "lxc", "cpus": cpus, "memory_mb": 1024, "disk_gb": 10}


def reserve(api, who="alice", items=None, **schedule):
    body = {"items": items or [compute()], **(schedule or {"duration_s": 3600})}
    return api.call("POST", "/reservations", who, json=body)


def msg(api, rid, name, who="alice"):
    return api.call("POST", f"/reservations/{rid}/{name}", who)


def transitions(api, rid, who="alice"):
    evs = api.ok("GET", f"/reservations/{rid}/events", who)
    out = [(e["detail"]["machine"], e["detail"]["from"], e["detail"]["event"], e["detail"]["to"])
           for e in evs if e["type"] == "transition"]
    return out


def state(api, rid, who="alice"):
    r = api.ok("GET", f"/reservations/{rid}", who)
    return r["reservation_state"], r["provision_state"], r["lifecycle_state"]


def test_reserve_commit_provision_release_terminate(api):
    r = reserve(api).json()
    assert r["reservation_state"] == "ReserveHeld" and r["version"] == 1 and r["committed_version"] == 0
    assert msg(api, r["id"], "commit").json()["reservation_state"] == "ReserveStart"
    p = msg(api, r["id"], "provision").json()
    assert p["provision_state"] == "Provisioned" and p["data_plane_active"]
    rel = msg(api, r["id"], "release").json()
    assert rel["provision_state"] == "Released" and not rel["data_plane_active"]
    t = msg(api, r["id"], "terminate").json()
    assert t["lifecycle_state"] == "Terminated"
    assert transitions(api, r["id"]) == [
        ("reservation", "ReserveStart", "reserve", "ReserveChecking"),
        ("reservation", "ReserveChecking", "reserve_ok", "ReserveHeld"),
        ("reservation", "ReserveHeld", "commit", "ReserveCommitting"),
        ("reservation", "ReserveCommitting", "commit_ok", "ReserveStart"),
        ("provision", "Released", "provision", "Provisioning"),
        ("provision", "Provisioning", "provision_ok", "Provisioned"),
        ("provision", "Provisioned", "release", "Releasing"),
        ("provision", "Releasing", "release_ok", "Released"),
        ("lifecycle", "Created", "terminate", "Terminating"),
        ("lifecycle", "Terminating", "terminate_ok", "Terminated"),
    ]


def test_abort_held_then_nothing_is_held(api):
    r = reserve(api, items=[compute(count=4, cpus=8)]).json()
    a = msg(api, r["id"], "abort").json()
    assert a["reservation_state"] == "ReserveStart" and a["resources"] == []
    # the capacity came back: the same request fits again
    assert reserve(api, "bob", items=[compute(count=4, cpus=8)]).status_code == 201
    assert ("reservation", "ReserveHeld", "abort", "ReserveAborting") in transitions(api, r["id"])
    assert ("reservation", "ReserveAborting", "abort_ok", "ReserveStart") in transitions(api, r["id"])


def test_hold_timeout(api, clock):
    r = reserve(api, items=[compute(count=4, cpus=8)]).json()
    clock.advance(59)
    assert api.coordinator.tick()["timeouts"] == 0
    clock.advance(2)
    assert api.coordinator.tick()["timeouts"] == 1
    assert state(api, r["id"]) == ("ReserveTimeout", "Released", "Created")
    types = [e["type"] for e in api.ok("GET", f"/reservations/{r['id']}/events", "alice")]
    assert "reserveTimeout" in types
    # the held resources were freed by the timeout
    assert reserve(api, "bob", items=[compute(count=4, cpus=8)]).status_code == 201
    # commit after the timeout is illegal and names the state; abort is the way out
    c = msg(api, r["id"], "commit")
    assert c.status_code == 409 and c.json()["state"] == "ReserveTimeout"
    assert msg(api, r["id"], "abort").json()["reservation_state"] == "ReserveStart"
    assert ("reservation", "ReserveHeld", "timeout", "ReserveTimeout") in transitions(api, r["id"])
    assert ("reservation", "ReserveTimeout", "abort", "ReserveAborting") in transitions(api, r["id"])


def test_commit_after_expiry_before_the_scheduler_ran(api, clock):
    r = reserve(api).json()
    clock.advance(61)
    c = msg(api, r["id"], "commit")
    assert c.status_code == 409 and c.json()["state"] == "ReserveTimeout"
    assert state(api, r["id"])[0] == "ReserveTimeout"


def test_reserve_failed_then_abort(api):
    r = reserve(api, items=[compute(count=5, cpus=8)])
    assert r.status_code == 409 and r.json()["type"] == "ReserveFailed"
    rid = r.json()["reservation_id"]
    assert state(api, rid)[0] == "ReserveFailed"
    types = [e["type"] for e in api.ok("GET", f"/reservations/{rid}/events", "alice")]
    assert "errorEvent" in types
    assert msg(api, rid, "abort").json()["reservation_state"] == "ReserveStart"
    assert ("reservation", "ReserveChecking", "reserve_fail", "ReserveFailed") in transitions(api, rid)
    assert ("reservation", "ReserveFailed", "abort", "ReserveAborting") in transitions(api, rid)


def test_a_failing_child_aborts_its_held_siblings(api):
    # compute fits, the network item does not: nothing may stay held
    r = reserve(api, items=[compute(count=2, cpus=8), {"kind": "network", "bandwidth_mbps": 5000}])
    assert r.status_code == 409
    assert api.ok("GET", f"/reservations/{r.json()['reservation_id']}", "alice")["resources"] == []
    assert reserve(api, "bob", items=[compute(count=4, cpus=8)]).status_code == 201


def test_advance_reservation_activates_at_start_and_passes_end_time(api, clock):
    start, end = T0 + 600, T0 + 1200
    r = reserve(api, start=from_epoch(start).isoformat(), end=from_epoch(end).isoformat()).json()
    msg(api, r["id"], "commit")
    p = msg(api, r["id"], "provision").json()
    assert p["provision_state"] == "Provisioned" and not p["data_plane_active"]
    assert api.coordinator.dataplane.hosts == {}
    clock.t = start
    assert api.coordinator.tick()["activated"] == 1
    assert api.ok("GET", f"/reservations/{r['id']}", "alice")["data_plane_active"]
    assert api.coordinator.dataplane.hosts  # desired state pushed at the start
    clock.t = end
    assert api.coordinator.tick()["ended"] == 1
    assert state(api, r["id"]) == ("ReserveStart", "Released", "PassedEndTime")
    assert api.coordinator.dataplane.hosts == {}
    assert api.ok("GET", f"/reservations/{r['id']}", "alice")["resources"] == []
    events = api.ok("GET", f"/reservations/{r['id']}/events", "alice")
    changes = [e["detail"]["active"] for e in events if e["type"] == "dataPlaneStateChange"]
    assert changes == [True, False]
    assert msg(api, r["id"], "terminate").json()["lifecycle_state"] == "Terminated"
    assert ("lifecycle", "Created", "end_time", "PassedEndTime") in transitions(api, r["id"])
    assert ("lifecycle", "PassedEndTime", "terminate", "Terminating") in transitions(api, r["id"])


def test_the_scheduler_ends_a_reservation_at_its_committed_versions_end(api, clock):
    """The end the scheduler acts on is the committed version's: a modify held but not committed
    changes nothing, its commit moves the end."""
    r = reserve(api, duration_s=600).json()
    msg(api, r["id"], "commit")
    held = api.call("POST", f"/reservations/{r['id']}/modify", "alice",
                    json={"version": 2, "end": from_epoch(T0 + 1800).isoformat()})
    assert held.status_code == 200 and held.json()["reservation_state"] == "ReserveHeld"
    msg(api, r["id"], "abort")
    api.ok("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 3, "end": from_epoch(T0 + 1200).isoformat()})
    msg(api, r["id"], "commit")
    clock.t = T0 + 600  # the first version's end: it goes on
    assert api.coordinator.tick()["ended"] == 0 and state(api, r["id"])[2] == "Created"
    clock.t = T0 + 1200
    assert api.coordinator.tick()["ended"] == 1 and state(api, r["id"])[2] == "PassedEndTime"


def test_forced_end_then_terminate(api):
    r = reserve(api).json()
    msg(api, r["id"], "commit")
    f = api.call("POST", f"/reservations/{r['id']}/force-end", "admin", params={"reason": "maintenance"})
    assert f.json()["lifecycle_state"] == "Failed"
    assert msg(api, r["id"], "terminate").json()["lifecycle_state"] == "Terminated"
    assert ("lifecycle", "Created", "forced_end", "Failed") in transitions(api, r["id"])
    assert ("lifecycle", "Failed", "terminate", "Terminating") in transitions(api, r["id"])


def test_node_down_fails_its_reservations(api):
    r = reserve(api, items=[compute(count=4, cpus=8)]).json()
    msg(api, r["id"], "commit")
    api.ok("PATCH", "/nodes/l0-2", json={"state": "down"})
    assert state(api, r["id"])[2] == "Failed"
    # a down node takes no new L1s: 3 nodes x 8 cpus remain
    assert reserve(api, "bob", items=[compute(count=4, cpus=8)]).status_code == 409
    assert reserve(api, "bob", items=[compute(count=3, cpus=8)]).status_code == 201


def test_modify_extend_count_bandwidth(api, clock):
    r = reserve(api, items=[compute(count=1, cpus=4), {"kind": "network", "bandwidth_mbps": 100}]).json()
    msg(api, r["id"], "commit")
    msg(api, r["id"], "provision")
    before = {a["l1"]: a["node"] for a in api.ok("GET", f"/reservations/{r['id']}", "alice")["resources"] if "l1" in a}
    new_end = from_epoch(T0 + 7200).isoformat()
    m = api.call("POST", f"/reservations/{r['id']}/modify", "alice",
                 json={"version": 2, "end": new_end, "count": 3, "bandwidth_mbps": 300})
    assert m.status_code == 200 and m.json()["reservation_state"] == "ReserveHeld"
    c = msg(api, r["id"], "commit").json()
    assert c["committed_version"] == 2 and c["end"].startswith(new_end[:19])
    after = {a["l1"]: a["node"] for a in c["resources"] if "l1" in a}
    assert len(after) == 3 and all(after[k] == v for k, v in before.items())  # no L1 moved
    gw = api.coordinator.dataplane.hosts["haas-gw"]
    assert [(o["remote_ip"], o["rate_mbit"]) for o in gw if o["op"] == "tunnel_limit"] == [("198.18.1.1", 300)]
    l1s = [o for h, ops in api.coordinator.dataplane.hosts.items() for o in ops if o["op"] == "l1"]
    assert len(l1s) == 3 and all(o["vlan"] == 101 and o["trunk"] and o["kind"] == "lxc" for o in l1s)
    events = api.ok("GET", f"/reservations/{r['id']}/events", "alice")
    last = [e["detail"] for e in events if e["type"] == "dataPlaneStateChange"][-1]
    # consistent: every host of the reservation (its L0s and the gateway) holds version 2
    assert (last["active"], last["version"], last["versionConsistent"]) == (True, 2, True)
    assert set(last["hosts"]) == {"haas-gw", *after.values()}
    # a stale or equal version is refused
    v = api.call("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 2, "count": 1})
    assert v.status_code == 409 and v.json()["type"] == "VersionConflict"


def test_modify_that_does_not_fit_keeps_the_committed_version(api):
    r = reserve(api, items=[compute(count=2, cpus=8)]).json()
    msg(api, r["id"], "commit")
    m = api.call("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 2, "count": 5})
    assert m.status_code == 409 and m.json()["type"] == "ReserveFailed"
    assert state(api, r["id"])[0] == "ReserveFailed"
    a = msg(api, r["id"], "abort").json()
    assert a["version"] == 1 and a["committed_version"] == 1 and len(a["resources"]) == 2
    assert all(x["status"] == "committed" for x in a["resources"])


def test_modify_abort_restores_version(api):
    r = reserve(api, items=[compute(count=1)]).json()
    msg(api, r["id"], "commit")
    api.ok("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 3, "count": 2})
    a = msg(api, r["id"], "abort").json()
    assert (a["version"], a["committed_version"], len(a["resources"])) == (1, 1, 1)


def test_failed_commit_returns_to_last_committed_version(api, monkeypatch):
    r = reserve(api, items=[compute(count=1), {"kind": "network", "bandwidth_mbps": 10}]).json()
    msg(api, r["id"], "commit")
    api.ok("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 2, "count": 2})

    def refuse(ctx, version):
        raise ReserveFailed("the external network provider refused the commit")

    monkeypatch.setattr(api.coordinator.managers["network"], "commit", refuse)
    c = msg(api, r["id"], "commit")
    assert c.status_code == 409
    after = api.ok("GET", f"/reservations/{r['id']}", "alice")
    assert (after["reservation_state"], after["version"], after["committed_version"]) == ("ReserveStart", 1, 1)
    assert len(after["resources"]) == 2 and all(a["status"] == "committed" for a in after["resources"])
    assert ("reservation", "ReserveCommitting", "commit_fail", "ReserveStart") in transitions(api, r["id"])


@pytest.mark.parametrize("setup,message,machine,current", [
    ([], "release", "provision", "Released"),
    (["commit"], "commit", "reservation", "ReserveStart"),
    (["commit"], "abort", "reservation", "ReserveStart"),
    ([], "provision", "provision", "Released"),
    (["commit"], "release", "provision", "Released"),
    (["commit", "provision"], "provision", "provision", "Provisioned"),
    (["commit", "terminate"], "terminate", "lifecycle", "Terminated"),
    (["commit", "terminate"], "provision", "lifecycle", "Terminated"),
])
def test_illegal_transitions_are_409_naming_the_state(api, setup, message, machine, current):
    r = reserve(api).json()
    for m in setup:
        assert msg(api, r["id"], m).status_code == 200
    before = state(api, r["id"])
    resp = msg(api, r["id"], message)
    assert resp.status_code == 409
    body = resp.json()
    assert body["type"] == "IllegalTransition" and body["state"] == current and current in body["message"]
    assert state(api, r["id"]) == before  # nothing changed


def test_modify_while_held_is_illegal(api):
    r = reserve(api).json()
    m = api.call("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 2, "count": 2})
    assert m.status_code == 409 and m.json()["type"] == "IllegalTransition"


def test_provision_fails_when_a_host_refuses(api, monkeypatch):
    r = reserve(api).json()
    msg(api, r["id"], "commit")
    pushed = []

    def push(host, url, state):
        pushed.append((host, len(state.ops)))
        if state.ops:
            raise ConnectionError("agent unreachable")

    monkeypatch.setattr(api.coordinator.dataplane, "push", push)
    p = msg(api, r["id"], "provision")
    assert p.status_code == 502 and p.json()["type"] == "DataPlaneError"
    after = api.ok("GET", f"/reservations/{r['id']}", "alice")
    assert after["provision_state"] == "Released" and not after["data_plane_active"]
    assert pushed[-1][1] == 0  # the partial desired state was withdrawn again
    assert ("provision", "Provisioning", "provision_fail", "Released") in transitions(api, r["id"])
    types = [e["type"] for e in api.ok("GET", f"/reservations/{r['id']}/events", "alice")]
    assert "errorEvent" in types


def test_every_legal_transition_is_reached_through_the_api(api, clock, monkeypatch):
    """One walk per path through the three machines, all through the API; the transitions the
    reservations record must cover each machine's whole table. Needs no other test to have run."""
    rids = []

    def new(**kw):
        r = reserve(api, **kw)
        rids.append(r.json().get("id") or r.json()["reservation_id"])
        return rids[-1]

    a = new()  # the main path, with a modify, a release and a provision again
    for m in ("commit", "provision", "release", "provision"):
        assert msg(api, a, m).status_code == 200
    assert api.call("POST", f"/reservations/{a}/modify", "alice", json={"version": 2, "count": 2}).status_code == 200
    assert msg(api, a, "commit").status_code == 200
    assert msg(api, a, "terminate").status_code == 200
    b = new(items=[compute(count=99, cpus=8)])  # does not fit: ReserveFailed, then abort
    assert msg(api, b, "abort").status_code == 200
    assert msg(api, new(), "abort").status_code == 200  # abort a hold
    c = new()  # the hold timer
    clock.advance(120)
    api.coordinator.tick()
    assert msg(api, c, "abort").status_code == 200
    d = new()  # a commit that fails
    monkeypatch.setattr(api.coordinator.managers["compute"], "commit",
                        lambda ctx, version: (_ for _ in ()).throw(ReserveFailed("refused")))
    assert msg(api, d, "commit").status_code == 409
    monkeypatch.undo()
    e = new()  # a provision its hosts do not take
    assert msg(api, e, "commit").status_code == 200
    monkeypatch.setattr(api.coordinator.dataplane, "push",
                        lambda host, url, state: (_ for _ in ()).throw(DataPlaneError("down")))
    assert msg(api, e, "provision").status_code == 502
    monkeypatch.undo()
    f = new(duration_s=60)  # the end time, then terminate
    assert msg(api, f, "commit").status_code == 200
    clock.advance(61)
    api.coordinator.tick()
    assert msg(api, f, "terminate").status_code == 200
    g = new()  # a forced end, then terminate
    assert msg(api, g, "commit").status_code == 200
    assert api.call("POST", f"/reservations/{g}/force-end", "admin", params={"reason": "x"}).status_code == 200
    assert msg(api, g, "terminate").status_code == 200
    seen = {tr for rid in rids for tr in transitions(api, rid)}
    table = {(m.name, s, e, t) for m in MACHINES.values() for (s, e), t in m.transitions.items()}
    assert sorted(table - seen) == []


def test_a_version_aborted_may_be_asked_for_again(api):
    r = reserve(api).json()
    msg(api, r["id"], "commit")
    assert api.call("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 2, "count": 2}).status_code == 200
    assert msg(api, r["id"], "abort").status_code == 200
    again = api.call("POST", f"/reservations/{r['id']}/modify", "alice", json={"version": 2, "count": 3})
    assert again.status_code == 200, again.text
    assert msg(api, r["id"], "commit").json()["committed_version"] == 2
    assert len([x for x in api.ok("GET", f"/reservations/{r['id']}", "alice")["resources"] if "l1" in x]) == 3
