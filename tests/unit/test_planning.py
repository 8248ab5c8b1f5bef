"""The planning layer, from plain inputs: the decisions the coordinator's managers and the lab share."""

from __future__ import annotations

import pytest

from iris_haas import planning
from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import BridgeOp, CircuitOp, L1Op, PortOp, ShapeOp, TunnelLimitOp, TunnelOp, VolumeOp
from iris_haas.contract.types import L1Kind

pytestmark = pytest.mark.unit

GW = planning.HaasGateway(id=1, host="hgw", uplink="up", fabric="198.18.1.1")
L0S = {i: planning.L0(id=i, host=f"l0-{i}", underlay=f"198.18.1.{10 + i}") for i in (1, 2, 3, 4)}


def tenant(name: str, key: int, site_ip: str, rate: float = 0, site: int = 0) -> planning.Tenant:
    return planning.Tenant(name, planning.Segment.of(name, key), gateways=[GW],
                           sites=[planning.IaasSite(id=site or key, gateway=site_ip, rate_mbit=rate)])


def l1(t: planning.Tenant, name: str, node: int, seg: planning.Segment | None = None, **kw) -> planning.L1:
    return planning.L1(name=name, l0=L0S[node], segment=seg or t.segment, owner="r1", tenant=t.name,
                       netns=f"iris-{name}", **kw)


def tunnels(state, host, tenant):
    return [o for o in state[host] if isinstance(o, TunnelOp) and o.tenant == tenant]


def test_a_tenant_is_a_full_mesh_with_split_horizon_and_one_trunk():
    a, b = tenant("a", 1001, "198.18.0.11", rate=100), tenant("b", 1002, "198.18.0.12")
    a.l1s = [l1(a, f"a{i}", i) for i in (1, 2, 3)]
    b.l1s = [l1(b, "b4", 4)]
    st = planning.desired([a, b], ["hgw", *(n.host for n in L0S.values())])
    for i in (1, 2, 3):
        ts = tunnels(st, f"l0-{i}", "a")
        assert len(ts) == 3 and all(o.mesh and o.key == 1001 for o in ts)  # the gateway + the 2 other L0s
        assert {o.remote_ip for o in ts} == {"198.18.1.1"} | {f"198.18.1.{10 + j}" for j in (1, 2, 3) if j != i}
        assert tunnels(st, f"l0-{i}", "b") == []
    gw = tunnels(st, "hgw", "a")
    assert len(gw) == 4 and [o.mesh for o in gw].count(False) == 1  # 3 mesh + the inter-DC trunk
    assert [o.remote_ip for o in gw if not o.mesh] == ["198.18.0.11"]
    assert {o.key for o in tunnels(st, "hgw", "b")} == {1002}
    assert st["l0-4"] and all(o.tenant == "b" for o in st["l0-4"])
    assert [(o.remote_ip, o.rate_mbit) for o in st["hgw"] if isinstance(o, TunnelLimitOp)] == [("198.18.0.11", 100)]
    assert len({o.name for h in st for o in st[h] if isinstance(o, TunnelOp)}) > 1  # names say the peer


def test_an_l1_is_wired_on_its_segment_with_its_limit():
    a = tenant("a", 1001, "198.18.0.11")
    a.l1s = [l1(a, "web1", 2, kind=L1Kind.LXC, vlan=101, address="10.0.101.5/24", rate_mbit=40, cpus=2)]
    st = planning.desired([a])
    [op] = [o for o in st["l0-2"] if isinstance(o, L1Op)]
    assert (op.kind, op.bridge, op.vlan, op.trunk, op.address, op.cpus) == ("lxc", a.segment.bridge, 101, True,
                                                                           "10.0.101.5/24", 2)
    assert [(o.port, o.rate_mbit) for o in st["l0-2"] if isinstance(o, ShapeOp)] == [(op.port, 40)]
    assert [o.name for o in st["l0-2"] if isinstance(o, BridgeOp)] == [a.segment.bridge]


