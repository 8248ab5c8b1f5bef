"""L1 nodes (netns and lxc kinds) through the agents, with real packets.

For each kind: one node for a tenant, its management address answering from the IaaS
management host, a user VM on a guest VLAN inside the L1 talking to a user VM on an IaaS host
on the same VLAN, nothing of the control network reachable from inside, and a release that
leaves nothing behind. Then two tenants at once with the same VLANs and subnets, and a user VM
migrated from the IaaS DC to an L1 and back under a running ping.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from iris_haas.hostd.l1 import lxc as lxcdrv
from iris_haas.lab import escapes, iaas, probe
from iris_haas.lab.tenants import L1, realize
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovsdb
from iris_haas.linux.runner import cmd

pytestmark = pytest.mark.lab

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIrisTestKeyOnlyForTheLab tenant@iaas"
GUEST_VLAN = 733


@pytest.fixture
def compute_lab(lab, tenants):
    """The shared lab with no L1 nodes before and after the test, whatever happens. The
    management servers forget the MACs of earlier tests' L1s, which used the same addresses."""
    realize(lab, [])
    for t in "ab":
        nl.flush_neighbours(lab.ns(f"{t}mgmt"), "eth0")
    try:
        yield lab
    finally:
        realize(lab, [])


@pytest.fixture
def iaas_host(compute_lab):
    """An IaaS KVM host in tenant a's data center (IaaS-side setup, not provisioning)."""
    lab = compute_lab
    h = iaas.add_iaas_host(lab, "a", "h1", "10.0.101.51/24")
    try:
        yield h
    finally:
        iaas.remove_iaas_host(lab, "a", h)


def _agent_dir(lab, node: str) -> Path:
    return lab.dir / node / "agent" / "l1"


def _in_l1(lab, n: L1, *argv: str) -> subprocess.CompletedProcess:
    """Run a command from inside the L1: in the container for lxc (lxc-attach), in the namespace
    for netns."""
    if n.kind == "lxc":
        c = lxcdrv.attach_cmd(_agent_dir(lab, n.node) / "lxc" / "c", n.name, *argv, host_netns=lab.ns(n.node))
    else:
        c = cmd(*argv, netns=lab.ns(n.name))
    return subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=30)


def _pings_from_l1(lab, n: L1, ip: str) -> bool:
    return _in_l1(lab, n, "ping", "-c", "2", "-W", "1", ip).returncode == 0


def _leftovers(lab, n: L1) -> list[str]:
    out = []
    if nl.netns_exists(lab.ns(n.name)):
        out.append(f"netns {lab.ns(n.name)}")
    l0 = nl.links(lab.ns(n.node))
    out += [f"link {x} on {n.node}" for x in l0 if x == n.port()]
    st = ovsdb.snapshot(lab.ovs(n.node).db)
    out += [f"ovs port {p}" for p in st.ports if p == n.port()]
    d = _agent_dir(lab, n.node) / n.kind
    out += [f"file {p}" for p in d.glob(f"{n.name}*")] if d.exists() else []
    if n.kind == "lxc":
        out += [f"container {p}" for p in (d / "c").glob(n.name)] if (d / "c").exists() else []
        out += [f"cgroup {p}" for p in lxcdrv.cgroup_dirs(lab.ns(n.name))]
    return out


