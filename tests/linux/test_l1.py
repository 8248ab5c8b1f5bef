"""L1 drivers: the pure parts (unit), the reconciler's L1 decisions against the in-memory twin
(unit), and the real netns and lxc drivers in fresh namespaces (linux)."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from iris_haas.contract.ops import BridgeOp, DesiredState, L1Op, PortOp, ShapeOp
from iris_haas.contract.types import L1Kind
from iris_haas.hostd.actions import L1Destroy, L1Prepare, L1Start
from iris_haas.hostd.l1 import DRIVERS, L1Failed, MemoryL1, kvm, lxc, make_drivers
from iris_haas.hostd.l1.base import matches, spec_of
from iris_haas.hostd.l1.netns import NetnsL1
from iris_haas.hostd.reconciler import Facts, Host, HostConfig, plan_l1, with_l1_ports
from iris_haas.lab import escapes
from iris_haas.linux import cgroup, proc, tc
from iris_haas.linux import netlink as nl
from iris_haas.linux.garp import frame as garp_frame
from iris_haas.linux.netns import socket_in_netns
from iris_haas.linux.ovsdb import OvsState
from iris_haas.linux.proc import alive
from iris_haas.linux.runner import RecordingRunner, cmd


def op(name="n1", kind="lxc", **kw) -> L1Op:
    base = dict(kind=kind, name=name, bridge="irisb-a", port=f"irisp-{name}", l1_ifname=f"iris1-{name}",
                netns=f"iris-x-{name}", vlan=101, address="10.0.101.21/24", owner="r1", tenant="a")
    return L1Op(**{**base, **kw})


# ---------------------------------------------------------------- pure

@pytest.mark.unit
def test_an_l1_has_exactly_one_nic_the_native_vlan_trunk_port():
    p = op().port_op()
    assert isinstance(p, PortOp)
    assert (p.bridge, p.name, p.l1_netns, p.vlan, p.trunk, p.address) == (
        "irisb-a", "irisp-n1", "iris-x-n1", 101, True, "10.0.101.21/24")
    v = op(kind="kvm").port_op()  # a VM's NIC: a veth like any other; its address lives in the guest
    assert (v.name, v.l1_netns, v.l1_ifname, v.address) == ("irisp-n1", "iris-x-n1", "iris1-n1", None)
    assert [o.op for o in with_l1_ports([op()])] == ["l1", "port"]


@pytest.mark.unit
def test_an_l1_and_a_port_cannot_claim_one_nic():
    with pytest.raises(ValidationError):
        DesiredState(ops=[op(), PortOp(bridge="irisb-a", name="irisp-n1")])
    with pytest.raises(ValidationError):
        op(netns="other-ns")  # namespaces Iris makes carry its prefix
    with pytest.raises(ValidationError):
        op(kind="docker")


@pytest.mark.unit
def test_lxc_config_joins_the_wired_namespace_and_enforces_the_flavor():
    lines = lxc.config_lines(op(cpus=2, memory_mb=300), 1_065_536, Path("/r"), Path("/u"))
    assert lines[0] == "lxc.include = /usr/share/lxc/config/common.conf"  # LXC's confinement, then ours
    assert "lxc.namespace.share.net = /run/netns/iris-x-n1" in lines
    assert "lxc.namespace.share.user = /u" in lines
    assert "lxc.net.0.type = empty" in lines  # no NIC of LXC's own, and never the host's network
    assert "lxc.idmap = u 0 1065536 65536" in lines and "lxc.idmap = g 0 1065536 65536" in lines
    assert "lxc.cgroup.cpu.cfs_quota_us = 200000" in lines
    assert "lxc.cgroup.memory.limit_in_bytes = 300M" in lines
    assert f"lxc.cgroup.pids.max = {lxc.PIDS_MAX}" in lines
    assert "lxc.cgroup.dir.container = iris-x-n1" in lines
    assert "lxc.apparmor.profile = unconfined" in lines  # no AppArmor in the kernel
    drop = next(ln for ln in lines if ln.startswith("lxc.cap.drop")).split()[2:]
    assert {"sys_module", "sys_rawio", "sys_time", "sys_boot", "syslog", "mac_admin"} <= set(drop)
    assert not {"net_admin", "sys_admin", "net_raw"} & set(drop)
    assert not any("10:200" in ln or "10:232" in ln or "/dev/net/tun" in ln for ln in lines)  # no IaaS stack
    stack = lxc.config_lines(op(cpus=2, memory_mb=300), 1_065_536, Path("/r"), Path("/u"), iaas_stack=True)
    assert "lxc.cgroup.devices.allow = c 10:200 rwm" in stack and not any("10:232" in ln for ln in stack)
    assert "lxc.mount.entry = /dev/net/tun dev/net/tun none bind,create=file 0 0" in stack
    v2 = lxc.config_lines(op(cpus=2, memory_mb=300), 1_065_536, Path("/r"), Path("/u"), unified=True,
                          apparmor=True, kvm=True, iaas_stack=True)
    assert "lxc.cgroup2.cpu.max = 200000 100000" in v2 and "lxc.cgroup2.memory.max = 300M" in v2
    assert not any(ln.startswith(("lxc.cgroup.cpu", "lxc.cgroup.memory", "lxc.cgroup.pids", "lxc.cgroup.dev")) for ln in v2)
    assert "lxc.cgroup2.devices.allow = c 10:232 rwm" in v2 and "lxc.apparmor.profile = generated" in v2
    assert lxc.disk_bytes(op(disk_gb=3)) == 3 << 30 and lxc.disk_bytes(op()) == lxc.MIN_DISK_MB << 20


@pytest.mark.unit
def test_each_lxc_l1_gets_the_smallest_free_id_slot(tmp_path):
    d = lxc.LxcL1(tmp_path)
    assert [d._claim_slot(n) for n in ("a", "b", "a")] == [0, 1, 0]  # an L1 keeps its slot
    d._release_slot("a")
    assert d._claim_slot("c") == 0 and d.slot("a") is None and d.slot("b") == 1
    assert lxc.id_base(1) - lxc.id_base(0) == lxc.ID_COUNT  # ranges never overlap
    assert lxc.id_map(lxc.id_base(1)) == f"0 {lxc.ID_BASE + lxc.ID_COUNT} 65536"


@pytest.mark.unit
def test_disk_gb_goes_from_the_flavor_to_the_l1_op():
    from iris_haas.planning import compute, model

    seg = model.Segment.of("s1", 5)
    t = model.Tenant("a", seg, l1s=[model.L1("n1", model.L0(1, "l0-1", None), seg, "r1", "a", netns="iris-x-n1", disk_gb=7)])
    (_, o), = compute.plan(t)
    assert isinstance(o, L1Op) and o.disk_gb == 7
    with pytest.raises(ValidationError):
        op(disk_gb=-1)


@pytest.mark.unit
def test_qemu_gets_the_tap_only_no_user_network_and_the_flavor():
    c = kvm.qemu_cmd(op(kind="kvm", cpus=2, memory_mb=192), kernel="/k", initrd="/i", pidfile="/p",
                     console="/c", accel="tcg")
    argv = list(c.argv)
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "192"
    assert argv.count("-netdev") == 1 and argv[argv.index("-netdev") + 1].startswith(f"tap,id=n0,ifname={kvm.TAP},")
    assert "-nic" not in argv and not any(a.startswith("user") for a in argv) and "-nodefaults" in argv
    assert "csum=off" in argv[argv.index("-device") + 1]
    assert argv[argv.index("-accel") + 1] == f"tcg,tb-size={kvm.TCG_TB_MIB}"
    assert argv[argv.index("-sandbox") + 1] == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    assert "-daemonize" not in argv and "-runas" not in argv  # started unprivileged instead
    c = kvm.confined(c, 1234, "iris-kvm-x")
    drop = list(c.argv[c.argv.index("setpriv"):c.argv.index("--") + 1])
    assert drop == ["setpriv", "--reuid=1234", "--regid=1234", "--clear-groups", "--no-new-privs",
                    "--bounding-set=-all", "--inh-caps=-all", "--"]
    assert c.argv[:2] == ("sh", "-c") and c.argv[-len(argv):] == tuple(argv)


@pytest.mark.unit
def test_cgroup_files_on_v1_and_v2(tmp_path):
    lim = cgroup.Limits(cpus=2, memory_bytes=300 << 20, pids=18)
    v1 = {str(f.relative_to(tmp_path)): v for f, v in cgroup.limit_files("iris-k", lim, tmp_path, ver=1)}
    assert v1 == {"cpu/iris-k/cpu.cfs_period_us": "100000", "cpu/iris-k/cpu.cfs_quota_us": "200000",
                  "memory/iris-k/memory.limit_in_bytes": str(300 << 20),
                  "memory/iris-k/memory.memsw.limit_in_bytes": str(300 << 20), "pids/iris-k/pids.max": "18"}
    v2 = {str(f.relative_to(tmp_path)): v for f, v in cgroup.limit_files("iris-k", lim, tmp_path, ver=2)}
    assert v2 == {"iris-k/cpu.max": "200000 100000", "iris-k/memory.max": str(300 << 20),
                  "iris-k/memory.swap.max": "0", "iris-k/pids.max": "18"}
    assert cgroup.version(tmp_path) == 1
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cgroup.version(tmp_path) == 2 and cgroup.procs_files("iris-k", tmp_path) == [tmp_path / "iris-k/cgroup.procs"]
    with pytest.raises(ValueError):
        cgroup.create("other", lim, tmp_path)


@pytest.mark.unit
def test_module_order_loads_dependencies_first():
    dep = ("kernel/a/virtio_net.ko: kernel/a/net_failover.ko kernel/a/failover.ko kernel/a/virtio.ko\n"
           "kernel/a/net_failover.ko: kernel/a/failover.ko\nkernel/a/failover.ko:\n"
           "kernel/a/virtio.ko: kernel/a/virtio_ring.ko\nkernel/a/virtio_ring.ko:\n")
    order = kvm.module_order(dep, ["virtio_net"])
    assert order.index("kernel/a/virtio_ring.ko") < order.index("kernel/a/virtio.ko") < order.index(
        "kernel/a/virtio_net.ko")
    assert order.index("kernel/a/failover.ko") < order.index("kernel/a/net_failover.ko")
    with pytest.raises(L1Failed):
        kvm.module_order(dep, ["8021q"])


@pytest.mark.unit
def test_the_per_vm_cpio_carries_address_and_key(tmp_path):
    data = kvm.vm_cpio(op(kind="kvm", ssh_key="ssh-ed25519 AAAA k", gateway="10.0.101.1"))
    assert data.startswith(b"070701") and b"TRAILER!!!" in data
    assert b"ADDR=10.0.101.21/24" in data and b"GW=10.0.101.1" in data and b"ssh-ed25519 AAAA k" in data
    if shutil.which("cpio"):
        import subprocess

        (tmp_path / "x.cpio").write_bytes(data)
        p = subprocess.run(["cpio", "-t", "--quiet", "-F", str(tmp_path / "x.cpio")], capture_output=True, text=True)
        assert set(p.stdout.split()) >= {"etc/iris/env", "etc/iris/authorized_keys"}


@pytest.mark.unit
def test_gratuitous_arp_frame():
    f = garp_frame("02:00:00:00:00:01", "10.0.101.21")
    assert len(f) == 42 and f[:6] == b"\xff" * 6 and f[12:14] == b"\x08\x06"
    assert f[28:32] == f[38:42] == bytes([10, 0, 101, 21])


# ---------------------------------------------------------------- reconciler decisions (twin)

def _facts(nodes: dict) -> Facts:
    return Facts(ovs=OvsState(), links={}, nodes=nodes)


@pytest.mark.unit
def test_plan_creates_keeps_recreates_and_destroys():
    a, b, c = op("a"), op("b"), op("c")
    have = {"a": {"kind": "lxc", "spec": spec_of(a), "running": True},  # as wanted: kept
            "b": {"kind": "lxc", "spec": spec_of(op("b", cpus=4)), "running": True},  # changed: remade
            "z": {"kind": "netns", "spec": {}, "running": True}}  # not wanted: destroyed
    down, prep, start = plan_l1([a, b, c], _facts(have))
    assert down == [L1Destroy(L1Kind.NETNS, "z"), L1Destroy(L1Kind.LXC, "b")]
    assert prep == [L1Prepare(b), L1Prepare(c)]
    assert start == [L1Start(b), L1Start(c)]
    assert [str(x) for x in (*down, prep[0], start[0])] == [
        "destroy netns L1 z", "destroy lxc L1 b", "prepare lxc L1 b", "start lxc L1 b"]
    # a stopped L1 is started again
    down, prep, start = plan_l1([a], _facts({"a": {**have["a"], "running": False}}))
    assert start == [L1Start(a)]


@pytest.mark.unit
@pytest.mark.parametrize("keeps_disk, same_spec, want", [
    (True, True, ["prepare kvm L1 kv", "start kvm L1 kv"]),  # started again on its disk
    (True, False, ["destroy kvm L1 kv", "prepare kvm L1 kv", "start kvm L1 kv"]),  # a new flavor: made anew
    (False, True, ["destroy kvm L1 kv", "prepare kvm L1 kv", "start kvm L1 kv"]),  # nothing of it kept
])
def test_a_stopped_l1_is_started_again_on_its_disk_only_with_its_spec_unchanged(keeps_disk, same_spec, want):
    o = op("kv", kind="kvm", cpus=1, memory_mb=128)
    had = o if same_spec else o.model_copy(update={"memory_mb": 256})
    facts = _facts({"kv": {"kind": "kvm", "spec": spec_of(had), "running": False, "keeps_disk": keeps_disk}})
    assert [str(a) for s in plan_l1([o], facts) for a in s] == want


@pytest.mark.unit
def test_one_failing_l1_does_not_stop_the_others_and_is_reported(tmp_path):
    cfg = HostConfig(db="unix:/nonexistent", l1_dir=str(tmp_path), warmup=False)
    twin = MemoryL1(L1Kind.LXC, fail={"bad"})
    host = Host(cfg, RecordingRunner(), l1_drivers={L1Kind.LXC: twin})
    good, bad = op("good"), op("bad")
    with pytest.raises(L1Failed, match="start lxc L1 bad") as e:
        host.execute([L1Prepare(good), L1Prepare(bad), L1Start(good), L1Start(bad)])
    assert "good" not in str(e.value)
    assert set(twin.nodes) == {"good"}
    # the L1s' steps of one kind ran together, each L1's in order
    assert [c for c in twin.calls if c[1] == "bad"] == [("prepare", "bad"), ("start", "bad")]
    assert ("announce", "good") in twin.calls and ("announce", "bad") not in twin.calls
    # the rollback the coordinator asks for: the previous desired state, without them
    down, _, _ = plan_l1([], _facts(twin.list()))
    assert down == [L1Destroy(L1Kind.LXC, "good")]


@pytest.mark.unit
def test_the_host_builds_its_l1_drivers_once_from_its_configuration(tmp_path):
    assert Host(HostConfig(db="unix:/nonexistent")).l1_drivers == {}
    host = Host(HostConfig(db="unix:/nonexistent", l1_dir=str(tmp_path)))
    assert {k: type(d) for k, d in host.l1_drivers.items()} == DRIVERS
    assert make_drivers(tmp_path, kinds=(L1Kind.KVM,))[L1Kind.KVM].dir == tmp_path / "kvm"


# ---------------------------------------------------------------- real drivers, fresh namespaces

def test_netns_l1_keeps_the_key_and_goes_away_with_everything(sandbox):
    ns = sandbox.netns("nn")
    d = NetnsL1(sandbox.dir / "l1")
    nl.ensure_veth("irisp-nn", sandbox.netns("l0n"), "iris1-nn", ns)
    o = op("nn", kind="netns", netns=ns, ssh_key="ssh-ed25519 AAAA k", mac="02:00:00:00:aa:01")
    d.start(o)
    assert nl.links(ns)["iris1-nn"]["address"] == "02:00:00:00:aa:01"
    assert d.list()["nn"]["running"] and matches(o, d.list()["nn"])
    assert (d.dir / "nn" / "authorized_keys").read_text().strip() == "ssh-ed25519 AAAA k"
    d.destroy("nn")
    d.destroy("nn")  # tolerant
    assert not nl.netns_exists(ns) and d.list() == {}


needs_lxc = pytest.mark.skipif(shutil.which("lxc-start") is None, reason="needs lxc")


def _lxc_l1(sandbox, name: str, **kw) -> tuple[lxc.LxcL1, L1Op]:
    """An lxc L1 as the reconciler makes it: prepared (its namespace), its NIC wired, started."""
    ns = f"iris-{sandbox.tag}-{name}"
    sandbox.namespaces.append(ns)  # removed with the sandbox, should a test fail half-way
    sandbox.dir.chmod(0o711)  # an unprivileged container's root reaches its rootfs through it
    d = lxc.LxcL1(sandbox.dir / "l1")
    o = op(name, netns=ns, port=f"irisp-{name}", l1_ifname=f"iris1-{name}", **kw)
    d.prepare(o)
    nl.ensure_veth(f"irisp-{name}", sandbox.netns("l0"), f"iris1-{name}", ns)
    nl.ensure_addr(ns, f"iris1-{name}", o.address)
    d.start(o)
    return d, o


def _in(d: lxc.LxcL1, name: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(d.exec_cmd(name, "sh", "-c", script).full_argv(), capture_output=True, text=True,
                          timeout=60)


def _mounts_under(path: Path) -> list[str]:
    return [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split()[4].startswith(str(path))]


def _assert_nothing_left(d: lxc.LxcL1, name: str, ns: str) -> None:
    assert lxc.cgroup_dirs(ns) == [] and d.list() == {} and not (d.lxcpath / name).exists()
    assert _mounts_under(d.dir) == [] and d.slot(name) is None
    assert not [p for p in d.dir.glob(f"{name}*")]
    assert str(d.dir) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


@needs_lxc
def test_lxc_l1_runs_in_the_wired_namespace_with_its_cgroups_and_leaves_nothing(sandbox):
    d, o = _lxc_l1(sandbox, "lx", cpus=1, memory_mb=64, ssh_key="ssh-ed25519 AAAA k")
    ns = o.netns
    try:
        info = d.list()["lx"]
        assert info["running"] and matches(o, info)
        cg = {p.parent.name: p for p in lxc.cgroup_dirs(ns) if p.name == ns}
        assert int((cg["memory"] / "memory.limit_in_bytes").read_text()) == 64 << 20
        assert int((cg["cpu"] / "cpu.cfs_quota_us").read_text()) == 100_000
        assert int((cg["pids"] / "pids.max").read_text()) == lxc.PIDS_MAX
        assert sorted(_in(d, "lx", "ls /sys/class/net").stdout.split()) == ["iris1-lx", "lo"]
        assert _in(d, "lx", "cat /root/.ssh/authorized_keys").stdout.strip() == "ssh-ed25519 AAAA k"
        assert "10.0.101.21/24" in _in(d, "lx", "ip -4 addr show iris1-lx").stdout
        # root of its own NIC (as an IaaS host needs: bridges, VLANs), not of the host's
        assert _in(d, "lx", "ip link add irisbr0 type bridge && ip link set irisbr0 up").returncode == 0
        # no IaaS hypervisor stack in the busybox rootfs: no /dev/net/tun either
        assert "no such file" in _in(d, "lx", "cat /dev/net/tun").stderr.lower()
        assert _in(d, "lx", "mkdir /sys/fs/cgroup/memory/vm1 && rmdir /sys/fs/cgroup/memory/vm1").returncode == 0
        d.start(o)  # idempotent: started again from scratch, still one container
        assert d.running("lx")
    finally:
        d.destroy("lx")
    _assert_nothing_left(d, "lx", ns)
    assert nl.netns_exists(ns)  # the namespace is the reconciler's (its NIC's), not the container's


@needs_lxc
def test_lxc_l1s_are_unprivileged_each_with_its_own_ids(sandbox):
    d, a = _lxc_l1(sandbox, "ua")
    try:
        _, b = _lxc_l1(sandbox, "ub", address="10.0.101.22/24")
        maps = {}
        for o in (a, b):
            pid = d.init_pid(o.name)
            assert pid
            maps[o.name] = Path(f"/proc/{pid}/uid_map").read_text().split()
            assert maps[o.name] != ["0", "0", "4294967295"]  # not the identity map
            base = int(maps[o.name][1])
            assert maps[o.name] == ["0", str(base), "65536"] and base >= lxc.ID_BASE
            assert Path(f"/proc/{pid}/gid_map").read_text().split() == maps[o.name]
            # a file the L1's root makes is owned on the L0 by BASE, not by the L0's root
            assert _in(d, o.name, "echo x > /root/made && id -u").stdout.strip() == "0"
            st = (Path(f"/proc/{pid}/root") / "root" / "made").stat()
            assert (st.st_uid, st.st_gid) == (base, base)
            for f in ("", "bin/busybox", "root/.ssh/authorized_keys"):  # the rootfs, and what the driver wrote
                assert (Path(f"/proc/{pid}/root") / f).stat().st_uid == base
            # the L1's user namespace owns its network namespace
            assert (Path(f"/proc/{pid}/ns/user").stat().st_ino
                    != Path("/proc/self/ns/user").stat().st_ino)
        assert maps["ua"][1] != maps["ub"][1]
        # a slot freed is the smallest again: ub keeps its own while ua is made again
        d.destroy("ua")
        d, a = _lxc_l1(sandbox, "ua")
        assert Path(f"/proc/{d.init_pid('ua')}/uid_map").read_text().split() == maps["ua"]
    finally:
        d.destroy("ua")
        d.destroy("ub")
    for o in (a, b):
        _assert_nothing_left(d, o.name, o.netns)


@needs_lxc
def test_lxc_disk_gb_is_enforced(sandbox):
    d, o = _lxc_l1(sandbox, "dk", disk_gb=1)
    try:
        img = d.lxcpath / "dk" / "disk.img"
        assert img.stat().st_size == 1 << 30 and img.stat().st_blocks * 512 < 16 << 20  # sparse
        # fill most of it without writing (fallocate), then write past the end
        p = _in(d, "dk", "fallocate -l 900M /fill && dd if=/dev/zero of=/more bs=1M count=200 && sync")
        assert p.returncode != 0 and "No space left on device" in p.stderr, p.stderr
        written = int(_in(d, "dk", "stat -c %s /more").stdout)
        assert 50 << 20 < written < 200 << 20  # what was left of the GiB, and no more
    finally:
        d.destroy("dk")
    _assert_nothing_left(d, "dk", o.netns)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (the escape probe)")
def test_the_escape_probe_sees_an_escape_where_there_is_one(sandbox):
    """The probe's own check: as the L0's root (a private mount and network namespace, nothing
    else confined) the escapes it looks for are found."""
    binary = escapes.probe_binary(sandbox.dir)
    out = subprocess.run(["unshare", "-m", "-n", str(binary), *escapes.probe_args(pids=[os.getpid()])],
                         capture_output=True, text=True, timeout=60).stdout
    got = {a.name: a for a in escapes.parse(out)}
    assert {n for n in ("remount_sys_rw", "setns_mnt", "setns_net", "write_core_pattern", "cgroup_release_agent")
            if got[n].escaped} == {"remount_sys_rw", "setns_mnt", "setns_net", "write_core_pattern",
                                   "cgroup_release_agent"}, got


@needs_lxc
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (the escape probe)")
def test_no_escape_works_from_an_lxc_l1(sandbox):
    d, o = _lxc_l1(sandbox, "es")
    l0 = sandbox.netns("l0")
    # a control-network service on the L0 side, and the L1 given an address in its subnet
    sandbox.runner.run(cmd("ip", "link", "add", "irisctl0", "type", "bridge", netns=l0))
    nl.ensure_addr(l0, "irisctl0", "198.18.250.1/24")
    nl.set_link(l0, "irisctl0", up=True)
    nl.ensure_addr(o.netns, "iris1-es", "198.18.250.201/24")
    srv = socket_in_netns(l0)
    try:
        srv.bind(("198.18.250.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        monitor = proc.read_pid(d.dir / "es.pid")
        args = escapes.probe_args(pids=[os.getpid(), monitor or 1], tcp=[("198.18.250.1", port)],
                                  icmp=["198.18.250.1"])
        attempts = escapes.probe_lxc(d, "es", sandbox.dir, args)
        assert [a.name for a in attempts] == list(escapes.NAMES)
        assert [a for a in attempts if a.escaped] == [], attempts
        # the L1's root does get EPERM-class refusals, not "not there": the probe did reach the kernel
        got = {a.name: a.detail for a in attempts}
        assert got["mknod_host_disk"].startswith("errno 1:") and got["load_kernel_module"].startswith("errno 1:")
        assert got["open_by_handle_at"].startswith("errno 1:")
    finally:
        srv.close()
        d.destroy("es")
    _assert_nothing_left(d, "es", o.netns)


def test_kvm_base_initrd_is_built_once_from_debian_files(tmp_path):
    try:
        kvm.find_kernel()
    except L1Failed as e:
        pytest.skip(str(e))
    d = kvm.KvmL1(tmp_path)
    p = d.base_initrd()
    data = gzip.decompress(p.read_bytes())
    assert b"virtio_net.ko" in data and b"8021q.ko" in data and b"IRIS-L1-READY" in data
    assert d.base_initrd() == p and p.stat().st_mtime == d.base_initrd().stat().st_mtime


# ---------------------------------------------------------------- kvm: confined, its port shaped

def _kvm_missing() -> str | None:
    if shutil.which(kvm.QEMU) is None or shutil.which("setpriv") is None:
        return "needs qemu-system-x86 and setpriv"
    try:
        kvm.find_kernel()
    except L1Failed as e:
        return str(e)
    return None


def _guest_ready(d: kvm.KvmL1, name: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if d.console(name, "true", 3)[0] == 0:
                return
        except (L1Failed, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _goodput_mbit(d: kvm.KvmL1, name: str, rx_ns: str, ip: str, seconds: float = 2.0) -> float:
    """TCP goodput from the guest (busybox nc) to a receiver in ``rx_ns``, over ``seconds``
    after the first byte."""
    srv = socket_in_netns(rx_ns)
    srv.bind((ip, 5201))
    srv.listen(1)
    srv.settimeout(30)
    got: list[float] = []

    def receive() -> None:
        conn, _ = srv.accept()
        conn.settimeout(5)
        n, t0 = 0, None
        with conn:
            while True:
                try:
                    b = conn.recv(1 << 16)
                except TimeoutError:
                    break
                if not b:
                    break
                t0 = t0 or time.monotonic()
                if time.monotonic() - t0 > seconds:
                    break
                n += len(b)
        got.append(n * 8 / seconds / 1e6)

    th = threading.Thread(target=receive)
    th.start()
    try:
        d.console(name, f"timeout {int(seconds) + 2} sh -c 'dd if=/dev/zero bs=16k count=100000 2>/dev/null "
                        f"| nc {ip} 5201'", timeout=seconds + 20)
    finally:
        th.join(30)
        srv.close()
    return got[0]


@pytest.mark.skipif(_kvm_missing() is not None, reason=_kvm_missing() or "")
def test_kvm_l1_runs_confined_and_its_port_is_shaped_across_a_restart(sandbox):
    ns = sandbox.netns("h")
    inst = sandbox.ovs_in(ns)
    vm_ns, rx_ns = sandbox.netns("kv"), sandbox.netns("rx")
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", warmup=False,
                                   l1_dir=str(sandbox.dir / "l1")))
    vm = op("kv", kind="kvm", netns=vm_ns, address="10.5.0.2/24", cpus=1, memory_mb=128)
    rx = op("rx", kind="netns", netns=rx_ns, address="10.5.0.3/24")
    bridge = BridgeOp(name="irisb-a", owner="r1", tenant="a")

    def state(rate: float | None) -> DesiredState:
        shape = [ShapeOp(port=vm.port, rate_mbit=rate, owner="r1", tenant="a")] if rate else []
        return DesiredState(ops=[bridge, vm, rx, *shape])

    d = host.l1_drivers[L1Kind.KVM]
    assert isinstance(d, kvm.KvmL1)
    unit = vm.netns  # its cgroup and run directory are named after its namespace
    assert unit
    try:
        host.apply(state(None))
        pid = d._pid("kv")
        assert pid and d.running("kv") and d.unit("kv") == unit
        # unprivileged, its own user, sandboxed, no capability, in its cgroup with the flavor's limits
        st = proc.status(pid)
        uid = d.uid("kv")
        assert uid and uid >= kvm.UID_BASE and st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split()[0] == str(uid)
        assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1" and int(st["CapBnd"], 16) == 0
        assert cgroup.read(unit) == kvm.limits(vm) == cgroup.Limits(1, (128 + kvm.QEMU_OVERHEAD_MB) << 20,
                                                                   kvm.PIDS_BASE + 1)
        tasks = {int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()}
        assert pid in cgroup.pids(unit) and tasks <= set(_cgroup_tasks(unit))
        _guest_ready(d, "kv")
        # the limits hold: QEMU's memory (the guest's RAM with it) is charged to the group, which
        # has the CFS quota on
        anon = int(proc.status(pid)["RssAnon"].split()[0]) << 10
        assert anon > 64 << 20 and int(Path(f"/sys/fs/cgroup/memory/{unit}/memory.usage_in_bytes").read_text()) >= anon
        assert int(Path(f"/sys/fs/cgroup/memory/{unit}/memory.max_usage_in_bytes").read_text()) <= kvm.limits(
            vm).memory_bytes
        assert int(Path(f"/sys/fs/cgroup/cpu/{unit}/cpu.stat").read_text().split()[1]) > 0  # nr_periods: CFS quota on

        # the port: unshaped, the guest sends well above the limit; shaped, it is held to it, and
        # still after QEMU dies and the reconciler starts the L1 again
        base = _goodput_mbit(d, "kv", rx_ns, "10.5.0.3")
        assert base > 3 * 5, base
        host.apply(state(5))
        assert tc.htb_rates(vm_ns, vm.l1_ifname) == {tc.PORT_CLASS: 5.0}
        shaped = _goodput_mbit(d, "kv", rx_ns, "10.5.0.3")
        assert 3.5 < shaped <= 5.25, (base, shaped)
        # QEMU killed: the same L1 is started again, as a machine restarts (its run directory,
        # where a disk would be, its user), not destroyed and made anew
        os.kill(pid, signal.SIGKILL)
        assert [str(a) for a in host.plan(state(5))] == ["prepare kvm L1 kv", "start kvm L1 kv"]
        host.apply(state(5))
        assert host.plan(state(5)) == []
        assert d.uid("kv") == uid and d._pid("kv") != pid
        _guest_ready(d, "kv")
        again = _goodput_mbit(d, "kv", rx_ns, "10.5.0.3")
        assert 3.5 < again <= 5.25, (base, shaped, again)
        pid = d._pid("kv")
    finally:
        host.apply(DesiredState())
    assert not alive(pid) and not cgroup.exists(unit) and not (kvm.RUN_ROOT / unit).exists()
    assert sorted(p.name for p in d.dir.glob("kv*")) == [] and not nl.netns_exists(vm_ns)


def _cgroup_tasks(unit: str) -> list[int]:
    """Every thread in the group's cpu hierarchy (v1 ``tasks``)."""
    return [int(x) for x in Path(f"/sys/fs/cgroup/cpu/{unit}/tasks").read_text().split()]
