"""Pure parts of the data plane, read without root: names, OVSDB commands, tc requests, the
reconciler's decisions, the overlay mesh, the lab's expansion, the gateway configuration, and
the agent's API over the in-memory host twin."""

from __future__ import annotations

import ipaddress

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from iris_haas.agent.server import Agent, create_app
from iris_haas.contract.ops import BridgeOp, DesiredState, PortOp, ShapeOp, TunnelLimitOp, TunnelOp, inner_mtu
from iris_haas.hostd.actions import CreateVeth, DeleteLink, DeleteNetns, OvsdbTransaction, TcChange
from iris_haas.hostd.gateway import GatewaySpec, iaas_gateway_ops, iaas_gateway_script
from iris_haas.hostd.memory import MemoryHost
from iris_haas.hostd.reconciler import Facts, HostConfig, plan
from iris_haas.lab.topology import Topology, expand
from iris_haas.linux import ovs, ovsdb, tc

pytestmark = pytest.mark.unit


def test_one_transaction_per_change():
    c = ovs.txn("unix:/x/db.sock", *ovs.add_bridge("br", datapath_type="netdev", external_ids={"iris-owner": "r1"}),
                *ovs.gre_port("br", "t1", remote_ip="198.18.0.1", key=7, protected=True))
    assert c.argv[0] == "ovs-vsctl" and c.argv.count("ovs-vsctl") == 1
    assert "--db=unix:/x/db.sock" in c.argv
    s = " ".join(c.argv)
    assert "-- --may-exist add-br br -- set Bridge br datapath_type=netdev" in s
    assert 'options:key="7"' in s and 'options:remote_ip="198.18.0.1"' in s and "protected=true" in s
    assert "type=gre" in s


def test_port_vlan_modes():
    s = " ".join(" ".join(x) for x in ovs.add_port("br", "p", tag=101, vlan_mode="native-untagged"))
    assert "tag=101" in s and "vlan_mode=native-untagged" in s and "trunks=[]" in s
    s = " ".join(" ".join(x) for x in ovs.add_port("br", "p"))
    assert "tag=[]" in s and "vlan_mode=[]" in s


def test_wanted_columns_match_rows_as_ovsdb_holds_them():
    want = ovs.port_columns(tag=101, vlan_mode="access", external_ids={"iris-op": "port"})
    row = {"name": "p", "tag": 101, "trunks": [], "vlan_mode": "access", "protected": False,
           "external_ids": {"iris-op": "port"}, "qos": None}
    assert ovsdb.matches(want, row)
    assert ovsdb.matches({"trunks": []}, {"trunks": None})  # an empty set and an absent value are one datum
    assert not ovsdb.matches(want, None)
    assert not ovsdb.matches(want, {**row, "tag": 102})
    assert not ovsdb.matches(want, {**row, "protected": True})
    # maps are compared whole: Iris writes them whole
    assert not ovsdb.matches(want, {**row, "external_ids": {"iris-op": "port", "old": "key"}})
    gre = ovs.gre_columns(remote_ip="198.18.0.1", key=7)
    assert gre == {"type": "gre", "options": {"remote_ip": "198.18.0.1", "key": "7"}}
    assert not ovsdb.matches(gre, {"type": "gre", "options": {**gre["options"], "local_ip": "198.18.0.2"}})


def test_tc_requests():
    reqs = tc.port_limit_requests(100)
    assert reqs[0].kind == "htb" and reqs[0].kwargs["handle"] == tc.ROOT
    assert reqs[1].kwargs["rate"] == 12_500_000 == reqs[1].kwargs["ceil"]
    assert [str(r) for r in reqs] == ["add htb 1:", "replace-class htb 1:10 rate 100Mbit"]
    a, b = tc.tenant_class("198.18.0.11"), tc.tenant_class("198.18.0.12")
    assert a != b and a >> 16 == 1
    f = tc.tenant_limit_requests("198.18.0.11", 50)[1]
    assert f.kwargs["keys"] == ["0xc612000b/0xffffffff+16"] and f.kwargs["target"] == a
    assert tc.handle(a) == "1:430b" and tc.u32_handle(f.kwargs["handle"]) == "800::30b"


def test_ops_validate():
    with pytest.raises(ValidationError):
        PortOp(bridge="b", name="x" * 16)
    with pytest.raises(ValidationError):
        PortOp(bridge="b", name="p", vlan=4095)
    with pytest.raises(ValidationError):
        TunnelOp(bridge="b", name="t", remote_ip="not-an-ip")
    with pytest.raises(ValidationError):
        DesiredState(ops=[BridgeOp(name="b"), BridgeOp(name="b")])
    d = DesiredState.model_validate({"ops": [{"op": "bridge", "name": "b"}, {"op": "shape", "port": "p", "rate_mbit": 5}]})
    assert isinstance(d.ops[1], ShapeOp)
    assert inner_mtu(1500) == 1454 and inner_mtu(1600) == 1500