def test_a_pod_is_a_segment_of_its_own_and_a_routed_segment_has_a_router_instead_of_a_trunk():
    a = tenant("a", 1001, "198.18.0.11")
    pod = planning.Segment.of("a-pod1", 77)
    routed = planning.Segment.of("a-rt1", 78, routed=True)
    a.l1s = [l1(a, "p1", 1, seg=pod), l1(a, "c1", 2, seg=routed)]
    a.routers = [planning.Router(netns="irisr1", segment=routed, address="10.77.0.1/24",
                                 iaas_address="10.0.101.77/24", owner="r2", legs=("r1s", "r1i"), vlan=101)]
    st = planning.desired([a])
    trunks = {(o.bridge, o.key) for o in st["hgw"] if isinstance(o, TunnelOp) and not o.mesh}
    # the pod and the tenant's own L2 (which the router's IaaS leg needs) are trunked; the routed segment is not
    assert trunks == {(pod.bridge, 77), (a.segment.bridge, 1001)}
    legs = {o.bridge: o.address for o in st["hgw"] if isinstance(o, PortOp) and o.router}
    assert legs == {routed.bridge: "10.77.0.1/24", a.segment.bridge: "10.0.101.77/24"}
    assert not [o for o in st["l0-1"] if isinstance(o, TunnelOp) and o.bridge == routed.bridge]


def test_an_exported_volume_puts_its_host_in_the_mesh_and_an_unexported_one_does_not():
    a = tenant("a", 1001, "198.18.0.11")
    a.volumes = [planning.Volume(name="iris-v-0", host="l0-3", pool="/srv/pool", segment=a.segment, owner="r1",
                                 tenant="a", nic="irisv0", l0=L0S[3], size_gb=1, netns="irisv0",
                                 address="10.0.101.50/24", vlan=101),
                 planning.Volume(name="iris-v-1", host="store", pool="/srv/pool", segment=a.segment, owner="r1",
                                 tenant="a", nic="irisv1", size_gb=1)]
    st = planning.desired([a])
    assert {o.remote_ip for o in tunnels(st, "hgw", "a") if o.mesh} == {"198.18.1.13"}
    [port] = [o for o in st["l0-3"] if isinstance(o, PortOp)]
    assert (port.l1_netns, port.vlan, port.trunk, port.address) == ("irisv0", 101, False, "10.0.101.50/24")
    assert [(o.name, o.netns) for o in st["store"] if isinstance(o, VolumeOp)] == [("iris-v-1", None)]
    assert [o for o in st["store"] if not isinstance(o, VolumeOp)] == []


def test_a_tenant_with_nothing_has_only_its_l2_extension_and_listed_hosts_are_emptied():
    st = planning.desired([tenant("a", 1001, "198.18.0.11")], ["hgw", "l0-1"])
    assert st["l0-1"] == []
    assert sorted(type(o).__name__ for o in st["hgw"]) == ["BridgeOp", "TunnelOp"]


def test_two_decisions_for_one_object_are_refused_not_merged():
    a, b = tenant("a", 1001, "198.18.0.11", site=1), tenant("a", 1002, "198.18.0.11", site=1)  # two keys
    with pytest.raises(DataPlaneError, match="two different ops"):
        planning.desired([a, b])


def test_a_site_of_an_nsi_link_is_trunked_only_inside_its_circuit_while_it_is_up():
    def site(vlan):
        return planning.IaasSite(id=7, gateway="198.18.0.11", rate_mbit=100, nsi=True, circuit_vlan=vlan)

    t = planning.Tenant("a", planning.Segment.of("a", 1001), gateways=[GW], sites=[site(None)])
    t.l1s = [l1(t, "a1", 1)]
    st = planning.desired([t])
    assert [o for o in st["hgw"] if isinstance(o, TunnelOp) and not o.mesh] == []  # no best-effort path
    assert not any(isinstance(o, CircuitOp | TunnelLimitOp) for o in st["hgw"])
    t.sites = [site(1780)]
    st = planning.desired([t])
    haas, iaas = planning.circuit_ends(1780)
    assert (haas, iaas) == ("198.18.91.209/30", "198.18.91.210/30")
    [c] = [o for o in st["hgw"] if isinstance(o, CircuitOp)]
    assert (c.name, c.uplink, c.vlan, c.address) == ("irisc1780", "up", 1780, haas)
    [trunk] = [o for o in st["hgw"] if isinstance(o, TunnelOp) and not o.mesh]
    assert (trunk.remote_ip, trunk.local_ip, trunk.key) == ("198.18.91.210", "198.18.91.209", 1001)
    assert not any(isinstance(o, TunnelLimitOp) for o in st["hgw"])  # the provider holds the rate
    assert not any(isinstance(o, CircuitOp) for h in st if h != "hgw" for o in st[h])
