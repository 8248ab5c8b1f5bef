"""The agent: mutual TLS on the control network, for the coordinator only; `apply` repairs a host
after a crash or a change made by hand; a host's certificate is rotated under a running data plane."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography import x509

from iris_haas.agent.client import AgentClient, AgentError, ClientTls
from iris_haas.control import pki
from iris_haas.control.sync import AgentDataPlane
from iris_haas.lab import probe, realizer
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, ovsdb
from iris_haas.linux.runner import SubprocessRunner

pytestmark = pytest.mark.lab


def test_only_the_coordinator_reaches_an_agent(lab, tmp_path):
    with lab.client("l0-1") as c:
        assert c.health()["node"] == "l0-1"
        c.state()
    # plain HTTP to the agent's port: no HTTP answer at all, whatever the token
    with AgentClient(lab.agent_url("l0-1").replace("https", "http"), token="x", netns=lab.ns("ctl"), timeout=5) as c:
        with pytest.raises(AgentError):
            c.health()
    pki.init_ca(tmp_path / "foreign")
    foreign = ClientTls.coordinator(tmp_path / "foreign")
    ca = lab.ca_dir / "ca.crt"
    for tls in (ClientTls(ca),  # no certificate
                ClientTls.host(lab.tls_dir("l0-2")),  # another host's (a tenant who broke out on l0-2)
                ClientTls(ca, foreign.cert, foreign.key)):  # a coordinator of another CA
        with lab.client("l0-1", timeout=5, tls=tls) as c, pytest.raises(AgentError):
            c.state()
    # and the coordinator does not take l0-1's answers for l0-2's
    with lab.client("l0-1", timeout=5, expect="l0-2") as c, pytest.raises(AgentError, match="certificate"):
        c.state()


def _data_plane(lab, node):
    """What a change to the data plane would change: OVS rows' uuids and the ofports."""
    st = ovsdb.snapshot(lab.ovs(node).db)
    return ({n: b["_uuid"] for n, b in st.bridges.items()}, {n: p["_uuid"] for n, p in st.ports.items()},
            {n: (i["_uuid"], i.get("ofport")) for n, i in st.interfaces.items()})


def _serial(lab, node) -> int:
    with lab.client(node, timeout=5) as c:  # a new client: a new handshake
        return x509.load_der_x509_certificate(c.peer_certificate()).serial_number


def test_rotation_and_restart_leave_the_data_plane_untouched(lab, tenants):
    tenants.set([L1("a", "l0-1", "r1", vlan=101, address="10.0.101.21/24")])
    assert probe.reachable(lab.ns("r1"), "10.0.101.10")
    before = _data_plane(lab, "l0-1")
    old = _serial(lab, "l0-1")
    replies: list[int] = []
    pinger = threading.Thread(target=lambda: replies.append(probe.ping(lab.ns("r1"), "10.0.101.10", count=60)))
    pinger.start()
    try:
        new = realizer.enroll_agent(lab, "l0-1")  # a new key and certificate, loaded without a restart
        deadline = time.monotonic() + 10
        while _serial(lab, "l0-1") != new:
            assert time.monotonic() < deadline, "the agent still serves its old certificate"
            time.sleep(0.1)
        assert new != old
        # the coordinator reaches it as before, by its name
        dp = AgentDataPlane(lab.coordinator_tls(), netns=lab.ns("ctl"), timeout=10)
        assert dp.observe("l0-1", lab.agent_url("l0-1")).in_sync
        # and a restarted agent, in sync with its host, touches nothing either
        realizer.stop_agent(lab, "l0-1")
        realizer.start_agent(lab, "l0-1")
        assert _serial(lab, "l0-1") == new
        with lab.client("l0-1") as c:
            assert c.state()["in_sync"]
    finally:
        pinger.join()
    assert replies == [60], "the ping stopped while the agent was rotated and restarted"
    assert _data_plane(lab, "l0-1") == before


def test_agent_reports_what_is_really_there(lab, tenants):
    tenants.set([L1("a", "l0-1", "r1", vlan=101, address="10.0.101.21/24", rate_mbit=50)])
    with lab.client("l0-1") as c:
        s = c.state()
    assert s["in_sync"]
    ops = {(o["op"], o.get("name") or o.get("port")): o for o in s["observed"]}
    assert ops[("port", "irisp-r1")]["vlan"] == 101
    assert ops[("tunnel", "iristt1g1")]["key"] == 1001
    assert ops[("shape", "irisp-r1")]["rate_mbit"] == 50


def test_kill_agent_and_break_things_by_hand_then_apply_repairs(lab, tenants):
    tenants.set([L1("a", "l0-1", "r1", vlan=101, address="10.0.101.21/24", rate_mbit=80),
                 L1("a", "l0-2", "r2", vlan=102, address="10.0.102.21/24")])
    assert probe.reachable(lab.ns("r1"), "10.0.101.10")
    r = SubprocessRunner()
    realizer.stop_agent(lab, "l0-1")
    # by hand, while the agent is dead: a port, a tunnel, the veth and its htb go away
    r.run(ovs.txn(lab.ovs("l0-1").db, *ovs.del_port("irisp-r1"), *ovs.del_port("iristt1g1")))
    nl.delete_link(lab.ns("l0-1"), "irisp-r1")
    # ... and the inter-DC trunk on the HaaS gateway
    r.run(ovs.txn(lab.ovs("hgw").db, *ovs.del_port("iristt1x1")))
    assert probe.ping(lab.ns("r2"), "10.0.102.10", count=2) == 0
    # the agent, started again, applies its stored state by itself: no one calls it
    realizer.start_agent(lab, "l0-1")
    with lab.client("l0-1") as c:
        deadline = time.monotonic() + 20
        while not c.state()["in_sync"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.state()["in_sync"]
    # the gateway's agent kept running: an apply repairs it now (its own loop would, later)
    with lab.client("hgw") as c:
        assert c.apply()["in_sync"]
        assert c.state()["in_sync"]
    assert "iristt1x1" in ovsdb.snapshot(lab.ovs("hgw").db).ports
    assert probe.reachable(lab.ns("r1"), "10.0.101.10")
    assert probe.reachable(lab.ns("r2"), "10.0.102.10")
    # a second apply has nothing to do
    with lab.client("l0-1") as c:
        assert c.apply()["actions"] == []


def test_status_matches_the_file(lab):
    s = realizer.status(lab)
    assert s["matches"], s


def test_lab_up_again_keeps_what_the_agents_hold(lab, tenants):
    tenants.set([L1("b", "l0-4", "w1", vlan=102, address="10.0.102.21/24")])
    assert probe.reachable(lab.ns("w1"), "10.0.102.10")
    realizer.up(lab)  # idempotent: nothing is rebuilt, nothing provisioned is undone
    assert probe.ping(lab.ns("w1"), "10.0.102.10", count=2) == 2
    assert realizer.status(lab)["matches"]
