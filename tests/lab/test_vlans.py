"""Paper figure 5 through the lab: one GRE tunnel between the gateways trunks every VLAN."""

from __future__ import annotations

import random

import pytest

from iris_haas.lab import guests, probe
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs, ovsdb
from iris_haas.linux.runner import SubprocessRunner

pytestmark = pytest.mark.lab


def _gateway_config(lab, node):
    """The tunnel-carrying configuration of a gateway: bridges, ports, VLAN columns, options."""
    st = ovsdb.snapshot(lab.ovs(node).db)
    return {n: (p.get("bridge"), p.get("tag"), p.get("trunks"), p.get("vlan_mode"),
                st.interfaces[n].get("options")) for n, p in st.ports.items()}


def test_vlan_101_and_102_reach_the_iaas_hosts_on_the_same_vlan(lab, tenants):
    tenants.set([L1("a", "l0-1", "m1", vlan=101, address="10.0.101.21/24"),
                 L1("a", "l0-2", "p1", vlan=102, address="10.0.102.21/24")])
    assert probe.reachable(lab.ns("m1"), "10.0.101.10")
    assert probe.reachable(lab.ns("p1"), "10.0.102.10")
    assert probe.ping(lab.ns("m1"), "10.0.101.10", count=5) == 5
    assert probe.ping(lab.ns("p1"), "10.0.102.10", count=5) == 5
    # and the other way round, from the IaaS side
    assert probe.ping(lab.ns("amgmt"), "10.0.101.21") == 3
    assert probe.ping(lab.ns("apub"), "10.0.102.21") == 3


def test_full_size_frames_and_tcp_cross_the_tunnel(lab, tenants):
    tenants.set([L1("a", "l0-1", "m1", vlan=101, address="10.0.101.21/24")])
    assert probe.reachable(lab.ns("m1"), "10.0.101.10")
    assert nl.links(lab.ns("m1"))["iris1-m1"]["mtu"] == 1500
    # 1472 bytes of ICMP payload = a 1500-byte IP packet, don't fragment
    import subprocess

    from iris_haas.linux.runner import cmd

    p = subprocess.run(cmd("ping", "-c2", "-W1", "-M", "do", "-s", "1472", "10.0.101.10",
                           netns=lab.ns("m1")).full_argv(), capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    with probe.Iperf3Server(lab.ns("amgmt")):
        assert probe.iperf3(lab.ns("m1"), "10.0.101.10", seconds=1) > 50


def test_different_vlans_are_isolated(lab, tenants):
    # an L1 NIC on VLAN 102 with an address in VLAN 101's subnet: only L2 can keep them apart
    tenants.set([L1("a", "l0-1", "x1", vlan=102, address="10.0.101.22/24"),
                 L1("a", "l0-1", "m1", vlan=101, address="10.0.101.21/24")])
    assert probe.reachable(lab.ns("m1"), "10.0.101.10")
    assert probe.ping(lab.ns("x1"), "10.0.101.10") == 0
    assert probe.ping(lab.ns("x1"), "10.0.101.21") == 0
    assert probe.arping(lab.ns("x1"), "iris1-x1", "10.0.101.10") == []
    assert probe.ping(lab.ns("amgmt"), "10.0.101.22") == 0


def test_a_random_vlan_works_without_reconfiguring_the_tunnel(lab, tenants):
    vlan = random.choice([v for v in range(2, 4095) if v not in (101, 102)])
    tenants.set([L1("a", "l0-1", "m1", vlan=101, address="10.0.101.21/24")])
    assert probe.reachable(lab.ns("m1"), "10.0.101.10")  # the tunnel is up
    before = {n: _gateway_config(lab, n) for n in ("hgw", "agw")}
    # the IaaS adds a guest VLAN on its own switch (as CloudStack would): an access port + a host
    guest = lab.ns("aguest")
    try:
        nl.ensure_netns(guest)
        SubprocessRunner().run(nl.netns_sysctl_cmds(guest))
        nl.ensure_veth("guest", lab.ns("ator"), "eth0", guest)
        SubprocessRunner().run(ovs.txn(lab.ovs("ator").db, *ovs.add_port("tor", "guest", tag=vlan, vlan_mode="access")))
        nl.ensure_addr(guest, "eth0", "10.9.0.10/24")
        SubprocessRunner().run(nl.tx_offload_off_cmd(guest, "eth0"))
        # ... and an L1 NIC on that VLAN in the HaaS DC
        tenants.set([*tenants.l1s, L1("a", "l0-1", "g1", vlan=vlan, address="10.9.0.21/24")])
        assert probe.reachable(lab.ns("g1"), "10.9.0.10"), f"VLAN {vlan}"
        assert probe.ping(lab.ns("g1"), "10.9.0.10", count=5) == 5
        assert {n: _gateway_config(lab, n) for n in ("hgw", "agw")} == before
    finally:
        SubprocessRunner().run(ovs.txn(lab.ovs("ator").db, *ovs.del_port("guest")))
        nl.delete_netns(guest)


def test_user_vms_inside_an_l1_reach_the_iaas_on_guest_vlans_through_a_trunk_nic(lab, tenants):
    """As an IaaS KVM host would: the L1's NIC is a trunk (management VLAN native), and the
    IaaS's own software inside the L1 tags guest VLANs at a bridge of its own."""
    vlan = random.choice([v for v in range(2, 4095) if v not in (101, 102)])
    tenants.set([L1("a", "l0-3", "k1", vlan=101, trunk=True, address="10.0.101.31/24")])
    l1 = lab.ns("k1")
    try:
        # the L1's management address is on its NIC, untagged: the native VLAN 101
        assert probe.reachable(l1, "10.0.101.10")
        guest = guests.add_host(lab, "a", "guest2", vlan, "10.8.0.10/24")
        vm101 = guests.attach_user_vm(lab, "k1", "iris1-k1", "k1vm1", 101, "10.0.101.41/24")
        vmg = guests.attach_user_vm(lab, "k1", "iris1-k1", "k1vm2", vlan, "10.8.0.41/24")
        assert probe.reachable(vm101, "10.0.101.10")
        assert probe.reachable(vmg, "10.8.0.10"), f"guest VLAN {vlan}"
        assert probe.ping(vmg, "10.0.101.10", count=2) == 0  # different VLAN, no router
        with probe.Iperf3Server(guest):
            assert probe.iperf3(vmg, "10.8.0.10", seconds=1) > 20
    finally:
        guests.detach_all(lab, "k1", ["k1vm1", "k1vm2"])
        guests.remove_host(lab, "a", "guest2")
