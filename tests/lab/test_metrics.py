"""Prometheus metrics on the real data plane: an agent's counters follow the packets two L1s
exchange (OVS's Interface statistics, the htb class of the shaped port), and the coordinator's
/metrics counts a reservation in its NSI states and its hosts as in sync."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from iris_haas.contract.ops import L1Op
from iris_haas.lab import probe
from iris_haas.lab import tenants as lab_tenants
from iris_haas.lab.tenants import L1
from tests.lab.test_coordinator_e2e import coord, l1_request, provisioned  # noqa: F401 - the fixture

pytestmark = pytest.mark.lab


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_an_agent_s_port_counters_grow_with_the_traffic_between_two_l1s(lab, tenants):
    l1s = [L1("a", "l0-1", "s1", vlan=101, address="10.0.101.21/24", rate_mbit=200),
           L1("a", "l0-1", "s2", vlan=101, address="10.0.101.22/24")]
    tenants.set(l1s)
    ops = {o.netns: o for o in lab_tenants.desired(lab.topo, l1s)["l0-1"].ops if isinstance(o, L1Op)}
    s1, s2 = ops[lab.ns("s1")], ops[lab.ns("s2")]

    def port(m, o, name):
        return m.get((name, frozenset({"port": o.port, "kind": "port", "tenant": "a", "l1": o.name}.items())))

    seconds = 6  # longer than ovs-vswitchd's statistics interval (5 s): one write falls within the flow
    with lab.client("l0-1") as c:
        before = samples(c.metrics())
        assert before[("iris_agent_info", frozenset({"host": "l0-1"}.items()))] == 1
        assert port(before, s1, "iris_port_receive_bytes_total") is not None
        assert probe.ping(lab.ns("s1"), "10.0.101.22", count=3) == 3
        with probe.Iperf3Server(lab.ns("s2")):
            result: dict[str, float] = {}
            flow = threading.Thread(target=lambda: result.update(mbit=probe.iperf3(lab.ns("s1"), "10.0.101.22",
                                                                                   seconds=seconds)))
            flow.start()
            during = []
            while flow.is_alive():  # scraped while the traffic flows
                during.append(samples(c.metrics()))
                flow.join(0.5)
        sent = result["mbit"] * 1e6 / 8 * seconds * 0.8  # what the receiver counted, give or take

        def grew(m):  # s1 sends: the switch receives on s1's port and sends on s2's
            return (port(m, s1, "iris_port_receive_bytes_total") - port(before, s1, "iris_port_receive_bytes_total"),
                    port(m, s2, "iris_port_transmit_bytes_total") - port(before, s2, "iris_port_transmit_bytes_total"))

        # ovs-vswitchd writes interface statistics every 5 s (stats-update-interval): wait for the next
        deadline = time.monotonic() + 15
        while True:
            after = samples(c.metrics())
            if min(grew(after)) >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert min(grew(after)) >= sent, (grew(after), sent)
    assert port(after, s1, "iris_port_receive_packets_total") > port(before, s1, "iris_port_receive_packets_total")
    mid = [port(m, s1, "iris_port_receive_bytes_total") for m in during]
    assert mid and all(x is not None for x in mid) and mid == sorted(mid)
    assert mid[-1] > port(before, s1, "iris_port_receive_bytes_total")
    # the egress limit of s1 (htb on the L1's end) counted the same bytes
    cls = frozenset({"device": s1.port, "class": "1:10", "tenant": "a", "l1": s1.name}.items())
    assert after[("iris_tc_class_bytes_total", cls)] - before.get(("iris_tc_class_bytes_total", cls), 0) >= sent
    assert ("iris_tc_class_drops_total", cls) in after
    # the other tenant's L1s are not on this host: no series of b
    assert not [k for k in after if ("tenant", "b") in k[1]]


def test_the_coordinator_counts_a_provisioned_reservation_and_its_hosts(lab, coord):  # noqa: F811
    c, _, tenants = coord
    r = provisioned(tenants["a"], l1_request(["10.0.101.51/24"]))
    node = next(x["node"] for x in r["resources"] if "l1" in x)

    def scrape():
        got = httpx.get(f"{c.url}/metrics", headers={"Authorization": f"Bearer {c.admin_token}"}, timeout=30)
        assert got.status_code == 200
        return samples(got.text)

    def converged(m):
        h = frozenset({"host": node}.items())
        return (m.get(("iris_host_in_sync", h)) == 1
                and m.get(("iris_host_acknowledged_generation", h)) == m.get(("iris_host_desired_generation", h)))

    deadline = time.monotonic() + 20  # provision waited for its hosts; a tick or a poll may be in flight
    while not converged(m := scrape()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert converged(m)
    state = {("iris_reservations", frozenset({"machine": k, "state": v}.items())): 1.0
             for k, v in (("reservation", "ReserveStart"), ("provision", "Provisioned"), ("lifecycle", "Created"))}
    assert {k: m[k] for k in state} == state
    assert m[("iris_host_pushes_total", frozenset({"host": node, "outcome": "ok"}.items()))] >= 1
    tenants["a"].post(f"/reservations/{r['id']}/terminate")
    m = scrape()
    assert m[("iris_reservations", frozenset({"machine": "lifecycle", "state": "Terminated"}.items()))] == 1
    assert m[("iris_reservations", frozenset({"machine": "provision", "state": "Provisioned"}.items()))] == 0