@pytest.mark.parametrize("kind", ["netns", "lxc"])
def test_one_l1_joins_the_tenant_l2_and_release_leaves_nothing(compute_lab, iaas_host, kind):
    lab = compute_lab
    n = L1("a", "l0-2", f"{kind[0]}n1", kind, "10.0.101.21/24", cpus=1, memory_mb=96, ssh_key=KEY)
    res = realize(lab, [n])
    assert all(r["in_sync"] for r in res.values()), res
    with lab.client(n.node) as c:
        st = c.state()
    assert st["in_sync"], st["pending"]
    assert [o for o in st["observed"] if o["op"] == "l1"] == [
        {"op": "l1", "name": n.name, "kind": kind, "running": True, "owner": "tenant:a", "tenant": "a"}]

    # what a CloudStack administrator needs to "add host": the management address answers ...
    assert probe.reachable(lab.ns("amgmt"), "10.0.101.21", timeout=10)
    assert probe.ping(lab.ns("amgmt"), "10.0.101.21", count=3) == 3
    # ... and the tenant's key is there
    if kind == "lxc":
        assert _in_l1(lab, n, "cat", "/root/.ssh/authorized_keys").stdout.strip() == KEY
        # the flavor, enforced through the container's cgroups
        cg = {p.parent.name: p for p in lxcdrv.cgroup_dirs(lab.ns(n.name))}
        mem = next(p for p in lxcdrv.cgroup_dirs(lab.ns(n.name)) if p.parent.name == "memory"
                   and p.name == lab.ns(n.name))
        assert int((mem / "memory.limit_in_bytes").read_text()) == 96 << 20
        cpu = next(p for p in lxcdrv.cgroup_dirs(lab.ns(n.name)) if p.parent.name == "cpu"
                   and p.name == lab.ns(n.name))
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 100_000
        assert cg
    else:
        assert (_agent_dir(lab, n.node) / "netns" / n.name / "authorized_keys").read_text().strip() == KEY

    # the L1 sees one NIC, untagged management VLAN, and no route anywhere else
    assert sorted(nl.links(lab.ns(n.name))) == sorted(["lo", n.nic()])
    with nl.ipr(lab.ns(n.name)) as h:
        assert [r for r in h.get_routes(family=2, table=254) if r.get_attr("RTA_GATEWAY")] == []

    # the IaaS's host software inside the L1 and on an IaaS host; user VMs on a guest VLAN
    inside = iaas.in_l1(lab, "a", n.name, n.nic())
    try:
        vm_l1 = inside.add_vm(iaas.UserVM(f"{n.name}vm", lab.ns(f"{n.name}vm"), GUEST_VLAN, "10.7.0.12/24",
                                          "02:00:00:07:00:12"))
        vm_iaas = iaas_host.add_vm(iaas.UserVM("h1vm", lab.ns("h1vm"), GUEST_VLAN, "10.7.0.11/24",
                                               "02:00:00:07:00:11"))
        assert probe.reachable(vm_l1.netns, vm_iaas.ip, timeout=10)
        assert probe.ping(vm_iaas.netns, vm_l1.ip, count=3) == 3
        # the guest VLAN is a VLAN: the management server (VLAN 101) does not see it
        assert probe.arping(lab.ns("amgmt"), "eth0", vm_l1.ip, count=1, deadline=1) == []

        # from inside the L1: nothing of the control network, the fabric, or any agent answers
        nl.ensure_addr(lab.ns(n.name), n.nic(), "198.19.0.201/24")  # even with an address there
        targets = [lab.topo.ctl_ip(x) for x in ("ctl", "hgw", *lab.topo.l0_nodes())]
        targets += [lab.topo.fab_ip(x) for x in ("hgw", *lab.topo.l0_nodes())] + [lab.topo.haas.gateway_ip]
        with ThreadPoolExecutor(8) as ex:
            pings = dict(zip(targets, ex.map(lambda ip: _pings_from_l1(lab, n, ip), targets)))
            conns = list(ex.map(lambda a: probe.tcp_connect(lab.ns(n.name), a.ip, a.port, timeout=1.0),
                                lab.plan.agents))
        assert not any(pings.values()), pings
        assert not any(conns), conns
        if kind == "lxc":  # and none of the known escapes works from inside, as the L1's root
            drv = lxcdrv.LxcL1(_agent_dir(lab, n.node), host_netns=lab.ns(n.node))
            args = escapes.probe_args(tcp=[(a.ip, a.port) for a in lab.plan.agents], icmp=targets[:3])
            attempts = escapes.probe_lxc(drv, n.name, lab.dir, args)
            assert [a for a in attempts if a.escaped] == [], attempts
            # its root is not the L0's: a range of ids of its own, not the identity map
            pid = drv.init_pid(n.name)
            assert pid
            inner, outer, count = map(int, Path(f"/proc/{pid}/uid_map").read_text().split())
            assert (inner, count) == (0, 65536) and outer >= 65536, (inner, outer, count)
        assert _pings_from_l1(lab, n, "10.0.101.10")  # while the tenant's own network answers
    finally:
        inside.stop()
        if "h1vm" in iaas_host.vms:
            iaas_host.remove_vm(iaas_host.vms["h1vm"])

    # release: nothing left of the L1, on the L0 or anywhere
    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    assert _leftovers(lab, n) == []
    assert probe.ping(lab.ns("amgmt"), "10.0.101.21", count=1) == 0


