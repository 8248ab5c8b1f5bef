"""One two-DC lab shared by the lab tests of a session, under a name unique to the session.

The lab is torn down in a ``finally``, and a last check asserts that nothing of it remains
(namespaces, run directory, processes), so a failed test cannot leave the machine dirty.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from iris_haas.hostd import images
from iris_haas.lab import realizer, tenants
from iris_haas.linux import netlink as nl
from iris_haas.linux.netns import processes_in
from iris_haas.linux.proc import alive


def _lab_requirements() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root"
    for tool in ("ovs-vswitchd", "ovsdb-server", "iperf3", "arping", "ethtool", "nsenter"):
        if shutil.which(tool) is None:
            return f"lab tests need {tool}"
    return None


def pytest_collection_modifyitems(config, items):
    why = _lab_requirements()
    for item in items:
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def debian_image():
    """The lxc OS image (Debian minbase with sshd), built once into the lab's image root and kept
    there, keyed by its inputs: a later session (or CI run) finds it and builds nothing."""
    spec = images.inputs(mirror=images.apt_mirror())
    rootfs, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), spec)
    return rootfs


@pytest.fixture(scope="session")
def debian_disk(debian_image):
    """The kvm OS image of the same inputs: that rootfs as an ext4 disk, built once and kept."""
    spec = images.inputs(kind="kvm", mirror=images.apt_mirror())
    disk, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), spec)
    return disk


@pytest.fixture(scope="session")
def iaas_image():
    """The lxc OS image with the IaaS's hypervisor stack (Open vSwitch, QEMU), built once and kept."""
    spec = images.inputs(packages=[*images.PACKAGES, *images.IAAS_STACK], mirror=images.apt_mirror())
    rootfs, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), spec)
    return rootfs


def assert_gone(name: str) -> None:
    assert realizer.leftovers(name) == []


@pytest.fixture(scope="session")
def lab():
    realizer.sweep_stale()  # labs of earlier runs that were killed before their teardown
    name = "t" + secrets.token_hex(3)
    lb = realizer.load(None, name=name)
    pids: list[int] = []
    lab_links: set[str] = set()
    try:
        realizer.up(lb, ephemeral=True)
        yield lb
    finally:
        nss = realizer.lab_namespaces(name)
        pids = processes_in(nss)
        lab_links = {ln for n in nss for ln in nl.links(n) if ln.startswith("iris")}
        removed = realizer.down(name)
    assert_gone(name)
    assert [p for p in pids if alive(p)] == [], "processes of the lab still running"
    assert removed["moved_to_host"] == [], "devices of the lab were handed to the host"
    assert lab_links & set(nl.links(None)) == set(), "links of the lab on the host"


class Tenants:
    """The L1s (and volumes) a test wants, planned by the planning layer; pushes every host's
    desired state through the agents."""

    def __init__(self, lab):
        self.lab = lab
        self.l1s: list[tenants.L1] = []
        self.volumes: list[tenants.Volume] = []
        self.limits: dict[str, float] = {}

    def set(self, l1s, limits=None, volumes=()):
        self.l1s = list(l1s)
        self.limits = dict(limits or {})
        self.volumes = list(volumes)
        return self.push()

    def push(self):
        res = tenants.push(self.lab, tenants.desired(self.lab.topo, self.l1s, self.volumes, self.limits))
        assert all(r["in_sync"] for r in res.values()), res
        return res


@pytest.fixture(name="tenants")
def tenants_fixture(lab):
    """Each test starts from a lab without L1 ports and leaves it so."""
    realizer.ensure_agents(lab)  # an earlier test may have failed with an agent stopped
    t = Tenants(lab)
    t.set([])
    try:
        yield t
    finally:
        t.set([])