def _facts(ports=None, bridges=None, interfaces=None, links=None, l1=None):
    return Facts(ovs=ovsdb.OvsState(bridges or {}, ports or {}, interfaces or {}), links=links or {}, l1=l1 or {})


def _changes(acts) -> list[ovs.Change]:
    return [c for a in acts if isinstance(a, OvsdbTransaction) for c in a.changes]


CFG = HostConfig(db="unix:/x", datapath_type="netdev", underlay_mtu=1600, warmup=False)


def _state():
    return DesiredState(ops=[
        BridgeOp(name="irisb-a", owner="r1", tenant="a"),
        TunnelOp(bridge="irisb-a", name="irist-a-gw", remote_ip="198.18.1.1", key=5, owner="r1", tenant="a"),
        PortOp(bridge="irisb-a", name="irisp-x", l1_netns="iris-l-x", l1_ifname="iris1-x", vlan=101,
               owner="r1", tenant="a"),
        ShapeOp(port="irisp-x", rate_mbit=100, owner="r1", tenant="a"),
    ])


def test_plan_on_an_empty_host_makes_links_then_one_ovs_transaction_then_tc():
    acts = plan(_state(), _facts(), CFG)
    assert [type(a) for a in acts] == [CreateVeth, OvsdbTransaction, TcChange]
    assert acts[0] == CreateVeth("irisp-x", "iris-l-x", "iris1-x", 1500, False)
    assert str(acts[0]) == "create veth irisp-x <-> iris-l-x:iris1-x mtu 1500"
    assert [str(c) for c in _changes(acts)] == [
        "add-br irisb-a datapath_type=netdev external_ids={'iris-owner': 'r1', 'iris-op': 'bridge', 'iris-tenant': 'a'}",
        "add-port irisb-a irisp-x tag=101 trunks=[] vlan_mode=access protected=false external_ids={'iris-owner': "
        "'r1', 'iris-op': 'port', 'iris-tenant': 'a', 'iris-l1-netns': 'iris-l-x'}",
        "add-port irisb-a irist-a-gw tag=[] trunks=[] vlan_mode=[] protected=true external_ids={'iris-owner': "
        "'r1', 'iris-op': 'tunnel', 'iris-tenant': 'a'} type=gre options={'remote_ip': '198.18.1.1', 'key': '5'}"]


def test_plan_on_a_matching_host_is_empty_and_lab_infrastructure_is_left_alone():
    ids = {"iris-owner": "r1", "iris-tenant": "a"}
    facts = _facts(
        bridges={"irisb-a": {"name": "irisb-a", "datapath_type": "netdev", "external_ids": {**ids, "iris-op": "bridge"}},
                 "br-phy": {"name": "br-phy", "datapath_type": "netdev", "external_ids": {"iris-owner": "lab:x"}}},
        ports={"irist-a-gw": {"name": "irist-a-gw", "bridge": "irisb-a", "tag": None, "trunks": None,
                              "vlan_mode": None, "protected": True, "external_ids": {**ids, "iris-op": "tunnel"}},
               "irisp-x": {"name": "irisp-x", "bridge": "irisb-a", "tag": 101, "trunks": None, "vlan_mode": "access",
                           "protected": False, "external_ids": {**ids, "iris-op": "port", "iris-l1-netns": "iris-l-x"}},
               "fab": {"name": "fab", "bridge": "br-phy", "external_ids": {"iris-owner": "lab:x"}}},
        interfaces={"irist-a-gw": {"type": "gre", "options": {"remote_ip": "198.18.1.1", "key": "5"}},
                    "irisp-x": {"type": ""}, "fab": {}},
        links={"irisp-x": {"mtu": 1500}},
        l1={"irisp-x": {"exists": True, "mtu": 1500, "rate": 100.0, "addrs": []}},
    )
    assert plan(_state(), facts, CFG) == []
    # released: everything of the reservation goes, the lab's br-phy and its port stay
    acts = plan(DesiredState(), facts, CFG)
    assert _changes(acts) == [ovs.DelPort("irisp-x"), ovs.DelPort("irist-a-gw"), ovs.DelBridge("irisb-a")]
    assert DeleteLink("irisp-x") in acts and DeleteNetns("iris-l-x") in acts
    assert acts.index(DeleteLink("irisp-x")) > [type(a) for a in acts].index(OvsdbTransaction)


