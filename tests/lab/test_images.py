"""An lxc L1 booted from an OS image (Debian with sshd) is a host the IaaS logs into.

From the IaaS management host, over the tenant's management VLAN: ``ssh`` with the tenant's key
as root runs a command and answers with the L1's hostname; another key is refused. The release
leaves nothing of the L1, and the image stays where it was, unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from iris_haas.hostd import images
from iris_haas.hostd.l1 import kvm as kvmdrv
from iris_haas.lab import probe, uservm
from iris_haas.lab.tenants import L1, realize
from iris_haas.linux import netlink as nl
from tests.lab.test_compute import _in_l1, _leftovers
from tests.lab.test_compute_kvm import _kvm_missing

pytestmark = pytest.mark.lab


def _ssh(ns: str, key: Path, ip: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(uservm.ssh_cmd(ns, key, ip, command).full_argv(), capture_output=True, text=True, timeout=30)


@pytest.fixture
def image_lab(lab, tenants):
    realize(lab, [])
    nl.flush_neighbours(lab.ns("amgmt"), "eth0")
    try:
        yield lab
    finally:
        realize(lab, [])


def test_lxc_l1_from_the_debian_image_takes_the_tenants_ssh_key(image_lab, debian_image, tmp_path):
    lab = image_lab
    key, pub = uservm.keypair(tmp_path, "tenant-a")
    other, _ = uservm.keypair(tmp_path, "tenant-b")
    before = (debian_image.parent / "image.json").read_text(), sorted(p.name for p in debian_image.iterdir())
    n = L1("a", "l0-1", "dn1", "lxc", "10.0.101.23/24", cpus=1, memory_mb=256, ssh_key=pub, image=str(debian_image))
    t0 = time.monotonic()
    res = realize(lab, [n])
    assert all(r["in_sync"] for r in res.values()), res
    assert probe.reachable(lab.ns("amgmt"), "10.0.101.23", timeout=10)
    got = uservm.ssh_when_up(lab.ns("amgmt"), key, "10.0.101.23", timeout=20, every=0.2)  # sshd makes its keys first
    print(f"\nL1 in sync and ssh answering {time.monotonic() - t0:.1f} s after the desired state was sent")
    assert got.stdout.strip() == n.name
    # a Debian host, root, its management address on its one NIC
    out = _ssh(lab.ns("amgmt"), key, "10.0.101.23", "id -u; . /etc/os-release; echo $ID $VERSION_CODENAME; "
               f"ip -4 -o addr show dev {n.nic()}")
    lines = out.stdout.splitlines()
    assert lines[:2] == ["0", "debian bookworm"], out
    assert "10.0.101.23/24" in lines[2], out
    # its host keys are its own, made in the L1 (the image has none)
    assert not list((debian_image / "etc" / "ssh").glob("ssh_host_*"))
    assert _in_l1(lab, n, "test", "-s", "/etc/ssh/ssh_host_ed25519_key").returncode == 0
    # another tenant's key is refused
    refused = _ssh(lab.ns("amgmt"), other, "10.0.101.23", "hostname")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused

    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    assert _leftovers(lab, n) == []
    assert probe.ping(lab.ns("amgmt"), "10.0.101.23", count=1) == 0
    # the image stays, as it was
    assert images.cached(debian_image.parent.parent, images.inputs(mirror=images.apt_mirror())) == debian_image
    assert ((debian_image.parent / "image.json").read_text(), sorted(p.name for p in debian_image.iterdir())) == before


@pytest.mark.skipif(_kvm_missing() is not None, reason=_kvm_missing() or "")
def test_kvm_l1_from_the_debian_disk_takes_the_tenants_ssh_key(image_lab, debian_disk, tmp_path):
    """The same for a kvm L1 (TCG here): the guest boots the image's disk through a layer of its
    own; the boot time, until ssh answers, is printed."""
    lab = image_lab
    key, pub = uservm.keypair(tmp_path, "tenant-a")
    other, _ = uservm.keypair(tmp_path, "tenant-b")
    size = debian_disk.stat().st_size, debian_disk.stat().st_mtime
    n = L1("a", "l0-2", "dk1", "kvm", "10.0.101.25/24", cpus=1, memory_mb=256, ssh_key=pub, image=str(debian_disk))
    t0 = time.monotonic()
    res = realize(lab, [n])
    assert all(r["in_sync"] for r in res.values()), res
    got = uservm.ssh_when_up(lab.ns("amgmt"), key, "10.0.101.25", timeout=120, every=0.5)
    print(f"\nkvm L1 booted and ssh answering {time.monotonic() - t0:.1f} s after the desired state was sent")
    assert got.stdout.strip() == n.name
    out = _ssh(lab.ns("amgmt"), key, "10.0.101.25", ". /etc/os-release; echo $ID $VERSION_CODENAME; "
               "ip -4 -o addr show dev eth0; findmnt -n -o SOURCE /")
    assert out.stdout.splitlines()[0] == "debian bookworm", out
    assert "10.0.101.25/24" in out.stdout and "/dev/vda" in out.stdout, out
    refused = _ssh(lab.ns("amgmt"), other, "10.0.101.25", "hostname")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused

    # a burst of disk I/O: QEMU's threads stay under the L1's pids limit (past it QEMU cannot make
    # a thread and aborts)
    pidfile = kvmdrv.RUN_ROOT / lab.ns(n.name) / "pid"
    pid = int(pidfile.read_text())
    burst = subprocess.Popen(uservm.ssh_cmd(lab.ns("amgmt"), key, "10.0.101.25",
                                            "for i in $(seq 48); do dd if=/dev/zero of=/var/tmp/f$i bs=64k count=32 "
                                            "oflag=direct 2>/dev/null & done; wait; echo kept > /root/mark; sync").full_argv())
    peak = 0
    while burst.poll() is None:
        peak = max(peak, len(list(Path(f"/proc/{pid}/task").iterdir())))
        time.sleep(0.02)
    assert burst.returncode == 0 and int(pidfile.read_text()) == pid, burst.returncode
    print(f"\nQEMU's threads under the burst: at most {peak} (pids limit {kvmdrv.PIDS_BASE + n.cpus})")
    assert 3 < peak < kvmdrv.PIDS_BASE + n.cpus
    # QEMU killed: the agent starts the L1 again on its own disk, as a machine restarts
    os.kill(pid, signal.SIGKILL)
    res = realize(lab, [n])
    assert all(r["in_sync"] for r in res.values()), res
    uservm.ssh_when_up(lab.ns("amgmt"), key, "10.0.101.25", timeout=120, every=0.5)
    assert int(pidfile.read_text()) != pid
    assert _ssh(lab.ns("amgmt"), key, "10.0.101.25", "cat /root/mark").stdout.strip() == "kept"
    # its console of both boots is kept
    assert (kvmdrv.RUN_ROOT / lab.ns(n.name) / "console.log").read_text(errors="replace").count("IRIS-L1-READY") == 2

    res = realize(lab, [])
    assert all(r["in_sync"] for r in res.values()), res
    assert _leftovers(lab, n) == []
    assert not (kvmdrv.RUN_ROOT / lab.ns(n.name)).exists()  # its disk layer went with it
    assert (debian_disk.stat().st_size, debian_disk.stat().st_mtime) == size  # the image was only read


def test_an_image_outside_the_agents_image_roots_is_refused(image_lab, tmp_path):
    lab = image_lab
    n = L1("a", "l0-1", "dn2", "lxc", "10.0.101.24/24", image=str(tmp_path))
    res = realize(lab, [n])
    assert not res["l0-1"]["in_sync"]
    assert [r for r in res["l0-1"]["refused"] if "is not under this host's image roots" in r], res["l0-1"]
    assert not nl.netns_exists(lab.ns(n.name))


def test_iris_image_build_finds_the_cached_images(debian_image, debian_disk):
    """The same inputs are built once: `iris image build` answers the session's images at once."""
    from typer.testing import CliRunner

    from iris_haas.cli.main import app

    for kind, want in (("lxc", debian_image), ("kvm", debian_disk)):
        t0 = time.monotonic()
        r = CliRunner().invoke(app, ["image", "build", "--kind", kind, "--into", str(want.parent.parent), "-f", "json"])
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert (got["path"], got["built"], got["digest"]) == (str(want), False, want.parent.name), got
        assert time.monotonic() - t0 < 5
