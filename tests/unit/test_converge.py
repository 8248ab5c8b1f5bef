"""The control loop converges whatever fails: versioned desired state per host, a reconciler that
re-sends it until each host has it, truthful provision states, capacity that waits for the host,
one leader among coordinators. The data plane here is the in-memory twin with hosts that can be
taken down."""

from __future__ import annotations

import pytest

from iris_haas.contract.errors import DataPlaneError
from iris_haas.control.engine import Coordinator
from iris_haas.control.sync import InMemoryDataPlane
from tests.conftest import Api, standard_inventory


class FlakyDataPlane(InMemoryDataPlane):
    """The in-memory twin whose hosts can be down: a push to one raises, as an unreachable agent."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.pushes: list[tuple[str, int]] = []

    def push(self, host, agent_url, state):
        if host in self.down:
            raise DataPlaneError(f"connection refused by {host} (tenant x's secret 10.9.9.9)")
        self.pushes.append((host, state.version))
        return super().push(host, agent_url, state)


@pytest.fixture
def flaky(db, clock):
    dp = FlakyDataPlane()
    c = Coordinator(db, dataplane=dp, clock=clock, push_timeout_s=5, provision_timeout_s=5)
    a = Api(c)
    standard_inventory(a)
    yield a, dp
    c.sync.close()


def provisioned(api, who="alice", cpus=8):
    r = api.ok("POST", "/reservations", who, json={"duration_s": 3600, "items": [
        {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": cpus, "memory_mb": 1024, "disk_gb": 10}]})
    api.ok("POST", f"/reservations/{r['id']}/commit", who)
    return api.ok("POST", f"/reservations/{r['id']}/provision", who)


def rows(api):
    return {r.host: r for r in api.coordinator.sync.hosts()}


def test_generations_only_grow_are_stored_and_acknowledged(flaky):
    api, dp = flaky
    r = provisioned(api)
    node = r["resources"][0]["node"]
    g1 = rows(api)[node]
    assert g1.generation >= 1 and g1.acked == g1.generation and g1.in_sync and g1.last_seen is not None
    assert dp.generations[node] == g1.generation  # the host was sent that generation
    api.ok("POST", f"/reservations/{r['id']}/release", "alice")
    g2 = rows(api)[node]
    assert g2.generation == g1.generation + 1 and g2.acked == g2.generation
    # a second coordinator on the same database numbers on from the stored generation
    other = Coordinator(api.coordinator.db, dataplane=dp, clock=api.coordinator.clock)
    assert other.desired_states()[node][1].version == g2.generation
    other.sync.close()


def test_a_release_with_the_agent_down_is_finished_when_it_returns_and_holds_the_capacity_until(flaky, clock):
    api, dp = flaky
    r = provisioned(api)
    node = r["resources"][0]["node"]
    dp.down.add(node)
    api.ok("POST", f"/reservations/{r['id']}/terminate", "alice")
    assert node in dp.hosts  # the L1 still runs there: the host could not be told
    row = rows(api)[node]
    assert row.acked < row.generation and not row.in_sync and row.error
    # the 8 cpus of that L0 are not given to anyone while its host may still run the old L1
    nodes_free = {n["name"] for n in api.ok("GET", "/nodes") if n["name"] != node}
    for _ in nodes_free:
        provisioned(api, "bob")
    assert api.call("POST", "/reservations", "bob", json={"duration_s": 60, "items": [
        {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": 8, "memory_mb": 1024, "disk_gb": 10}]}
    ).status_code == 409
    # the agent comes back; the leader's reconciler (its tick) finishes the release unaided
    dp.down.clear()
    for _ in range(50):
        clock.advance(31)  # past any backoff
        api.coordinator.tick()
        api.coordinator.sync.settle(5)
        if node not in dp.hosts:
            break
    assert node not in dp.hosts
    api.coordinator.tick()  # and then its capacity is free again
    assert provisioned(api, "bob")["provision_state"] == "Provisioned"


def test_a_host_rebuilt_without_its_state_is_found_and_sent_it_again(flaky, clock):
    api, dp = flaky
    r = provisioned(api)
    node = r["resources"][0]["node"]
    dp.lose(node)  # a reboot wiped it; its agent answers, holding generation 0
    for _ in range(3):  # a poll finds it, the next pass sends its state
        clock.advance(11)
        api.coordinator.tick()
        api.coordinator.sync.settle(5)
    assert [o["name"] for o in dp.hosts[node] if o["op"] == "l1"] == [r["resources"][0]["l1"]]
    row = rows(api)[node]
    assert row.acked == row.generation and row.in_sync


def test_provision_with_a_host_down_fails_cleanly_naming_only_its_hosts(flaky):
    api, dp = flaky
    dp.down.add("haas-gw")
    r = api.ok("POST", "/reservations", "alice", json={"duration_s": 3600, "items": [
        {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": 1, "memory_mb": 1024, "disk_gb": 10}]})
    api.ok("POST", f"/reservations/{r['id']}/commit", "alice")
    p = api.call("POST", f"/reservations/{r['id']}/provision", "alice")
    assert p.status_code == 502 and p.json()["type"] == "DataPlaneError"
    got = api.ok("GET", f"/reservations/{r['id']}", "alice")
    assert (got["provision_state"], got["data_plane_active"]) == ("Released", False)
    [err] = [e["detail"] for e in api.ok("GET", f"/reservations/{r['id']}/events", "alice")
             if e["type"] == "errorEvent"]
    assert err["hosts"] == ["haas-gw"] and "haas-gw" in err["message"]
    assert "10.9.9.9" not in err["message"] and "secret" not in err["message"]  # no host's own words
    # the other hosts were told to undo it: the L1 is gone from its L0
    assert not [h for h, ops in dp.hosts.items() if any(o["op"] == "l1" for o in ops)]


def test_one_unreachable_host_does_not_stop_the_others(flaky):
    api, dp = flaky
    a = provisioned(api, "alice", cpus=8)
    dp.down.add(a["resources"][0]["node"])
    b = provisioned(api, "bob", cpus=8)  # another L0: provisioned although alice's L0 is down
    assert b["provision_state"] == "Provisioned"


def test_only_one_coordinator_leads_on_one_database(sqlite_db, clock):
    first = Coordinator(sqlite_db, clock=clock)
    second = Coordinator(sqlite_db, clock=clock)
    try:
        assert first.lease.held() and not second.lease.held()
        first.lease.release()
        assert second.lease.held()
    finally:
        first.sync.close()
        second.sync.close()
        first.lease.release()
        second.lease.release()


@pytest.mark.postgresql
def test_on_postgresql_the_lease_passes_when_the_leader_goes(postgres, clock):
    from iris_haas.store.db import Database

    url = postgres.fresh_database()
    a, b = Database(url), Database(url)
    first, second = Coordinator(a, clock=clock), Coordinator(b, clock=clock)
    try:
        assert first.lease.held() and not second.lease.held()
        a.dispose()  # the leader's process is gone: its session, and the lock, end
        first.lease._drop()
        assert second.lease.held()
    finally:
        first.sync.close()
        second.sync.close()
        second.lease.release()
        b.dispose()


def test_the_admin_sees_each_hosts_generations_and_a_tenant_does_not(flaky):
    api, dp = flaky
    r = provisioned(api)
    node = r["resources"][0]["node"]
    dp.down.add(node)
    api.ok("POST", f"/reservations/{r['id']}/release", "alice")
    got = {h["host"]: h for h in api.ok("GET", "/hosts")}
    assert got[node]["acked"] < got[node]["generation"] and not got[node]["in_sync"] and got[node]["error"]
    assert got["haas-gw"]["acked"] == got["haas-gw"]["generation"] and got["haas-gw"]["in_sync"]
    assert api.call("GET", "/hosts", "alice").status_code == 403


def test_a_provision_its_coordinator_did_not_finish_is_settled_by_the_leader(flaky, clock, monkeypatch):
    api, dp = flaky
    r = api.ok("POST", "/reservations", "alice", json={"duration_s": 3600, "items": [
        {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": 1, "memory_mb": 1024, "disk_gb": 10}]})
    api.ok("POST", f"/reservations/{r['id']}/commit", "alice")
    monkeypatch.setenv("IRIS_FAILPOINTS", "provision.after_commit=raise")  # the coordinator "dies" there
    assert api.call("POST", f"/reservations/{r['id']}/provision", "alice").status_code == 500
    monkeypatch.delenv("IRIS_FAILPOINTS")
    assert api.ok("GET", f"/reservations/{r['id']}", "alice")["provision_state"] == "Provisioning"
    api.coordinator.tick()  # the leader pushes, and finds every host of it holding it
    api.coordinator.sync.settle(5)
    api.coordinator.tick()
    assert api.ok("GET", f"/reservations/{r['id']}", "alice")["provision_state"] == "Provisioned"


def test_a_provision_whose_hosts_never_confirm_fails_after_a_bound(flaky, clock, monkeypatch):
    api, dp = flaky
    r = api.ok("POST", "/reservations", "alice", json={"duration_s": 3600, "items": [
        {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": 1, "memory_mb": 1024, "disk_gb": 10}]})
    api.ok("POST", f"/reservations/{r['id']}/commit", "alice")
    monkeypatch.setenv("IRIS_FAILPOINTS", "provision.after_commit=raise")
    api.call("POST", f"/reservations/{r['id']}/provision", "alice")
    monkeypatch.delenv("IRIS_FAILPOINTS")
    dp.down.add("haas-gw")
    clock.advance(11)  # more than twice the provision timeout (5 s here)
    api.coordinator.tick()
    got = api.ok("GET", f"/reservations/{r['id']}", "alice")
    assert (got["provision_state"], got["data_plane_active"]) == ("Released", False)


def test_a_host_ahead_of_the_coordinator_is_caught_up_never_rolled_back(flaky):
    api, dp = flaky
    dp.generations["haas-gw"] = 40  # another controller numbered this host past the database
    r = provisioned(api)
    assert r["provision_state"] == "Provisioned"
    assert dp.generations["haas-gw"] == 41 and rows(api)["haas-gw"].generation == 41


def test_an_agent_refuses_an_older_state_keeps_its_own_and_repairs_drift(tmp_path):
    from fastapi.testclient import TestClient

    from iris_haas.agent.server import Agent, create_app
    from iris_haas.contract.ops import BridgeOp, DesiredState
    from iris_haas.hostd.memory import MemoryHost

    host = MemoryHost()
    agent = Agent("l0-1", host, tmp_path)
    http = TestClient(create_app(agent, "tok"), headers={"Authorization": "Bearer tok"})
    five = DesiredState(version=5, ops=[BridgeOp(name="irisbt1", tenant="a")])
    assert http.put("/v1/desired", json=five.model_dump(mode="json")).json()["version"] == 5
    older = http.put("/v1/desired", json=DesiredState(version=3).model_dump(mode="json"))
    assert older.status_code == 409 and older.json()["current"] == 5
    assert http.put("/v1/desired", json=five.model_dump(mode="json")).status_code == 200  # the same again: fine
    # a restarted agent still holds generation 5, and its loop repairs what was lost by hand
    again = Agent("l0-1", host, tmp_path)
    assert again.desired.version == 5
    host.lose("bridge", "irisbt1")
    assert again.reconcile() is not None and again.reconcile() is None
    assert ("bridge", "irisbt1") in host.objects


@pytest.mark.parametrize("field,value", [
    ("l1_netns", "../../proc/1/ns/net"), ("l1_netns", "iris/../../proc/1/ns/net"), ("l1_netns", "iris.."),
    ("l1_netns", "ns1"),
])
def test_an_agent_refuses_a_namespace_outside_its_prefix_and_holds_nothing_of_it(tmp_path, field, value):
    from fastapi.testclient import TestClient

    from iris_haas.agent.server import Agent, create_app
    from iris_haas.hostd.memory import MemoryHost

    host = MemoryHost()
    http = TestClient(create_app(Agent("l0-1", host, tmp_path), "tok"), headers={"Authorization": "Bearer tok"})
    op = {"op": "port", "bridge": "irisb-a", "name": "irisp-x", "l1_ifname": "iris1-x", field: value}
    r = http.put("/v1/desired", json={"version": 1, "ops": [{"op": "bridge", "name": "irisb-a"}, op]})
    assert r.status_code == 422 and field in r.text, r.text
    assert not host.objects
    assert http.get("/v1/desired").json()["version"] == 0
