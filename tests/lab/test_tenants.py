"""Per-tenant overlays: two tenants with the same VLAN IDs and subnets never see each other,
and nothing on a tenant overlay reaches the HaaS control network or an agent."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from iris_haas.lab import probe
from iris_haas.lab import tenants as tenants_plan
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovsdb

pytestmark = pytest.mark.lab


def _rx(lab, node, dev):
    return nl.links(lab.ns(node))[dev]["rx_packets"]


def _same_everything(lab):
    # same VLANs, same subnets, same addresses; a on two L0s, b on two L0s, sharing l0-1
    return [
        L1("a", "l0-1", "a1", vlan=101, address="10.0.101.21/24"),
        L1("a", "l0-2", "a2", vlan=101, address="10.0.101.22/24"),
        L1("b", "l0-1", "b1", vlan=101, address="10.0.101.21/24"),
        L1("b", "l0-3", "b2", vlan=101, address="10.0.101.22/24"),
    ]


def test_two_tenants_same_vlans_and_subnets_zero_packets_cross(lab, tenants):
    tenants.set(_same_everything(lab))
    for l1 in ("a1", "a2", "b1", "b2"):
        assert probe.reachable(lab.ns(l1), "10.0.101.10"), l1
    mac = {t: nl.links(lab.ns(f"{t}mgmt"))["eth0"]["address"] for t in "ab"}
    l1mac = {p: nl.links(lab.ns(p))[f"iris1-{p}"]["address"] for p in ("a1", "a2", "b1", "b2")}
    for me, other in (("a", "b"), ("b", "a")):
        watch = {f"{other}mgmt": "eth0", f"{other}1": f"iris1-{other}1", f"{other}2": f"iris1-{other}2"}
        mine = {mac[me], l1mac[f"{me}1"], l1mac[f"{me}2"]}
        for n, d in watch.items():  # the other tenant falls silent: no ARP refresh of its own
            nl.flush_neighbours(lab.ns(n), d)
        before = {n: _rx(lab, n, d) for n, d in watch.items()}
        sniffers = [probe.Sniffer(lab.ns(n), d) for n, d in watch.items()]
        with contextlib.ExitStack() as stack:
            for s in sniffers:
                stack.enter_context(s)
            # ping, both directions, within the tenant and across the DCs
            assert probe.ping(lab.ns(f"{me}1"), "10.0.101.10", count=5) == 5
            assert probe.ping(lab.ns(f"{me}1"), "10.0.101.22", count=3) == 3
            assert probe.ping(lab.ns(f"{me}mgmt"), "10.0.101.21", count=3) == 3
            # arping (broadcast): only my own tenant's hosts answer
            assert probe.arping(lab.ns(f"{me}1"), f"iris1-{me}1", "10.0.101.10") == [mac[me]]
            assert probe.arping(lab.ns(f"{me}1"), f"iris1-{me}1", "10.0.101.22") == [l1mac[f"{me}2"]]
            assert probe.arping(lab.ns(f"{me}mgmt"), "eth0", "10.0.101.21") == [l1mac[f"{me}1"]]
        crossed = [f for s in sniffers for f in s.frames if f[0] in mine]
        assert crossed == [], f"frames of tenant {me} seen by tenant {other}"
        after = {n: _rx(lab, n, d) for n, d in watch.items()}
        assert after == before, f"tenant {other}'s ports received packets while tenant {me} talked"


def test_tenant_bridges_share_nothing(lab, tenants):
    tenants.set(_same_everything(lab))
    st = ovsdb.snapshot(lab.ovs("l0-1").db)
    by_bridge = {}
    for n, p in st.ports.items():
        by_bridge.setdefault(p.get("bridge"), set()).add(n)
    a, b = by_bridge[tenants_plan.segment(lab.topo, "a").bridge], by_bridge[tenants_plan.segment(lab.topo, "b").bridge]
    assert not a & b
    keys = {p: st.interfaces[p]["options"].get("key") for p in a | b if st.interfaces[p].get("type") == "gre"}
    assert {keys[p] for p in a if p in keys} == {"1001"}
    assert {keys[p] for p in b if p in keys} == {"1002"}


def test_mesh_grows_and_shrinks_with_the_tenants_nodes(lab, tenants):
    def tunnels(node):
        st = ovsdb.snapshot(lab.ovs(node).db)
        return sorted(n for n, i in st.interfaces.items() if i.get("type") == "gre"
                      and st.ports[n].get("bridge") == tenants_plan.segment(lab.topo, "a").bridge)

    tenants.set([L1("a", "l0-1", "a1", vlan=101, address="10.0.101.21/24")])
    assert tunnels("l0-1") == ["iristt1g1"]
    assert tunnels("hgw") == ["iristt1n1", "iristt1x1"]
    tenants.set([*tenants.l1s, L1("a", "l0-3", "a3", vlan=101, address="10.0.101.23/24")])
    assert tunnels("l0-1") == ["iristt1g1", "iristt1n3"]
    assert tunnels("l0-3") == ["iristt1g1", "iristt1n1"]
    assert tunnels("hgw") == ["iristt1n1", "iristt1n3", "iristt1x1"]
    # L1 to L1 across L0s goes straight over the mesh
    assert probe.reachable(lab.ns("a1"), "10.0.101.23")
    tenants.set(tenants.l1s[1:])
    assert tunnels("hgw") == ["iristt1n3", "iristt1x1"]
    assert tunnels("l0-3") == ["iristt1g1"]
    assert tenants_plan.segment(lab.topo, "a").bridge not in ovsdb.snapshot(lab.ovs("l0-1").db).bridges
    assert not nl.netns_exists(lab.ns("a1"))


def test_nothing_on_a_tenant_overlay_reaches_the_control_network(lab, tenants):
    # the L1 even gets addresses in the control and fabric subnets: only the absence of any L2
    # path can keep it out. A trunk NIC (all VLANs) tries the native VLAN.
    tenants.set([L1("a", "l0-1", "a1", vlan=101, trunk=True, address="198.19.0.200/24"),
                 L1("a", "l0-2", "a2", vlan=101, address="10.0.101.21/24")])
    nl.ensure_addr(lab.ns("a1"), "iris1-a1", "198.18.1.200/24")
    nl.ensure_addr(lab.ns("a1"), "iris1-a1", "198.18.0.200/24")
    assert probe.reachable(lab.ns("a2"), "10.0.101.10")  # the overlay itself works
    ctl_ips = [lab.topo.ctl_ip(n) for n in ("ctl", "hgw", *lab.topo.l0_nodes())]
    underlay = [lab.topo.fab_ip(n) for n in ("hgw", *lab.topo.l0_nodes())] + [lab.topo.haas.gateway_ip]
    ns = lab.ns("a1")
    with ThreadPoolExecutor(8) as ex:
        pings = dict(zip(ctl_ips + underlay, ex.map(lambda ip: probe.ping(ns, ip, count=2, wait=1), ctl_ips + underlay)))
        arps = dict(zip(ctl_ips + underlay, ex.map(lambda ip: probe.arping(ns, "iris1-a1", ip, count=2, deadline=2),
                                                   ctl_ips + underlay)))
        conns = dict(zip([a.node for a in lab.plan.agents],
                         ex.map(lambda a: probe.tcp_connect(ns, a.ip, a.port, timeout=1.0), lab.plan.agents)))
    assert not any(pings.values()), pings
    assert not any(arps.values()), arps
    assert not any(conns.values()), conns
    # the L1's namespace holds nothing but its tenant NIC
    assert sorted(nl.links(lab.ns("a1"))) == ["iris1-a1", "lo"]
    # and the agents themselves are up: it is the path that is missing, not the service
    with lab.client("l0-1") as c:
        assert c.health()["ok"]