def test_two_tenants_same_vlans_and_addresses_stay_apart(compute_lab):
    lab = compute_lab
    nodes = [L1("a", "l0-1", "ta1", "lxc", "10.0.101.21/24"),
             L1("b", "l0-1", "tb1", "lxc", "10.0.101.21/24"),
             L1("a", "l0-3", "ta2", "netns", "10.0.101.22/24"),
             L1("b", "l0-3", "tb2", "netns", "10.0.101.22/24")]
    res = realize(lab, nodes)
    assert all(r["in_sync"] for r in res.values()), res
    mac = {n.name: nl.links(lab.ns(n.name))[n.nic()]["address"] for n in nodes}
    for t in "ab":
        mine = {n.name for n in nodes if n.tenant == t}
        for ip in ("10.0.101.21", "10.0.101.22"):
            assert probe.reachable(lab.ns(f"{t}mgmt"), ip, timeout=10), (t, ip)
            # broadcast ARP from the tenant's management server: only its own L1 answers
            got = probe.arping(lab.ns(f"{t}mgmt"), "eth0", ip, count=2, deadline=2)
            want = [mac[n.name] for n in nodes if n.name in mine and n.address.startswith(ip + "/")]
            assert got == want, (t, ip, got, want)
    # L1 to L1 inside a tenant, across L0s, and never to the other tenant's
    assert probe.ping(lab.ns("ta1"), "10.0.101.22", count=2) == 2
    assert probe.arping(lab.ns("ta1"), "iris1-ta1", "10.0.101.22", count=2, deadline=2) == [mac["ta2"]]
    assert probe.arping(lab.ns("tb1"), "iris1-tb1", "10.0.101.22", count=2, deadline=2) == [mac["tb2"]]
    res = realize(lab, [])
    for n in nodes:
        assert _leftovers(lab, n) == []


