"""Prometheus metrics: the coordinator's /metrics (reservations counted in their NSI states, the
hosts' generations, push outcomes, latency histograms by route template, who may scrape) and an
agent's (a real agent server over mutual TLS with the in-memory host: its L1s' and ports' counters,
a half-made L1, a scrape while a reconcile pass holds the lock)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from iris_haas.agent.client import AgentClient, AgentError, ClientTls
from iris_haas.agent.metrics import AgentCollector, Exposition
from iris_haas.agent.metrics import registry as agent_registry
from iris_haas.agent.server import Agent, create_app
from iris_haas.api.app import create_app as create_coordinator_app
from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import DesiredState, L1Op, TunnelOp
from iris_haas.control.engine import Coordinator
from iris_haas.control.sync import InMemoryDataPlane
from iris_haas.hostd.memory import MemoryHost
from tests.conftest import ADMIN, Api, MemoryAgents, standard_inventory
from tests.unit.test_agent_tls import agent, pkis  # noqa: F401 - fixtures: a real agent server on TLS

pytestmark = pytest.mark.unit


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, parsed by prometheus_client's own parser."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float | None:
    return m.get((name, frozenset(labels.items())))


class DownDataPlane(InMemoryDataPlane):
    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    def push(self, host, agent_url, state):
        if host in self.down:
            raise DataPlaneError(f"connection refused by {host}")
        return super().push(host, agent_url, state)


@pytest.fixture
def coord_api(db, clock):
    dp = DownDataPlane()
    c = Coordinator(db, dataplane=dp, clock=clock, push_timeout_s=5, provision_timeout_s=5)
    a = Api(c)
    standard_inventory(a)
    yield a, dp
    c.close()


def scrape(api: Api, headers=None) -> dict:
    r = api.client.get("/metrics", headers=api.admin if headers is None else headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def reserve(api, who="alice", count=1, cpus=1):
    return api.call("POST", "/reservations", who, json={"duration_s": 3600, "items": [
        {"kind": "compute", "count": count, "l1_kind": "lxc", "cpus": cpus, "memory_mb": 1024, "disk_gb": 10}]})


def test_reservations_are_counted_in_each_of_their_states(coord_api):
    api, _ = coord_api
    m = scrape(api)
    assert value(m, "iris_reservations", machine="reservation", state="ReserveHeld") == 0
    assert value(m, "iris_reservations", machine="lifecycle", state="Terminated") == 0  # every state, zeros too
    held = reserve(api).json()
    provisioned = reserve(api, "bob").json()
    api.ok("POST", f"/reservations/{provisioned['id']}/commit", "bob")
    api.ok("POST", f"/reservations/{provisioned['id']}/provision", "bob")
    ended = reserve(api).json()
    api.ok("POST", f"/reservations/{ended['id']}/commit", "alice")
    api.ok("POST", f"/reservations/{ended['id']}/terminate", "alice")
    m = scrape(api)
    assert value(m, "iris_reservations", machine="reservation", state="ReserveHeld") == 1
    assert value(m, "iris_reservations", machine="reservation", state="ReserveStart") == 2
    assert value(m, "iris_reservations", machine="provision", state="Provisioned") == 1
    assert value(m, "iris_reservations", machine="provision", state="Released") == 2
    assert value(m, "iris_reservations", machine="lifecycle", state="Created") == 2
    assert value(m, "iris_reservations", machine="lifecycle", state="Terminated") == 1
    for machine in ("reservation", "provision", "lifecycle"):
        assert sum(v for (n, labels), v in m.items()
                   if n == "iris_reservations" and ("machine", machine) in labels) == 3
    assert held["reservation_state"] == "ReserveHeld"


def test_hosts_generations_and_push_outcomes(coord_api):
    api, dp = coord_api
    r = reserve(api, cpus=8).json()
    api.ok("POST", f"/reservations/{r['id']}/commit", "alice")
    node = api.ok("POST", f"/reservations/{r['id']}/provision", "alice")["resources"][0]["node"]
    row = {h.host: h for h in api.coordinator.sync.hosts()}[node]
    m = scrape(api)
    assert value(m, "iris_host_desired_generation", host=node) == row.generation >= 1
    assert value(m, "iris_host_acknowledged_generation", host=node) == row.acked == row.generation
    assert value(m, "iris_host_in_sync", host=node) == 1
    assert value(m, "iris_host_last_seen_timestamp_seconds", host=node) == row.last_seen
    assert value(m, "iris_host_pushes_total", host=node, outcome="ok") >= 1
    assert value(m, "iris_host_pushes_total", host=node, outcome="failed") is None

    dp.down.add(node)  # its agent is unreachable: the release cannot reach it
    api.ok("POST", f"/reservations/{r['id']}/release", "alice")
    m = scrape(api)
    assert value(m, "iris_host_pushes_total", host=node, outcome="failed") >= 1
    assert value(m, "iris_host_in_sync", host=node) == 0
    assert value(m, "iris_host_acknowledged_generation", host=node) < value(m, "iris_host_desired_generation",
                                                                            host=node)


def test_latency_histograms_by_route_template_and_status_class(coord_api):
    api, _ = coord_api
    ok = reserve(api).json()
    assert reserve(api, count=100).status_code == 409  # does not fit
    for rid in (ok["id"], "nosuch1", "nosuch2"):
        api.call("GET", f"/reservations/{rid}", "alice")
    api.client.get("/v1/no/such/route/at/all")
    m = scrape(api)
    assert value(m, "iris_admission_duration_seconds_count", request="reserve", outcome="held") == 1
    assert value(m, "iris_admission_duration_seconds_count", request="reserve", outcome="failed") == 1
    assert value(m, "iris_admission_duration_seconds_bucket", request="reserve", outcome="held", le="+Inf") == 1
    api_count = {labels: v for (n, labels), v in m.items() if n == "iris_api_request_duration_seconds_count"}
    by = {(d["handler"], d["method"], d["status"]): v for d, v in ((dict(k), v) for k, v in api_count.items())}
    assert by[("/v1/reservations/{rid}", "GET", "2xx")] == 1
    assert by[("/v1/reservations/{rid}", "GET", "4xx")] == 2
    assert by[("/v1/reservations", "POST", "2xx")] == 1 and by[("/v1/reservations", "POST", "4xx")] == 1
    assert by[("none", "GET", "4xx")] == 1  # an unknown path is one series, whatever it was
    assert not [h for h, _, _ in by if "nosuch" in h]


def test_who_may_scrape(coord_api):
    api, _ = coord_api
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = api.client.get("/metrics", headers=api.tenants["alice"])
    assert r.status_code == 403 and r.json()["type"] == "Forbidden"
    assert api.client.get("/metrics", headers=api.admin).status_code == 200
    public = create_coordinator_app(api.coordinator, ADMIN, metrics_public=True)
    assert TestClient(public).get("/metrics").status_code == 200


def test_a_scrape_does_not_wait_for_a_writer(coord_api):
    api, _ = coord_api
    reserve(api)
    writing, done = threading.Event(), threading.Event()

    def long_write():  # a transaction that holds SQLite's write lock, as a scheduler tick deriving every host does
        with api.coordinator.db.transaction() as s:
            api.coordinator.db.admission_lock(s)
            s.execute(text("UPDATE meta SET value = value WHERE key = 'inventory'"))
            writing.set()
            done.wait(10)

    t = threading.Thread(target=long_write)
    t.start()
    try:
        assert writing.wait(5)
        t0 = time.monotonic()
        m = scrape(api)
        assert time.monotonic() - t0 < 2
        assert value(m, "iris_reservations", machine="reservation", state="ReserveHeld") == 1
    finally:
        done.set()
        t.join()


def test_each_app_has_its_own_registry(coord_api):
    api, _ = coord_api
    reserve(api)
    other = Api(api.coordinator)  # a second app in this process: its own registry, nothing shared
    m, m2 = scrape(api), scrape(other)
    assert value(m, "iris_admission_duration_seconds_count", request="reserve", outcome="held") == 1
    assert value(m2, "iris_admission_duration_seconds_count", request="reserve", outcome="held") is None
    assert value(m2, "iris_reservations", machine="reservation", state="ReserveHeld") == 1  # one database


# ---------------------------------------------------------------- an agent

STATE = DesiredState.model_validate({"version": 7, "ops": [
    {"op": "bridge", "name": "irisb-a", "tenant": "alice"},
    {"op": "tunnel", "bridge": "irisb-a", "name": "irisg-a1", "remote_ip": "198.18.10.1", "key": 9, "tenant": "alice"},
    {"op": "l1", "name": "iris1", "kind": "lxc", "netns": "iris1", "bridge": "irisb-a", "port": "irisp-iris1",
     "vlan": 101, "trunk": True, "tenant": "alice"},
    {"op": "l1", "name": "iris2", "kind": "kvm", "netns": "iris2", "bridge": "irisb-a", "port": "irisp-iris2",
     "vlan": 101, "trunk": True, "tenant": "alice"},
    {"op": "shape", "port": "irisp-iris1", "rate_mbit": 200, "tenant": "alice"},
]})


def agent_scrape(url, pkis_dir) -> dict:
    with AgentClient(url, ClientTls.coordinator(pkis_dir / "ca"), node="l0-1", timeout=5) as c:
        return samples(c.metrics())


def test_an_agent_reports_its_l1s_ports_and_classes(pkis, agent):  # noqa: F811
    url, _, host = agent
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-1", timeout=5) as c:
        assert c.put(STATE)["in_sync"]
    host.count("irisp-iris1", rx_bytes=5000, rx_packets=4, tx_bytes=700, tx_dropped=1)
    host.count("irisg-a1", tx_bytes=5000)
    host.use("iris1", cpu_seconds=1.5, memory_bytes=64 << 20)
    m = agent_scrape(url, pkis)
    port = {"port": "irisp-iris1", "kind": "port", "tenant": "alice", "l1": "iris1"}
    assert value(m, "iris_port_receive_bytes_total", **port) == 5000
    assert value(m, "iris_port_receive_packets_total", **port) == 4
    assert value(m, "iris_port_transmit_bytes_total", **port) == 700
    assert value(m, "iris_port_transmit_drop_total", **port) == 1
    assert value(m, "iris_port_transmit_bytes_total", port="irisg-a1", kind="tunnel", tenant="alice", l1="") == 5000
    l1 = {"l1": "iris1", "tenant": "alice", "kind": "lxc"}
    assert value(m, "iris_l1_cpu_seconds_total", **l1) == 1.5
    assert value(m, "iris_l1_memory_bytes", **l1) == 64 << 20
    assert value(m, "iris_tc_class_bytes_total", device="irisp-iris1", **{"class": "1:10"}, tenant="alice",
                 l1="iris1") == 5000
    assert value(m, "iris_agent_desired_generation") == 7
    assert value(m, "iris_agent_info", host="l0-1") == 1
    # growing: counters follow the traffic
    host.count("irisp-iris1", rx_bytes=1000)
    assert value(agent_scrape(url, pkis), "iris_port_receive_bytes_total", **port) == 6000


def test_a_half_made_l1_is_left_out_and_the_rest_reported(pkis, agent):  # noqa: F811
    url, _, host = agent
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-1", timeout=5) as c:
        c.put(STATE)
    host.lose("l1", "iris2")  # its driver has not made it (yet), or it is being removed
    m = agent_scrape(url, pkis)
    names = {dict(labels).get("l1") for (n, labels) in m if n == "iris_l1_memory_bytes"}
    assert names == {"iris1"}
    assert value(m, "iris_port_receive_bytes_total", port="irisp-iris1", kind="port", tenant="alice", l1="iris1") == 0


def test_a_scrape_does_not_wait_for_the_reconcile_lock(pkis, agent, tmp_path):  # noqa: F811
    url, _, host = agent
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-1", timeout=5) as c:
        c.put(STATE)
    # the agent under test is built by the fixture; take its lock the way a long reconcile pass does
    ag = Agent("l0-1", host, tmp_path)
    ag.desired = STATE
    app_lock_held = threading.Event()
    release = threading.Event()

    def long_pass():
        with ag.lock:
            app_lock_held.set()
            release.wait(10)

    t = threading.Thread(target=long_pass)
    t.start()
    try:
        assert app_lock_held.wait(5)
        t0 = time.monotonic()
        r = TestClient(create_app(ag, None)).get("/metrics")
        assert r.status_code == 200 and time.monotonic() - t0 < 2
        assert "iris_port_receive_bytes_total" in r.text
    finally:
        release.set()
        t.join()


def test_only_the_coordinator_s_certificate_scrapes_an_agent(pkis, agent):  # noqa: F811
    url, _, _ = agent
    with AgentClient(url, ClientTls.host(pkis / "l0-2"), node="l0-1", timeout=5) as c, pytest.raises(AgentError):
        c.metrics()


def test_the_agent_s_text_is_prometheus_client_s(tmp_path):
    """The agent writes its text itself (keeping each series' escaped name and labels between
    scrapes): byte for byte generate_latest's, across scrapes where series come and go and label
    values need escaping."""
    host = MemoryHost()
    ag = Agent("l0-1", host, tmp_path)
    odd = STATE.model_copy(update={"ops": [*STATE.ops, TunnelOp(name="irisg-b1", bridge="irisb-a", remote_ip="198.18.0.9",
                                                                 key=9, tenant='bob "the\\n\\\\one"')]})
    ag.put(odd)
    host.count("irisp-iris1", rx_bytes=10**12, tx_bytes=3)
    host.use("iris1", cpu_seconds=0.1 + 0.2, memory_bytes=1)
    times = itertools.cycle([0.0, 0.25])  # the scrape's duration: the same in both texts
    collector = AgentCollector("l0-1", lambda: ag.desired, host.stats, clock=lambda: next(times))
    ours = Exposition(collector)
    for change in (lambda: None, lambda: host.lose("l1", "iris2"), lambda: ag.put(STATE), lambda: None):
        change()
        body = ours.render()
        assert body == generate_latest(agent_registry(collector))
        assert list(text_string_to_metric_families(body.decode()))  # and it parses
    assert len(ours._heads) == sum(1 for line in body.decode().splitlines() if not line.startswith("#"))


# ---------------------------------------------------------------- utilization (the dashboard's)

class OneAgentDown(MemoryAgents):
    def metrics(self, host, agent_url):
        if host == "haas-gw":
            raise ConnectionRefusedError(f"{host}: connection refused")
        return super().metrics(host, agent_url)


def test_utilization_reads_the_agents_and_shows_a_tenant_its_own(db, clock):
    dp = OneAgentDown()
    c = Coordinator(db, dataplane=dp, clock=clock, push_timeout_s=5, provision_timeout_s=5)
    try:
        api = Api(c)
        standard_inventory(api, nodes=1)
        for who in ("alice", "bob"):
            r = reserve(api, who).json()
            api.ok("POST", f"/reservations/{r['id']}/commit", who)
            api.ok("POST", f"/reservations/{r['id']}/provision", who)
        l1 = {o.tenant: o for o in dp.states["l0-0"].ops if isinstance(o, L1Op)}
        dp.memory["l0-0"].use(l1["alice"].name, cpu_seconds=2.5, memory_bytes=1 << 20)
        dp.memory["l0-0"].count(l1["alice"].port, rx_bytes=1234)
        everything = api.ok("GET", "/utilization")
        assert {u["tenant"] for u in everything["l1s"]} == {"alice", "bob"}
        alice_l1 = next(u for u in everything["l1s"] if u["tenant"] == "alice")
        assert (alice_l1["host"], alice_l1["cpu_seconds"], alice_l1["memory_bytes"]) == ("l0-0", 2.5, 1 << 20)
        port = next(p for p in everything["ports"] if p["port"] == l1["alice"].port)
        assert (port["l1"], port["rx_bytes"], port["tx_bytes"]) == (l1["alice"].name, 1234, 0)
        down = [h for h in everything["hosts"] if not h["ok"]]
        assert [h["host"] for h in down] == ["haas-gw"] and "connection refused" in down[0]["error"]
        mine = api.ok("GET", "/utilization", "alice")
        assert [u["l1"] for u in mine["l1s"]] == [l1["alice"].name] and mine["hosts"] == []
        assert {p["tenant"] for p in mine["ports"]} == {"alice"}
        assert api.call("GET", "/utilization", None).status_code == 401
    finally:
        c.close()
