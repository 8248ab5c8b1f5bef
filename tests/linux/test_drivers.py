"""The real drivers against the real kernel and a private OVS, one fresh namespace per test."""

from __future__ import annotations

import subprocess

import pytest

from iris_haas.contract.ops import BridgeOp, DesiredState, PortOp, ShapeOp, TunnelOp
from iris_haas.hostd.actions import AddAddress, CreateVeth, OvsdbTransaction, TcChange
from iris_haas.hostd.reconciler import HostConfig
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, ovsdb, tc
from iris_haas.linux.proc import alive
from iris_haas.linux.runner import cmd

pytestmark = pytest.mark.linux


def test_veth_is_idempotent_and_repairs_a_lost_end(sandbox):
    a, b = sandbox.netns("a"), sandbox.netns("b")
    assert nl.ensure_veth("x", a, "y", b, mtu=1600)
    assert not nl.ensure_veth("x", a, "y", b, mtu=1600)
    assert nl.links(a)["x"]["mtu"] == 1600 and nl.links(b)["y"]["up"]
    nl.delete_netns(b)
    b = sandbox.netns("b")
    assert nl.ensure_veth("x", a, "y", b)
    assert "y" in nl.links(b)
    nl.delete_link(a, "x")
    nl.delete_link(a, "x")  # tolerant


def test_private_ovs_per_namespace_starts_and_stops_by_pid(sandbox):
    ns = sandbox.netns("o")
    inst = sandbox.ovs_in(ns)
    assert inst.running()
    pids = inst.pids()
    sandbox.runner.run(ovs.txn(inst.db, *ovs.add_bridge("br0", datapath_type="netdev")))
    assert "br0" in nl.links(ns)  # the bridge's tap lives in the namespace, not on the host
    assert "br0" not in nl.links(None)
    inst.stop(sandbox.runner)
    assert not inst.running()
    for pid in pids.values():
        assert not alive(pid)
    assert "br0" not in nl.links(ns)  # bridges were deleted before the daemon went


def _host_state(l1ns, rate=None, vlan=101):
    ops = [BridgeOp(name="irisb-t", owner="r", tenant="t"),
           TunnelOp(bridge="irisb-t", name="irist-t-1", remote_ip="198.18.9.2", key=9, owner="r", tenant="t"),
           PortOp(bridge="irisb-t", name="irisp-p", l1_netns=l1ns, l1_ifname="iris1-p", vlan=vlan,
                  address="10.5.0.1/24", owner="r", tenant="t")]
    if rate:
        ops.append(ShapeOp(port="irisp-p", rate_mbit=rate, owner="r", tenant="t"))
    return DesiredState(ops=ops)


def test_host_reconciles_to_the_desired_state_and_back(sandbox):
    ns = sandbox.netns("h")
    inst = sandbox.ovs_in(ns)
    l1 = f"iris-{sandbox.tag}-l1"
    sandbox.namespaces.append(l1)
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", underlay_mtu=1600, warmup=False))
    acts = host.apply(_host_state(l1, rate=100))
    assert [type(a) for a in acts] == [CreateVeth, AddAddress, OvsdbTransaction, TcChange]
    assert host.plan(_host_state(l1, rate=100)) == []  # idempotent
    st = ovsdb.snapshot(inst.db)
    assert st.ports["irisp-p"]["tag"] == 101 and st.ports["irisp-p"]["bridge"] == "irisb-t"
    assert st.interfaces["irist-t-1"]["options"] == {"remote_ip": "198.18.9.2", "key": "9"}
    assert st.ports["irist-t-1"]["protected"] is True
    assert tc.htb_rates(l1, "iris1-p") == {tc.PORT_CLASS: 100.0}
    assert nl.addresses(l1, "iris1-p") == ["10.5.0.1/24"]
    k = subprocess.run(cmd("ethtool", "-k", "iris1-p", netns=l1).full_argv(), capture_output=True, text=True).stdout
    assert "tx-checksumming: off" in k
    # change: new VLAN and rate
    host.apply(_host_state(l1, rate=30, vlan=300))
    assert ovsdb.snapshot(inst.db).ports["irisp-p"]["tag"] == 300
    assert tc.htb_rates(l1, "iris1-p") == {tc.PORT_CLASS: 30.0}
    # unshape
    host.apply(_host_state(l1))
    assert tc.htb_rates(l1, "iris1-p") == {}
    # release everything: only Iris's rows go
    sandbox.runner.run(ovs.txn(inst.db, *ovs.add_bridge("br-other", datapath_type="netdev")))
    host.apply(DesiredState())
    st = ovsdb.snapshot(inst.db)
    assert set(st.bridges) == {"br-other"}
    assert "irisp-p" not in nl.links(ns) and not nl.netns_exists(l1)


