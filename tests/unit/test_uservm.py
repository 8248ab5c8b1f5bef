"""The user-VM deploy of the lab's IaaS stand-in, as data: QEMU's command line, the script the
host runs, the guest's initramfs, the IaaS stack's devices of an lxc L1."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from iris_haas.contract import names
from iris_haas.hostd import images
from iris_haas.hostd.l1 import kvm
from iris_haas.lab import uservm

pytestmark = pytest.mark.unit

HOST = uservm.HostSsh("iris-x-amgmt", Path("/k"), "10.0.101.51", workdir="/var/lib/iris-uvm",
                      ovs_db="unix:/run/iris-ovs/db.sock")


def test_qemu_runs_tcg_on_the_vms_tap_with_its_mac_and_address_and_qmp():
    a = uservm.qemu_argv("uvm1", kernel="/t/k", initrd="/t/i", vmdir="/d", tap="irisu-uvm1", mac="52:54:00:00:00:01",
                         address="10.7.0.31/24")
    s = " ".join(a)
    assert a[0] == "qemu-system-x86_64" and "-accel tcg,tb-size=32" in s and "-kernel /t/k -initrd /t/i" in s
    assert "tap,id=n0,ifname=irisu-uvm1,script=no,downscript=no" in a
    assert any(x.startswith("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,") for x in a)
    assert "iris.addr=10.7.0.31/24" in s and "-qmp unix:/d/qmp,server=on,wait=off" in s
    assert "-pidfile /d/pid -daemonize" in s and "-incoming" not in a
    # a named CPU model, the same on every host, whose whole state QEMU migrates (not "max")
    assert "-cpu qemu64" in s
    assert "-d guest_errors -D /d/guest-errors.log" in s  # the daemon keeps its stderr (qemu.log)
    # ttyS0 the console's file, ttyS1 the guest's shell on a unix socket (UserVm.shell)
    assert "-serial file:/d/console -serial unix:/d/shell,server=on,wait=off" in s
    assert uservm.qemu_argv("v", kernel="k", initrd="i", vmdir="d", tap="t", mac="m", address="a",
                            incoming="tcp:0:4444")[-2:] == ["-incoming", "tcp:0:4444"]


def test_the_deploy_script_puts_the_tap_on_the_guest_vlan_of_the_hosts_bridge_then_starts_qemu():
    script = uservm.deploy_script(HOST, "uvm1", vlan=733, owner="iaas:a", qemu=["qemu-system-x86_64", "-name", "x y"])
    lines = script.splitlines()
    assert lines[:4] == ["set -e", "mkdir -p /var/lib/iris-uvm/iris-uvm1", "ip tuntap add dev irisu-uvm1 mode tap",
                         "ip link set irisu-uvm1 up"]
    assert lines[4].startswith("ovs-vsctl --db=unix:/run/iris-ovs/db.sock")
    assert "--may-exist add-port iris-cloudbr0 irisu-uvm1" in lines[4] and "tag=733" in lines[4]
    assert "vlan_mode=access" in lines[4] and "iris-owner" in lines[4] and "iaas:a" in lines[4]
    assert lines[5] == "qemu-system-x86_64 -name 'x y' 2>>/var/lib/iris-uvm/iris-uvm1/qemu.log" and lines[6] == "cat /var/lib/iris-uvm/iris-uvm1/pid"


def test_names_of_what_a_deploy_makes_carry_the_prefix_and_fit():
    assert uservm.tap_name("uvm1") == "irisu-uvm1" != uservm.tap_name("uvm2")
    with pytest.raises(names.NameTooLong):  # refused, never cut short
        uservm.tap_name("a-rather-long-user-vm-name")


def test_the_guest_initramfs_has_busybox_init_virtio_net_and_iperf3_with_its_libraries(tmp_path):
    try:
        kvm.find_kernel()
    except kvm.L1Failed:
        pytest.skip("no Debian kernel on this machine")
    p = uservm.guest_initrd(tmp_path)
    assert uservm.guest_initrd(tmp_path) == p  # built once
    data = gzip.decompress(p.read_bytes())
    for name in (b"init\0", b"bin/busybox\0", b"virtio_net.ko\0", b"etc/iris/modules\0"):
        assert name in data
    assert b"iris.addr=" in data and b"/dev/ttyS1" in data
    tools = uservm.binary_files(["iperf3"])
    assert "usr/bin/iperf3" in tools and "lib64/ld-linux-x86-64.so.2" in tools
    assert any("libiperf.so" in f for f in tools) and any(f.endswith("/libc.so.6") for f in tools)
    for f, content in tools.items():
        assert f.encode() + b"\0" in data and content[:4] == b"\x7fELF"


def test_a_tool_missing_on_this_machine_is_refused():
    with pytest.raises(uservm.DeployFailed, match="not installed"):
        uservm.binary_files(["iris-no-such-tool"])


def test_only_an_image_with_the_iaas_stack_gives_an_lxc_l1_its_devices(tmp_path):
    assert not images.has_iaas_stack(tmp_path)
    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "usr" / "sbin" / "ovs-vswitchd").touch()
    assert images.has_iaas_stack(tmp_path)