def _ping_loss(ns: str, ip: str, count: int, interval: float, out: dict) -> None:
    c = cmd("ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", ip, netns=ns)
    p = subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=count * interval + 30)
    import re

    m = re.search(r"(\d+) packets transmitted, (\d+) received", p.stdout)
    out["sent"], out["received"] = (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def test_user_vm_migrates_to_an_l1_and_back_under_a_running_ping(compute_lab, iaas_host):
    lab = compute_lab
    n = L1("a", "l0-4", "mg1", "lxc", "10.0.101.24/24")
    realize(lab, [n])
    assert probe.reachable(lab.ns("amgmt"), "10.0.101.24", timeout=10)
    inside = iaas.in_l1(lab, "a", n.name, n.nic())
    vms = []
    try:
        peer_iaas = iaas_host.add_vm(iaas.UserVM("mpa", lab.ns("mpa"), GUEST_VLAN, "10.7.0.31/24", "02:00:00:07:00:31"))
        peer_l1 = inside.add_vm(iaas.UserVM("mpb", lab.ns("mpb"), GUEST_VLAN, "10.7.0.32/24", "02:00:00:07:00:32"))
        vm = iaas_host.add_vm(iaas.UserVM("mvm", lab.ns("mvm"), GUEST_VLAN, "10.7.0.33/24", "02:00:00:07:00:33"))
        vms = [peer_iaas, peer_l1, vm]
        for p in (peer_iaas, peer_l1):
            assert probe.reachable(p.netns, vm.ip, timeout=10)
        mac_before = nl.links(vm.netns)["eth0"]["address"]
        count, interval = 400, 0.02
        res: dict[str, dict] = {"iaas": {}, "l1": {}}
        threads = [threading.Thread(target=_ping_loss, args=(peer_iaas.netns, vm.ip, count, interval, res["iaas"])),
                   threading.Thread(target=_ping_loss, args=(peer_l1.netns, vm.ip, count, interval, res["l1"]))]
        for t in threads:
            t.start()
        time.sleep(2.0)
        there = iaas.migrate(vm, iaas_host, inside)
        assert nl.links(vm.netns)["eth0"]["address"] == mac_before
        assert vm.name in inside.vms and vm.name not in iaas_host.vms
        time.sleep(2.5)
        back = iaas.migrate(vm, inside, iaas_host)
        for t in threads:
            t.join()
        assert nl.links(vm.netns)["eth0"]["address"] == mac_before
        assert nl.addresses(vm.netns, "eth0") == [vm.address]
        for side, r in res.items():
            assert r["sent"] == count, (side, r)
            loss = 1 - r["received"] / r["sent"]
            assert loss < 0.05, (side, r, there, back)
    finally:
        for v in vms:
            for h in (inside, iaas_host):
                if v.name in h.vms:
                    h.remove_vm(v)
            nl.delete_netns(v.netns)
        inside.stop()
    realize(lab, [])
    assert _leftovers(lab, n) == []


def test_a_failure_half_way_is_reported_and_the_previous_state_rolls_it_back(compute_lab):
    """One L0 cannot hold an L1 (a flavor QEMU refuses: 256 vCPUs on a pc machine). Its agent
    still makes the L1s it can, reports the one it could not by name, and the coordinator's
    rollback (the previous desired state, here: none) removes everything."""
    from iris_haas.agent.client import AgentError

    lab = compute_lab
    good = [L1("a", "l0-1", "rb1", "lxc", "10.0.101.61/24"), L1("a", "l0-2", "rb2", "netns", "10.0.101.62/24")]
    bad = L1("a", "l0-2", "rb3", "kvm", "10.0.101.63/24", cpus=256)
    with pytest.raises(AgentError) as e:
        realize(lab, [*good, bad])
    assert "rb3" in str(e.value) and "L1Failed" in str(e.value)
    with lab.client("l0-2") as c:
        st = c.state()
    assert not st["in_sync"] and any("start kvm L1 rb3" in p for p in st["pending"])
    assert {o["name"] for o in st["observed"] if o["op"] == "l1"} == {"rb2"}
    for n in good:
        assert probe.reachable(lab.ns("amgmt"), n.address.split("/")[0], timeout=10)
    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    for n in [*good, bad]:
        assert _leftovers(lab, n) == []


@pytest.mark.parametrize("kind", ["lxc"])
def test_management_address_by_dhcp_from_the_iaas_side(compute_lab, kind):
    """No address in the reservation: the L1 gets one from a DHCP server on the IaaS's
    management network (busybox udhcpd on the management server), across the tunnel."""
    lab = compute_lab
    n = L1("a", "l0-2", "dh1", kind, None)
    with iaas.dhcp_server(lab, "a", 150, 159):
        realize(lab, [n])
        deadline = time.monotonic() + 30
        got: list[str] = []
        while time.monotonic() < deadline and not got:
            got = [a for a in nl.addresses(lab.ns(n.name), n.nic()) if a.startswith("10.0.101.15")]
            time.sleep(0.2)
        assert got, nl.addresses(lab.ns(n.name), n.nic())
        assert probe.reachable(lab.ns("amgmt"), got[0].split("/")[0], timeout=10)
        realize(lab, [])
        assert _leftovers(lab, n) == []
