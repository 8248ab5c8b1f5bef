"""Real user VMs: QEMU guests the IaaS deploys over SSH, on an IaaS host and on an lxc L1 alike.

The IaaS management host (``amgmt``) logs into an IaaS host of its DC (a namespace with sshd) and
into an lxc L1 booted from the OS image with the IaaS stack (Open vSwitch, QEMU), prepares the
L1's own bridge, and deploys on each, through the same code, a QEMU guest (TCG, this machine's
kernel and a busybox initramfs) on guest VLAN 733. Both answer a ping from an IaaS user VM on that
VLAN in the IaaS DC; the one in the L1 across the GRE trunk. Destroyed, they leave no process,
tap, OVS port or directory on their hosts; the L1's release leaves nothing, the image stays.
Then a running one migrates live from the IaaS host to an lxc L1 and back under a ping.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from iris_haas.hostd import images
from iris_haas.lab import iaas, probe, uservm
from iris_haas.lab.tenants import L1, realize
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import cmd
from tests.lab.test_compute import _in_l1, _leftovers

pytestmark = pytest.mark.lab

GUEST_VLAN = 733


def _iaas_l1(lab, key: Path, pub: str, image: Path, node: str, name: str, ip: str) -> tuple[L1, uservm.HostSsh]:
    """An lxc L1 of tenant a booted from ``image`` (the IaaS stack), logged into from the IaaS
    management host and prepared as an IaaS host (its own OVS, the guests' bridge on its NIC)."""
    n = L1("a", node, name, "lxc", f"{ip}/24", cpus=1, memory_mb=512, ssh_key=pub, image=str(image))
    res = realize(lab, [n])
    assert all(r["in_sync"] for r in res.values()), res
    host = uservm.HostSsh(lab.ns("amgmt"), key, ip, workdir="/var/lib/iris-uvm", ovs_db="unix:/run/iris-ovs/db.sock")
    uservm.ssh_when_up(host.client_ns, host.key, host.ip, timeout=30)
    uservm.prepare_host(host, n.nic(), lab.topo.tenant("a").mgmt_vlan, "iaas:a")
    return n, host


@pytest.fixture
def vm_lab(lab, tenants, tmp_path):
    """tenant a's IaaS host h1 with sshd letting in the management host's key, and an IaaS user
    VM (a namespace) on h1 on the guest VLAN."""
    realize(lab, [])
    nl.flush_neighbours(lab.ns("amgmt"), "eth0")
    key, pub = uservm.keypair(tmp_path, "iaas-mgmt")
    h = iaas.add_iaas_host(lab, "a", "h1", "10.0.101.51/24")
    sshd = None
    try:
        sshd = uservm.Sshd(h.netns, "10.0.101.51", lab.dir / "ah1-sshd", pub).start()
        peer = h.add_vm(iaas.UserVM("h1vm", lab.ns("h1vm"), GUEST_VLAN, "10.7.0.11/24", "02:00:00:07:00:11"))
        host = uservm.HostSsh(lab.ns("amgmt"), key, "10.0.101.51", workdir=str(lab.dir / "ah1-uvm"), ovs_db=h.ovs.db)
        yield lab, key, pub, host, peer
    finally:
        realize(lab, [])
        if sshd:
            sshd.stop()
        iaas.remove_iaas_host(lab, "a", h)


def test_a_qemu_user_vm_deployed_over_ssh_on_an_lxc_l1_and_on_an_iaas_host_answers_on_its_vlan(vm_lab, iaas_image):
    lab, key, pub, iaas_host, peer = vm_lab
    tpl = uservm.Template.local(lab.dir)
    owner = "iaas:a"
    n, l1 = _iaas_l1(lab, key, pub, iaas_image, "l0-1", "uv1", "10.0.101.26")
    # the IaaS stack's one device, and only that: /dev/net/tun (no /dev/kvm on this machine)
    assert _in_l1(lab, n, "test", "-c", "/dev/net/tun").returncode == 0

    vms = []
    try:
        for host, name, mac, addr in ((l1, "uvm1", "52:54:00:07:00:31", "10.7.0.31/24"),
                                      (iaas_host, "uvm2", "52:54:00:07:00:32", "10.7.0.32/24")):
            t0 = time.monotonic()
            vm = uservm.deploy_user_vm(host, tpl, name, GUEST_VLAN, mac, addr, owner=owner)
            vms.append(vm)
            probe.first_reply(peer.netns, vm.ip, timeout=60)
            print(f"\n{name} on {host.ip}: answers {time.monotonic() - t0:.1f} s after the deploy call")
            assert vm.qmp("query-status")["return"]["status"] == "running"
            assert probe.ping(peer.netns, vm.ip, count=3) == 3
            assert mac in probe.arping(peer.netns, "eth0", vm.ip, count=1)
            # a guest VLAN: the management server (VLAN 101) does not see it
            assert probe.arping(lab.ns("amgmt"), "eth0", vm.ip, count=1, deadline=1) == []
        # QEMU runs inside the L1 (the container's process, in its namespace), unprivileged on the L0
        pid_in_l1 = l1.run(f"cat {vms[0].vmdir}/pid").stdout.decode().strip()
        assert pid_in_l1 == str(vms[0].pid)
        for vm in vms:
            vm.destroy()
            assert vm.leftovers() == [], vm.leftovers()
            assert probe.ping(peer.netns, vm.ip, count=1) == 0
        vms = []
    finally:
        for vm in vms:
            vm.destroy()
        uservm.unprepare_host(l1)

    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    assert _leftovers(lab, n) == []
    assert images.cached(iaas_image.parent.parent,
                         images.inputs(packages=[*images.PACKAGES, *images.IAAS_STACK],
                                       mirror=images.apt_mirror())) == iaas_image


def test_a_running_qemu_user_vm_migrates_live_to_an_lxc_l1_and_back_under_a_ping(vm_lab, iaas_image):
    """QEMU's own live migration (QMP ``migrate``, the destination started with ``-incoming`` on
    the same guest VLAN) from the IaaS host to an lxc L1 and back, across the GRE trunk, while an
    IaaS user VM pings the VM every 0.1 s: it keeps its MAC and address, and < 5 % of the pings
    are lost."""
    lab, key, pub, iaas_host, peer = vm_lab
    tpl = uservm.Template.local(lab.dir)
    owner = "iaas:a"
    n, l1 = _iaas_l1(lab, key, pub, iaas_image, "l0-3", "uv2", "10.0.101.27")
    uservm.stage_template(l1, tpl)  # the template on both hosts, as an IaaS keeps it on its hosts
    mac = "52:54:00:07:00:33"
    handles = []
    ping = None
    try:
        vm = uservm.deploy_user_vm(iaas_host, tpl, "uvm3", GUEST_VLAN, mac, "10.7.0.33/24", owner=owner)
        handles.append(vm)
        probe.first_reply(peer.netns, vm.ip, timeout=60)
        ping = subprocess.Popen(cmd("ping", "-n", "-D", "-O", "-i", "0.1", "-W", "1", vm.ip, netns=peer.netns).full_argv(),
                                stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        steps = []
        for dst in (l1, iaas_host):
            t0 = time.monotonic()
            print(f"\nmigration to {dst.ip} starts at {time.time():.2f}")
            src = vm
            vm, st = uservm.migrate(vm, dst, tpl, owner=owner)
            handles.append(vm)
            steps.append((dst.ip, round(time.monotonic() - t0, 2), st.get("total-time"), st.get("downtime")))
            assert src.leftovers() == [], src.leftovers()  # nothing of it stays where it was
            assert (vm.host, vm.mac, vm.address) == (dst, mac, "10.7.0.33/24")
            assert vm.qmp("query-status")["return"]["status"] == "running"
            time.sleep(1.0)
            assert probe.arping(peer.netns, "eth0", vm.ip, count=1) == [mac]  # same MAC, new place
        ping.send_signal(signal.SIGINT)
        out, _ = ping.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        sent, got = int(m.group(1)), int(m.group(2))
        lost = [ln for ln in out.splitlines() if "no answer yet" in ln]
        print(f"\nmigrations (dst, s, total ms, downtime ms): {steps}; pings {got}/{sent}; lost: {lost}")
        assert sent >= 20 and (sent - got) / sent < 0.05, out
        vm.destroy()
        assert [x for h in handles for x in h.leftovers()] == []
        handles = []
    finally:
        if ping and ping.poll() is None:
            ping.kill()
            ping.wait()
        for h in handles:
            h.destroy()
        uservm.unprepare_host(l1)
    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    assert _leftovers(lab, n) == []
