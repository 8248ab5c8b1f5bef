"""The control plane driving the real data plane: reserve -> commit -> provision through the
coordinator's API, desired state derived by the NRM/CRM and pushed to the lab's agents, then real
packets from the IaaS side. netns L1s here (the L1 kind every L0 can run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.control.sync import AgentDataPlane
from iris_haas.hostd import storage
from iris_haas.lab import guests, probe
from iris_haas.lab.register import register
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs
from iris_haas.linux.runner import SubprocessRunner, cmd

pytestmark = pytest.mark.lab


@pytest.fixture
def coord(lab, tmp_path):
    with LocalCoordinator(tmp_path, dataplane=AgentDataPlane(lab.coordinator_tls(), netns=lab.ns("ctl"))) as c:
        admin = c.client(c.admin_token)
        tokens = register(lab, admin)
        tenants = {t: c.client(tok) for t, tok in tokens.items()}
        try:
            yield c, admin, tenants
        finally:
            terminate_all(c, admin)


def terminate_all(c, admin) -> None:
    """Terminate what a test left, and check that no host keeps any desired state."""
    for r in admin.get("/reservations"):
        if r["lifecycle_state"] != "Terminated":
            admin.post(f"/reservations/{r['id']}/terminate")
    for h, (_, state) in c.engine.desired_states().items():
        assert state.ops == [], f"{h} still has desired state"


def l1_request(addresses, mbps=None, kind="netns"):
    items = [{"kind": "compute", "count": len(addresses), "l1_kind": kind, "cpus": 1, "memory_mb": 256,
              "disk_gb": 1, "addresses": addresses}]
    if mbps:
        items.append({"kind": "network", "bandwidth_mbps": mbps})
    return {"duration_s": 600, "items": items}


def provisioned(client, body):
    r = client.post("/reservations", body)
    client.post(f"/reservations/{r['id']}/commit")
    r = client.post(f"/reservations/{r['id']}/provision")
    assert r["provision_state"] == "Provisioned" and r["data_plane_active"], r
    return r


@pytest.mark.parametrize("kind", ["netns", "lxc"])
def test_reserve_commit_provision_reaches_the_iaas_and_release_removes(lab, coord, kind):
    _, admin, tenants = coord
    a = tenants["a"]
    r = provisioned(a, l1_request(["10.0.101.51/24", "10.0.101.52/24"], mbps=100, kind=kind))
    l1s = [x["l1"] for x in r["resources"] if "l1" in x]
    assert len(l1s) == 2
    # the IaaS management host reaches both L1s on its own management VLAN, across the GRE trunk
    for ip in ("10.0.101.51", "10.0.101.52"):
        assert probe.reachable(lab.ns("amgmt"), ip), ip
    # and they reach each other through the tenant's overlay
    assert probe.ping(l1s[0], "10.0.101.52", count=3) == 3
    # nothing on the control network, no agent, answers from inside an L1
    for agent in lab.plan.agents:
        assert probe.ping(l1s[0], agent.ip, count=2, wait=0.5) == 0
        assert not probe.tcp_connect(l1s[0], agent.ip, agent.port, timeout=1.0)
    # release: the data plane goes, the L1 namespaces with it; the reservation stays
    r = a.post(f"/reservations/{r['id']}/release")
    assert r["provision_state"] == "Released" and not r["data_plane_active"]
    assert probe.ping(lab.ns("amgmt"), "10.0.101.51", count=2, wait=0.5) == 0
    assert not any(nl.netns_exists(n) for n in l1s)
    changes = [(e["detail"]["active"], e["detail"]["versionConsistent"])
               for e in a.get(f"/reservations/{r['id']}/events") if e["type"] == "dataPlaneStateChange"]
    # each change decided, then confirmed once the real agents held it
    assert changes == [(True, False), (True, True), (False, False), (False, True)]


def test_two_tenants_same_addresses_are_isolated(lab, coord):
    _, admin, tenants = coord
    ra = provisioned(tenants["a"], l1_request(["10.0.101.61/24"]))
    rb = provisioned(tenants["b"], l1_request(["10.0.101.61/24"]))
    l1a = next(x["l1"] for x in ra["resources"] if "l1" in x)
    l1b = next(x["l1"] for x in rb["resources"] if "l1" in x)
    assert probe.reachable(lab.ns("amgmt"), "10.0.101.61")
    assert probe.reachable(lab.ns("bmgmt"), "10.0.101.61")
    mac = {n: nl.links(n)[next(i for i in nl.links(n) if i.startswith("iris1"))]["address"] for n in (l1a, l1b)}
    a_mgmt_ifs = nl.links(lab.ns("amgmt"))
    assert probe.arping(lab.ns("amgmt"), "eth0", "10.0.101.61") == [mac[l1a]]
    assert probe.arping(lab.ns("bmgmt"), "eth0", "10.0.101.61") == [mac[l1b]]
    assert a_mgmt_ifs  # the IaaS side was not reconfigured: same links before and after
    # b releases: a's L1 stays reachable from a, and from b's side nothing answers any more
    tenants["b"].post(f"/reservations/{rb['id']}/release")
    assert probe.ping(lab.ns("bmgmt"), "10.0.101.61", count=2, wait=0.5) == 0
    assert probe.ping(lab.ns("amgmt"), "10.0.101.61", count=3) == 3
    assert set(nl.links(lab.ns("amgmt"))) == set(a_mgmt_ifs)


def test_a_tenant_cannot_touch_anothers_reservation(lab, coord):
    _, _, tenants = coord
    r = provisioned(tenants["a"], l1_request(["10.0.101.71/24"]))
    with pytest.raises(ApiError) as e:
        tenants["b"].post(f"/reservations/{r['id']}/release")
    assert e.value.status == 404
    assert probe.reachable(lab.ns("amgmt"), "10.0.101.71")


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("ganesha.nfsd", "rpcbind", "nfs-cp", "mkfs.ext4")),
                    reason="needs nfs-ganesha, rpcbind and libnfs-utils (make test installs them)")
def test_storage_volume_through_the_coordinator(lab, coord, tmp_path):
    """A storage item: the SRM places the volume in a pool, the pool's agent makes and exports it
    on the tenant's overlay; the IaaS side writes and reads back the same bytes; terminate wipes."""
    _, admin, tenants = coord
    pool = Path(tempfile.mkdtemp(prefix=f"iris-{lab.name}-e2e-", dir="/var/tmp"))
    try:
        admin.post("/storage-pools", {"name": "pool0", "site": "haas", "capacity_gb": 4, "host": "l0-2",
                                      "path": str(pool)})
        with pytest.raises(ApiError) as e:  # admission: more than the pool holds over the interval
            tenants["a"].post("/reservations", {"duration_s": 600, "items": [{"kind": "storage", "size_gb": 5}]})
        assert e.value.type == "ReserveFailed"
        r = provisioned(tenants["a"], {"duration_s": 600, "items": [
            {"kind": "storage", "size_gb": 1, "export_address": "10.0.101.80/24"}]})
        vol = next(x["volume"] for x in r["resources"] if "volume" in x)
        data = os.urandom(256 * 1024)
        (tmp_path / "in").write_bytes(data)
        url = storage.nfs_url("10.0.101.80", f"/{vol}", "blob")
        assert probe.reachable(lab.ns("amgmt"), "10.0.101.80", timeout=15)
        run = lambda c: subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=120)  # noqa: E731
        assert run(storage.nfs_cp_cmd(lab.ns("amgmt"), str(tmp_path / "in"), url)).returncode == 0
        assert run(storage.nfs_cp_cmd(lab.ns("amgmt"), url, str(tmp_path / "out"))).returncode == 0
        assert (tmp_path / "out").read_bytes() == data
        # the pool's agent counts the export's bytes: at least what was written and read back
        with lab.client("l0-2") as agent:
            m = {(x.name, x.labels.get("volume")): x.value
                 for f in text_string_to_metric_families(agent.metrics()) for x in f.samples}
        assert m[("iris_export_receive_bytes_total", vol)] >= len(data)
        assert m[("iris_export_transmit_bytes_total", vol)] >= len(data)
        # the other tenant, at the same address in its own L2, finds no server
        assert probe.ping(lab.ns("bmgmt"), "10.0.101.80", count=2, wait=0.5) == 0
        tenants["a"].post(f"/reservations/{r['id']}/terminate")
        # wiped and deleted (the item did not ask to keep): at once, or by the reconciler's retry
        # when the export's server was slow to exit and its mount still busy
        deadline = time.monotonic() + 30
        while list(pool.glob("*.img")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not list(pool.glob("*.img"))
        ok = tenants["a"].post("/reservations", {"duration_s": 600, "items": [{"kind": "storage", "size_gb": 4}]})
        assert ok["reservation_state"] == "ReserveHeld"  # the capacity came back
    finally:
        storage.sweep_pool(pool, SubprocessRunner())
        shutil.rmtree(pool, ignore_errors=True)


def test_model_b_pod_is_its_own_segment(lab, coord):
    """Service model (b): the reservation's L1s on an L2 segment of their own (own bridge, own GRE
    key), extended through the tunnel as a network separate from the tenant's L2; the IaaS adds it
    as a new pod (here: a bridge with a GRE port of the pod's key on its gateway, and a host)."""
    _, _, tenants = coord
    a = tenants["a"]
    pod = provisioned(a, {**l1_request(["10.50.0.51/24"]), "service_model": "b"})
    flat = provisioned(a, l1_request(["10.50.0.52/24"]))  # model a: the tenant's own L2
    assert pod["service_model"] == "b" and flat["service_model"] == "a"
    key = pod["segment"]["key"]
    assert key != flat["segment"]["key"] and pod["segment"]["bridge"] != flat["segment"]["bridge"]
    pod_l1 = next(x["l1"] for x in pod["resources"] if "l1" in x)
    flat_l1 = next(x["l1"] for x in flat["resources"] if "l1" in x)
    # the IaaS side adds the pod network at its gateway: what `iris gateway-config --key` prints
    gw, host = lab.ovs("agw"), lab.ns("apod")
    r = SubprocessRunner()
    try:
        r.run(ovs.txn(gw.db, *ovs.add_bridge("br-pod", datapath_type=lab.topo.datapath_type),
                      *ovs.gre_port("br-pod", "gre-pod", remote_ip=lab.topo.haas.gateway_ip, key=key),
                      *ovs.add_port("br-pod", "pod0", tag=101, vlan_mode="access")))
        nl.ensure_netns(host)
        nl.ensure_veth("pod0", lab.ns("agw"), "eth0", host)
        nl.ensure_addr(host, "eth0", "10.50.0.10/24")
        r.run(nl.tx_offload_off_cmd(host, "eth0"))
        # reachable from the IaaS side, through the tunnel, on the pod's own network
        assert probe.reachable(host, "10.50.0.51", timeout=15)
        # isolated from the tenant's other segment, even on the same subnet: a host of the
        # tenant's own L2 (VLAN 101 behind its ToR) reaches the model-a L1, not the pod's
        flat_host = guests.add_host(lab, "a", "x50", 101, "10.50.0.20/24")
        assert probe.reachable(flat_host, "10.50.0.52", timeout=15)
        assert probe.ping(flat_host, "10.50.0.51", count=2, wait=0.5) == 0
        assert probe.ping(pod_l1, "10.50.0.52", count=2, wait=0.5) == 0
        assert probe.ping(pod_l1, "10.50.0.20", count=2, wait=0.5) == 0
        assert probe.ping(host, "10.50.0.52", count=2, wait=0.5) == 0
        assert probe.arping(flat_l1, next(i for i in nl.links(flat_l1) if i.startswith("iris1")), "10.50.0.51") == []
        # and from the other tenant
        assert probe.ping(lab.ns("bmgmt"), "10.50.0.51", count=2, wait=0.5) == 0
    finally:
        r.run(ovs.txn(gw.db, *ovs.del_bridge("br-pod")))
        nl.delete_netns(host)
        guests.remove_host(lab, "a", "x50")


def test_model_c_routed_through_a_router_hop(lab, coord):
    """Service model (c): the L1s on a subnet of their own behind a router on the HaaS side; the
    IaaS reaches them over L3 only (a route to the subnet via the router), and the hop shows."""
    _, _, tenants = coord
    r = provisioned(tenants["a"], {**l1_request(["10.77.0.51/24"]), "service_model": "c",
                                   "routing": {"subnet": "10.77.0.0/24", "iaas_address": "10.0.101.250/24"}})
    l1 = next(x["l1"] for x in r["resources"] if "l1" in x)
    mgmt = lab.ns("amgmt")
    # not on the tenant's L2: without a route nothing answers, and ARP finds nobody
    assert probe.ping(mgmt, "10.77.0.51", count=2, wait=0.5) == 0
    assert probe.arping(mgmt, "eth0", "10.77.0.51") == []
    assert probe.reachable(mgmt, "10.0.101.250")  # the router, on the tenant's L2 through the trunk
    nl.ensure_route(mgmt, "10.77.0.0/24", "10.0.101.250")  # what the IaaS side adds for model c
    try:
        assert probe.reachable(mgmt, "10.77.0.51", timeout=10)
        trace = cmd("traceroute", "-n", "-q", "1", "-w", "1", "-m", "4", "10.77.0.51", netns=mgmt)
        hops = subprocess.run(trace.full_argv(), capture_output=True, text=True, timeout=30).stdout
        lines = [ln.split() for ln in hops.splitlines()[1:] if ln.strip()]
        assert [ln[1] for ln in lines[:2]] == ["10.0.101.250", "10.77.0.51"], hops
        # the L1 itself still sees nothing of the control network
        for agent in lab.plan.agents:
            assert probe.ping(l1, agent.ip, count=1, wait=0.5) == 0
    finally:
        with nl.ipr(mgmt) as h:
            h.route("del", dst="10.77.0.0/24")