def test_plan_converges_a_changed_tunnel_key_and_a_changed_rate():
    ids = {"iris-owner": "r1", "iris-tenant": "a", "iris-op": "tunnel"}
    facts = _facts(
        bridges={"irisb-a": {"datapath_type": "netdev", "external_ids": {"iris-owner": "r1", "iris-tenant": "a",
                                                                        "iris-op": "bridge"}}},
        ports={"irist-a-gw": {"bridge": "irisb-a", "protected": True, "external_ids": ids}},
        interfaces={"irist-a-gw": {"type": "gre", "options": {"remote_ip": "198.18.1.1", "key": "6"}}},
        links={"irisp-x": {"mtu": 1500}}, l1={"irisp-x": {"exists": True, "mtu": 1500, "rate": 40.0}},
    )
    acts = plan(_state(), facts, CFG)
    [tunnel] = [c for c in _changes(acts) if isinstance(c, ovs.AddPort) and c.name == "irist-a-gw"]
    assert tunnel.interface["options"]["key"] == "5"
    tcs = [a for a in acts if isinstance(a, TcChange)]
    assert tcs and tcs[0].requests[1].kwargs["rate"] == 12_500_000


def test_tunnel_limit_sets_a_noop_qos_so_ovs_keeps_the_qdisc():
    d = DesiredState(ops=[TunnelLimitOp(uplink="up", remote_ip="198.18.0.11", rate_mbit=100)])
    facts = _facts(ports={"up": {"bridge": "br-phy", "qos": None, "external_ids": {}}}, links={"up": {}})
    acts = plan(d, facts, CFG)
    assert _changes(acts) == [ovs.NoopQos("up", {"iris-owner": ""})]
    s = " ".join(ovs.txn("unix:/x", *_changes(acts)[0].vsctl()).argv)
    assert "set Port up qos=@noop -- --id=@noop create QoS type=linux-noop" in s
    assert any(isinstance(a, TcChange) and a.ifname == "up" for a in acts)


def test_the_lab_expands_to_short_names_and_lab_only_addresses():
    p = expand(Topology.load(None, name="abcdefghijkl"))
    assert all(ns.startswith("iris-abcdefghijkl-") for ns in p.namespaces)
    ifnames = [v.a for v in p.veths] + [v.b for v in p.veths] + [b.name for b in p.linux_bridges]
    assert all(len(n) <= 15 for n in ifnames)
    lab_net = ipaddress.ip_network("198.18.0.0/15")
    forbidden = ipaddress.ip_network("192.0.2.0/24")
    for _, _, cidr in p.addrs:
        assert ipaddress.ip_interface(cidr).ip in lab_net
    for o in p.ovs:
        for b in o.bridges:
            if b.addr:
                assert ipaddress.ip_interface(b.addr).ip in lab_net
    for h in p.hosts:
        assert ipaddress.ip_interface(h.addr).ip not in forbidden
    assert len([o for o in p.ovs if o.node.startswith("l0-")]) == 4
    assert {a.node for a in p.agents} == {"hgw", "l0-1", "l0-2", "l0-3", "l0-4"}


def test_gateway_config_as_ops_and_as_commands():
    g = GatewaySpec(tenant="a", haas_gateway_ip="198.18.0.1", key=1001, trunk_port="eth1", wan_port="eth0",
                    rate_mbit=200)
    ops = iaas_gateway_ops(g).ops
    t = [o for o in ops if isinstance(o, TunnelOp)][0]
    assert not t.mesh and t.key == 1001 and t.remote_ip == "198.18.0.1"
    script = iaas_gateway_script(g)
    assert script.count(" add-br ") == 1 and script.count("add-port") == 2  # one transaction for the bridge
    assert "add-br br-int" in script and "add-port br-int eth1" in script and "type=gre" in script
    assert "ip link set dev eth0 mtu 1546" in script and "tx off" in script


def test_agent_api_over_the_memory_twin(tmp_path):
    host = MemoryHost()
    ag = Agent("l0-9", host, tmp_path)
    c = TestClient(create_app(ag, "tok"))
    assert c.get("/v1/health").json()["ok"]
    assert c.get("/v1/state").status_code == 401
    assert c.get("/v1/state", headers={"Authorization": "Bearer nope"}).json()["type"] == "Unauthorized"
    h = {"Authorization": "Bearer tok"}
    body = _state().model_dump(mode="json")
    r = c.put("/v1/desired", json=body, headers=h)
    assert r.status_code == 200 and r.json()["in_sync"] and len(r.json()["actions"]) == 4
    assert c.put("/v1/desired", json={"ops": [{"op": "nope"}]}, headers=h).status_code == 422
    host.lose("tunnel", "irist-a-gw")
    assert not c.get("/v1/state", headers=h).json()["in_sync"]
    # a restarted agent still knows the desired state
    ag2 = Agent("l0-9", host, tmp_path)
    c2 = TestClient(create_app(ag2, "tok"))
    r = c2.post("/v1/apply", headers=h).json()
    assert r["in_sync"] and r["actions"] == ["create ('tunnel', 'irist-a-gw')"]
    assert c2.get("/v1/desired", headers=h).json()["ops"][0]["name"] == "irisb-a"
