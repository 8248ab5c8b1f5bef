"""The managers' desired state, derived from the active reservations (no root: the in-memory
twin records what each host is sent)."""

from __future__ import annotations


def compute(count=1, cpus=8, **kw):
    return {"kind": "compute", "count": count, "l1_kind": "lxc", "cpus": cpus, "memory_mb": 1024, "disk_gb": 10, **kw}


def provision(api, who, body):
    r = api.ok("POST", "/reservations", who, json={"duration_s": 3600, **body})
    api.ok("POST", f"/reservations/{r['id']}/commit", who)
    return api.ok("POST", f"/reservations/{r['id']}/provision", who)


def ops(api, host, kind=None):
    got = api.coordinator.dataplane.hosts.get(host, [])
    return [o for o in got if kind is None or o["op"] == kind]


def mesh(api, host):
    return sorted(o["remote_ip"] for o in ops(api, host, "tunnel") if o["mesh"])


def test_the_tenant_mesh_grows_and_shrinks_with_its_l0s(api):
    r1 = provision(api, "alice", {"items": [compute(addresses=["10.0.101.51/24"])]})
    node1 = r1["resources"][0]["node"]
    assert mesh(api, "haas-gw") == [f"198.18.10.{10 + int(node1[-1])}"]
    assert mesh(api, node1) == ["198.18.10.1"]  # the gateway's fabric address
    trunk = [o for o in ops(api, "haas-gw", "tunnel") if not o["mesh"]]
    assert [(o["remote_ip"], o["key"]) for o in trunk] == [("198.18.1.1", r1["segment"]["key"])]
    r2 = provision(api, "alice", {"items": [compute()]})
    node2 = r2["resources"][0]["node"]
    assert node2 != node1  # 8 cpus each: the second L1 goes to another L0
    assert len(mesh(api, "haas-gw")) == 2 and len(mesh(api, node1)) == 2 and len(mesh(api, node2)) == 2
    l1 = ops(api, node1, "l1")[0]
    assert (l1["address"], l1["vlan"], l1["trunk"], l1["kind"]) == ("10.0.101.51/24", 101, True, "lxc")
    api.ok("POST", f"/reservations/{r2['id']}/release", "alice")
    assert mesh(api, "haas-gw") == [f"198.18.10.{10 + int(node1[-1])}"] and node2 not in api.coordinator.dataplane.hosts
    api.ok("POST", f"/reservations/{r1['id']}/terminate", "alice")
    assert api.coordinator.dataplane.hosts == {}


def test_tenants_get_separate_bridges_and_keys(api):
    a = provision(api, "alice", {"items": [compute(cpus=1)]})
    b = provision(api, "bob", {"items": [compute(cpus=1)]})
    assert a["segment"] != b["segment"]
    bridges = {o["name"] for o in ops(api, "haas-gw", "bridge")}
    assert bridges == {a["segment"]["bridge"], b["segment"]["bridge"]}
    keys = {o["key"] for o in ops(api, "haas-gw", "tunnel")}
    assert keys == {a["segment"]["key"], b["segment"]["key"]}


def test_bandwidth_sums_per_tenant_on_the_gateway_and_limits_each_l1_port(api):
    provision(api, "alice", {"items": [compute(cpus=1), {"kind": "network", "bandwidth_mbps": 100}]})
    provision(api, "alice", {"items": [compute(cpus=1), {"kind": "network", "bandwidth_mbps": 50}]})
    limits = ops(api, "haas-gw", "tunnel_limit")
    assert [(o["remote_ip"], o["rate_mbit"], o["uplink"]) for o in limits] == [("198.18.1.1", 150, "up")]
    shapes = sorted(o["rate_mbit"] for h in api.coordinator.dataplane.hosts for o in ops(api, h, "shape"))
    assert shapes == [50, 100]


def test_model_b_pod_has_its_own_segment_trunked_to_the_iaas(api):
    a = provision(api, "alice", {"items": [compute(cpus=1)]})
    pod = provision(api, "alice", {"service_model": "b", "items": [compute(cpus=1)]})
    assert pod["service_model"] == "b" and pod["segment"]["key"] != a["segment"]["key"]
    trunks = {(o["bridge"], o["key"]) for o in ops(api, "haas-gw", "tunnel") if not o["mesh"]}
    assert trunks == {(a["segment"]["bridge"], a["segment"]["key"]), (pod["segment"]["bridge"], pod["segment"]["key"])}
    pod_l1 = pod["resources"][0]["l1"]
    l1s = {o["name"]: o for h in api.coordinator.dataplane.hosts for o in ops(api, h, "l1")}
    assert l1s[pod_l1]["bridge"] == pod["segment"]["bridge"]


def test_model_c_is_routed_not_trunked(api):
    c = provision(api, "alice", {"service_model": "c", "routing": {"subnet": "10.77.0.0/24",
                                                                    "iaas_address": "10.0.101.250/24"},
                                 "items": [compute(cpus=1, addresses=["10.77.0.51/24"])]})
    seg = c["segment"]["bridge"]
    assert not [o for o in ops(api, "haas-gw", "tunnel") if not o["mesh"] and o["bridge"] == seg]
    legs = [o for o in ops(api, "haas-gw", "port") if o["router"]]
    assert sorted(o["address"] for o in legs) == ["10.0.101.250/24", "10.77.0.1/24"]
    assert len({o["l1_netns"] for o in legs}) == 1  # one router namespace, two legs
    l1 = next(o for h in api.coordinator.dataplane.hosts for o in ops(api, h, "l1"))
    assert l1["gateway"] == "10.77.0.1" and l1["bridge"] == seg
    r = api.call("POST", "/reservations", "alice", json={"duration_s": 60, "service_model": "c",
                                                         "items": [compute(cpus=1)]})
    assert r.status_code == 422 and "routing" in r.text


def test_volume_export_on_the_pool_host(api):
    api.ok("DELETE", "/storage-pools/pool0")
    api.ok("POST", "/storage-pools", json={"name": "fast", "site": "haas", "capacity_gb": 10, "host": "l0-3",
                                           "path": "/var/lib/iris/pools/fast"})
    r = provision(api, "alice", {"items": [{"kind": "storage", "size_gb": 5, "export_address": "10.0.101.80/24"}]})
    assert next(x["pool"] for x in r["resources"] if "pool" in x) == "fast"
    vols = ops(api, "l0-3", "volume")
    assert [(v["size_gb"], v["address"], v["keep"], v["pool"]) for v in vols] == [
        (5, "10.0.101.80/24", False, "/var/lib/iris/pools/fast")]
    port = ops(api, "l0-3", "port")[0]
    assert (port["vlan"], port["trunk"], port["l1_netns"]) == (101, False, vols[0]["netns"])
    assert "l0-3" in [h for h in api.coordinator.dataplane.hosts]  # the pool host joins the tenant's mesh
    assert mesh(api, "l0-3") == ["198.18.10.1"]


def test_the_admin_reads_one_hosts_desired_state_as_its_agent_was_sent_it(api):
    r = provision(api, "alice", {"items": [compute(cpus=1)]})
    node = r["resources"][0]["node"]
    got = api.ok("GET", f"/hosts/{node}/desired-state")
    assert got["ops"] == api.coordinator.dataplane.hosts[node] and any(o["op"] == "l1" for o in got["ops"])
    assert api.ok("GET", "/hosts/l0-3/desired-state")["ops"] == []  # a host that holds nothing
    assert api.call("GET", "/hosts/nowhere/desired-state").status_code == 404
