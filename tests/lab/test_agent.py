"""The agent: authenticated HTTP on the control network; `apply` repairs a host after a crash
or a change made by hand."""

from __future__ import annotations

import time

import pytest

from iris_haas.agent.client import AgentClient, AgentError
from iris_haas.lab import probe, realizer
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, ovsdb
from iris_haas.linux.runner import SubprocessRunner

pytestmark = pytest.mark.lab


def test_agent_needs_its_token(lab):
    a = next(a for a in lab.plan.agents if a.node == "l0-1")
    with AgentClient(f"http://{a.ip}:{a.port}", "wrong", netns=lab.ns("ctl")) as c:
        assert c.health()["ok"]  # liveness is public
        with pytest.raises(AgentError) as e:
            c.state()
        assert e.value.extra["status_code"] == 401


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
