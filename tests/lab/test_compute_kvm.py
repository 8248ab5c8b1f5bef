"""A kvm L1 (QEMU; TCG on this host, which has no usable KVM) through the agents, with real
packets: booted from Debian's kernel and an initramfs of Debian's busybox and modules, its NIC a
tap on the tenant's bridge. The checks of ``test_compute.py``, probed from inside the guest
through its serial console."""

from __future__ import annotations

import shutil

import pytest

from iris_haas.hostd.l1 import kvm as kvmdrv
from iris_haas.lab import iaas, probe
from iris_haas.lab.tenants import L1, realize
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovsdb
from iris_haas.linux.proc import alive

pytestmark = pytest.mark.lab

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIrisTestKeyOnlyForTheLab tenant@iaas"
GUEST_VLAN = 734


def _kvm_missing() -> str | None:
    if shutil.which(kvmdrv.QEMU) is None:
        return "needs qemu-system-x86"
    try:
        kvmdrv.find_kernel()
    except Exception as e:  # noqa: BLE001
        return str(e)
    return None


@pytest.fixture
def compute_lab(lab, tenants):
    realize(lab, [])
    for t in "ab":
        nl.flush_neighbours(lab.ns(f"{t}mgmt"), "eth0")
    try:
        yield lab
    finally:
        realize(lab, [])


@pytest.mark.skipif(_kvm_missing() is not None, reason=_kvm_missing() or "")
def test_kvm_l1_joins_the_tenant_l2_and_release_leaves_nothing(compute_lab):
    lab = compute_lab
    n = L1("a", "l0-3", "kv1", "kvm", "10.0.101.41/24", cpus=1, memory_mb=160, ssh_key=KEY)
    res = realize(lab, [n])
    assert all(r["in_sync"] for r in res.values()), res
    drv = kvmdrv.KvmL1(lab.dir / n.node / "agent" / "l1", host_netns=lab.ns(n.node))
    assert drv.running(n.name)

    def sh(command: str, timeout: float = 30.0) -> tuple[int, str]:
        return drv.console(n.name, command, timeout)

    # the management address answers from the IaaS side once the guest has booted
    assert probe.reachable(lab.ns("amgmt"), "10.0.101.41", timeout=90)
    assert probe.ping(lab.ns("amgmt"), "10.0.101.41", count=3) == 3
    # the tenant's key, the flavor, one NIC
    assert sh("cat /root/.ssh/authorized_keys")[1].strip().splitlines()[-1].strip() == KEY
    assert sh("nproc")[1].strip().splitlines()[-1].strip() == "1"
    mem_kb = int(sh("grep MemTotal /proc/meminfo")[1].split()[-2])
    assert 100_000 < mem_kb <= 160 * 1024
    rc, links = sh("ls /sys/class/net")
    assert sorted(links.split()[-2:]) == ["eth0", "lo"], links

    # a user VM on a guest VLAN on an IaaS host talks to the guest VLAN inside the L1. The guest
    # kernel has 802.1Q (this host's has not), so the L1's own software tags in the kernel.
    host = iaas.add_iaas_host(lab, "a", "h2", "10.0.101.52/24")
    try:
        vm = host.add_vm(iaas.UserVM("h2vm", lab.ns("h2vm"), GUEST_VLAN, "10.7.0.11/24", "02:00:00:07:00:21"))
        rc, out = sh(f"ip link add link eth0 name vm{GUEST_VLAN} type vlan id {GUEST_VLAN} && "
                     f"ip addr add 10.7.0.42/24 dev vm{GUEST_VLAN} && ip link set vm{GUEST_VLAN} up")
        assert rc == 0, out
        assert probe.reachable(vm.netns, "10.7.0.42", timeout=15)
        assert sh("ping -c 2 -W 2 10.7.0.11")[0] == 0
        # the management server, on VLAN 101, does not see the guest VLAN
        assert probe.ping(lab.ns("amgmt"), "10.7.0.42", count=1) == 0

        # from inside the guest: nothing of the control network, the fabric or any agent answers
        sh("ip addr add 198.19.0.202/24 dev eth0")  # even with an address in the control subnet
        targets = [lab.topo.ctl_ip(x) for x in ("ctl", "hgw", *lab.topo.l0_nodes())]
        targets += [lab.topo.fab_ip(x) for x in ("hgw", *lab.topo.l0_nodes())] + [lab.topo.haas.gateway_ip]
        agents = " ".join(f"{a.ip}:{a.port}" for a in lab.plan.agents)
        script = (f"for ip in {' '.join(targets)}; do (ping -c 2 -W 1 $ip >/dev/null 2>&1 && echo ANSWER $ip) & done; "
                  f"for a in {agents}; do (nc -w 1 ${{a%:*}} ${{a#*:}} </dev/null >/dev/null 2>&1 && echo ANSWER $a) & done; "
                  "wait")
        rc, out = sh(script, timeout=60)
        assert "ANSWER 1" not in out, out  # the echoed command line has "ANSWER $ip", not an address
        assert sh("ping -c 2 -W 2 10.0.101.10")[0] == 0  # while the tenant's own network answers
    finally:
        iaas.remove_iaas_host(lab, "a", host)

    # release: no VM, no tap, no port, no files
    pid = drv._pid(n.name)
    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    assert pid is None or not alive(pid)
    assert n.port() not in nl.links(lab.ns(n.node))
    assert n.port() not in ovsdb.snapshot(lab.ovs(n.node).db).ports
    assert sorted(p.name for p in drv.dir.glob(f"{n.name}*")) == []
    assert probe.ping(lab.ns("amgmt"), "10.0.101.41", count=1) == 0


@pytest.mark.skipif(_kvm_missing() is not None, reason=_kvm_missing() or "")
def test_kvm_guest_takes_its_management_address_by_dhcp(compute_lab):
    import time

    lab = compute_lab
    n = L1("a", "l0-1", "kd1", "kvm", None, memory_mb=128)
    with iaas.dhcp_server(lab, "a", 170, 179, tag="udhcpd-kvm"):
        realize(lab, [n])
        ips = [f"10.0.101.{i}" for i in range(170, 180)]
        deadline = time.monotonic() + 90
        got = None
        while got is None and time.monotonic() < deadline:
            got = next((ip for ip in ips if probe.ping(lab.ns("amgmt"), ip, count=1, wait=0.3) == 1), None)
        assert got, "the guest took no address from the IaaS side's DHCP server"
        realize(lab, [])
        assert probe.ping(lab.ns("amgmt"), got, count=1) == 0