def test_ovs_keeps_an_htb_it_was_told_not_to_touch(sandbox):
    ns, peer = sandbox.netns("g"), sandbox.netns("p")
    inst = sandbox.ovs_in(ns)
    nl.ensure_veth("up", ns, "x", peer)
    sandbox.runner.run(ovs.txn(inst.db, *ovs.add_bridge("br-phy", datapath_type="netdev"),
                               *ovs.add_port("br-phy", "up")))
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", warmup=False))
    from iris_haas.contract.ops import TunnelLimitOp

    d = DesiredState(ops=[TunnelLimitOp(uplink="up", remote_ip="198.18.0.11", rate_mbit=70)])
    host.apply(d)
    # any later OVS reconfiguration would delete a foreign qdisc; linux-noop QoS prevents it
    sandbox.runner.run(ovs.txn(inst.db, *ovs.add_bridge("br-x", datapath_type="netdev")))
    assert tc.htb_rates(ns, "up") == {tc.tenant_class("198.18.0.11"): 70.0}
    assert host.plan(d) == []
    host.apply(DesiredState())
    assert tc.htb_rates(ns, "up") == {}


def test_two_namespaces_gre_trunk_carries_tagged_vlans(sandbox):
    """A minimal figure 5: two OVS namespaces, GRE between them, two VLANs across one tunnel."""
    r = sandbox.runner
    g1, g2 = sandbox.netns("g1"), sandbox.netns("g2")
    peer = "198.18.9.2"
    i1, i2 = sandbox.ovs_in(g1), sandbox.ovs_in(g2)
    nl.ensure_veth("up", g1, "up", g2, mtu=1600)
    hosts = {}
    for g, inst, ip in ((g1, i1, "198.18.9.1/24"), (g2, i2, peer + "/24")):
        r.run(ovs.txn(inst.db, *ovs.add_bridge("br-phy", datapath_type="netdev", mtu=1600),
                      *ovs.add_port("br-phy", "up")))
        nl.set_link(g, "br-phy", up=True, mtu=1600)
        nl.ensure_addr(g, "br-phy", ip)
    for side, (g, inst, remote) in enumerate(((g1, i1, peer), (g2, i2, "198.18.9.1"))):
        r.run(ovs.txn(inst.db, *ovs.add_bridge("br-int", datapath_type="netdev"),
                      *ovs.gre_port("br-int", "gre0", remote_ip=remote, key=42)))
        for vlan in (101, 102):
            h = sandbox.netns(f"h{side}{vlan}")
            nl.ensure_veth(f"v{vlan}", g, "eth0", h)
            r.run(ovs.txn(inst.db, *ovs.add_port("br-int", f"v{vlan}", tag=vlan, vlan_mode="access")))
            nl.ensure_addr(h, "eth0", f"10.{vlan - 100}.0.{side + 1}/24")
            r.run(nl.tx_offload_off_cmd(h, "eth0"))
            hosts[(side, vlan)] = h
    from iris_haas.lab import probe

    assert probe.reachable(hosts[(0, 101)], "10.1.0.2")
    assert probe.reachable(hosts[(0, 102)], "10.2.0.2")
    # the two VLANs share the tunnel but not the segment
    nl.ensure_addr(hosts[(1, 102)], "eth0", "10.1.0.9/24")
    assert probe.ping(hosts[(0, 101)], "10.1.0.9", count=2) == 0


@pytest.mark.parametrize("wan_in_ovs", [False, True])
def test_gateway_config_script_applied_by_hand_equals_the_agent_mode(sandbox, wan_in_ovs):
    """The commands `iris gateway-config` prints, run by a person, leave the IaaS gateway exactly
    as the agent mode would: the reconciler finds nothing to do afterwards."""
    from iris_haas.hostd.gateway import GatewaySpec, iaas_gateway_ops, iaas_gateway_script

    ns, peer = sandbox.netns("gw"), sandbox.netns("dc")
    inst = sandbox.ovs_in(ns)
    nl.ensure_veth("eth1", ns, "x", peer)
    nl.ensure_veth("eth0", ns, "y", peer)
    g = GatewaySpec(tenant="acme", haas_gateway_ip="198.18.0.1", key=77, trunk_port="eth1", wan_port="eth0",
                    rate_mbit=50, datapath_type="netdev")
    if wan_in_ovs:  # the underlay address on an OVS internal port, as the userspace datapath needs
        sandbox.runner.run(ovs.txn(inst.db, *ovs.add_bridge("br-phy", datapath_type="netdev"),
                                   *ovs.add_port("br-phy", "eth0")))
    script = iaas_gateway_script(g, db=inst.db)
    p = subprocess.run(cmd("sh", "-c", script, netns=ns).full_argv(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert nl.links(ns)["eth0"]["mtu"] == 1546
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", warmup=False))
    assert host.plan(iaas_gateway_ops(g)) == []
    assert tc.htb_rates(ns, "eth0") == {tc.tenant_class("198.18.0.1"): 50.0}
    # running it again changes nothing and does not fail
    p = subprocess.run(cmd("sh", "-c", script, netns=ns).full_argv(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert host.plan(iaas_gateway_ops(g)) == []
