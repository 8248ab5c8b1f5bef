"""The trunk inside an NSI circuit, on two real OVS gateways: the HaaS side's ops as the planner
makes them, the IaaS side's as ``iris gateway-config --circuit-vlan`` gives them. The tenant's
frames cross the WAN only tagged with the circuit's VLAN, and the circuit's end goes with its op."""

from __future__ import annotations

import subprocess

import pytest

from iris_haas import planning
from iris_haas.contract import names
from iris_haas.contract.ops import DesiredState, PortOp
from iris_haas.hostd.gateway import GatewaySpec, iaas_gateway_ops, iaas_gateway_script
from iris_haas.hostd.reconciler import HostConfig, circuit_mac
from iris_haas.lab import probe
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, ovsdb
from iris_haas.linux.runner import cmd

VLAN, KEY = 1785, 4242
GW = planning.HaasGateway(id=1, host="hgw", uplink="up", fabric="198.18.1.1")


def _haas_ops(h1: str, circuit: bool) -> DesiredState:
    t = planning.Tenant("a", planning.Segment.of("a", KEY), gateways=[GW],
                        sites=[planning.IaasSite(id=1, gateway="198.18.9.2", nsi=True,
                                                 circuit_vlan=VLAN if circuit else None)])
    ops = [op for host, op in planning.network.plan(t) if host == "hgw"]
    ops.append(PortOp(bridge=t.segment.bridge, name="irisp-h1", l1_netns=h1, vlan=101, address="10.1.0.1/24",
                      owner="r", tenant="a"))
    return DesiredState(ops=ops)


def _gateway(sandbox, node: str, ip: str):
    ns = sandbox.netns(node)
    inst = sandbox.ovs_in(ns)
    sandbox.runner.run(ovs.txn(inst.db, *ovs.add_bridge("br-phy", datapath_type="netdev", mtu=1600),
                               *ovs.add_port("br-phy", "up")))
    nl.set_link(ns, "br-phy", up=True, mtu=1600)
    nl.ensure_addr(ns, "br-phy", ip)
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", underlay_mtu=1600, warmup=True))
    return ns, inst, host


def test_the_trunk_crosses_the_wan_only_inside_the_circuit(sandbox):
    g1, g2 = sandbox.netns("g1"), sandbox.netns("g2")
    nl.ensure_veth("up", g1, "up", g2, mtu=1600)
    g1, i1, haas = _gateway(sandbox, "g1", "198.18.9.1/24")
    g2, i2, iaas = _gateway(sandbox, "g2", "198.18.9.2/24")
    h1, h2, dc = sandbox.netns("h1"), sandbox.netns("h2"), sandbox.netns("dc")
    nl.ensure_veth("tor", g2, "x", dc)
    spec = GatewaySpec(tenant="a", haas_gateway_ip="198.18.9.1", key=KEY, trunk_port="tor", wan_port="up",
                       datapath_type="netdev", circuit_vlan=VLAN)
    iaas_side = DesiredState(ops=[*iaas_gateway_ops(spec).ops, PortOp(
        bridge="br-int", name="irisp-h2", l1_netns=h2, vlan=101, address="10.1.0.2/24", owner="r", tenant="a")])

    iaas.apply(iaas_side)
    haas.apply(_haas_ops(h1, circuit=False))  # no circuit up yet: no trunk at all
    assert not any(n.startswith("irisc") for n in ovsdb.snapshot(i1.db).bridges)
    assert probe.ping(h1, "10.1.0.2", count=2, wait=0.5) == 0

    haas.apply(_haas_ops(h1, circuit=True))
    assert haas.plan(_haas_ops(h1, circuit=True)) == [] and iaas.plan(iaas_side) == []  # idempotent
    haas_end, _ = planning.circuit_ends(VLAN)
    st = ovsdb.snapshot(i1.db)
    up, down = names.circuit_patch(VLAN)
    assert st.ports[up]["bridge"] == "br-phy" and st.ports[up]["tag"] == VLAN and st.ports[down]["bridge"] == "irisc1785"
    assert nl.addresses(g1, "irisc1785") == [haas_end]
    # made again after the circuit went down and up, the end keeps its MAC: the far end's tunnel keeps the one it learnt
    assert nl.links(g1)["irisc1785"]["address"] == circuit_mac(haas_end) == "02:00:c6:12:5b:e5"  # 198.18.91.229
    with probe.Sniffer(g2, "up") as sniff:
        assert probe.reachable(h1, "10.1.0.2")
        assert probe.ping(h1, "10.1.0.2", count=5, interval=0.1) == 5
    assert len(sniff.vlans) >= 5 and set(sniff.vlans) == {VLAN}, set(sniff.vlans)  # nothing outside the circuit
    report = [x for x in haas.report() if x["op"] == "circuit"]
    assert report == [{"op": "circuit", "name": "irisc1785", "vlan": VLAN, "uplink_bridge": "br-phy",
                       "addresses": [haas_end], "up": True, "owner": "tenant:a", "tenant": "a"}]

    haas.apply(_haas_ops(h1, circuit=False))  # the provider took the circuit down
    st = ovsdb.snapshot(i1.db)
    assert "irisc1785" not in st.bridges and up not in st.ports and "br-phy" in st.bridges
    assert "irisc1785" not in nl.links(g1)
    with probe.Sniffer(g2, "up") as sniff:
        assert probe.ping(h1, "10.1.0.2", count=3, interval=0.1, wait=0.5) == 0
    assert VLAN not in sniff.vlans


def test_an_uplink_no_bridge_holds_is_said_and_the_rest_applies(sandbox):
    ns = sandbox.netns("g")
    inst = sandbox.ovs_in(ns)
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", warmup=False))
    h1 = sandbox.netns("h1")
    with pytest.raises(Exception, match="uplink up is not a port of an OVS bridge"):
        host.apply(_haas_ops(h1, circuit=True))
    st = ovsdb.snapshot(inst.db)
    assert planning.Segment.of("a", KEY).bridge in st.bridges  # the tenant's bridge is there
    assert "irisp-h1" in st.ports


def test_gateway_config_script_for_a_circuit_equals_the_agent_mode(sandbox):
    """`iris gateway-config --circuit-vlan` run by a person leaves the IaaS gateway as the agent
    mode would."""
    ns, peer = sandbox.netns("gw"), sandbox.netns("dc")
    nl.ensure_veth("up", ns, "y", peer, mtu=1600)
    nl.ensure_veth("tor", ns, "x", peer)
    ns, inst, host = _gateway(sandbox, "gw", "198.18.9.2/24")
    spec = GatewaySpec(tenant="a", haas_gateway_ip="198.18.9.1", key=KEY, trunk_port="tor", wan_port="up",
                       datapath_type="netdev", circuit_vlan=VLAN)
    script = iaas_gateway_script(spec, db=inst.db)
    for _ in range(2):  # twice: running it again changes nothing and does not fail
        p = subprocess.run(cmd("sh", "-c", script, netns=ns).full_argv(), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert host.plan(iaas_gateway_ops(spec)) == []
