"""Storage through the two-DC lab: a volume in a pool on an L0, exported by userspace NFS
(nfs-ganesha) inside a namespace whose only NIC is on the tenant's overlay (VLAN 101), used from
the tenant's side with a userspace client (libnfs), real bytes over the GRE trunk.

The storage node's agent realizes the volume ops like any other op (PUT /v1/desired). Each test
releases everything it made; a last sweep stops servers and unmounts volumes under the test's pool
even when a test failed half-way, then the pool directory goes."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from iris_haas.contract.ops import VolumeOp
from iris_haas.hostd import storage
from iris_haas.lab import probe, realizer, tenants
from iris_haas.lab.tenants import L1, Volume
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import SubprocessRunner

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("ganesha.nfsd", "rpcbind", "nfs-cp", "mkfs.ext4")),
                       reason="needs nfs-ganesha, rpcbind, libnfs-utils, e2fsprogs (scripts/install-deps.sh)"),
]

NODE = "l0-4"  # the storage node: holds the pool
EXPORT_IP = "10.0.101.50"  # the same address in both tenants' subnets (10.0.101.0/24, VLAN 101)
MIB = 1 << 20


def ip(n: int = 0) -> str:
    return str(ipaddress.ip_address(EXPORT_IP) + n)


class Store:
    """The L1s and volumes a test wants, planned; pushes every host's desired state."""

    def __init__(self, lab, pushed, pool: Path):
        self.lab, self.pushed, self.pool = lab, pushed, pool  # pushed: the tenants fixture
        self.specs: dict[str, Volume] = {}

    # one export (namespace, address, server) per volume: the n-th at EXPORT_IP + n
    def volume(self, tenant: str, n: int = 0, size_mb: int = 16, keep: bool = False) -> VolumeOp:
        """The volume as the planning layer puts it on the storage node."""
        spec = Volume(tenant, NODE, f"iris-{self.lab.name}-{tenant}{n}", str(self.pool), size_mb=size_mb, keep=keep,
                      export=f"{tenant}vol{n or ''}", address=f"{ip(n)}/24")
        self.specs[spec.name] = spec
        [op] = [o for o in tenants.desired(self.lab.topo, volumes=[spec])[NODE].ops if isinstance(o, VolumeOp)]
        return op

    def set(self, l1s, volumes):
        res = self.pushed.set(l1s, volumes=[self.specs[v.name] for v in volumes])
        # every test puts an export at the same address on a new MAC: the IaaS hosts forget the
        # old one (the server's gratuitous ARP may cross the overlay before the far end is built)
        for t in ("a", "b"):
            nl.flush_neighbours(self.lab.ns(f"{t}mgmt"), "eth0")
        return res

    def report(self) -> list[dict]:
        with self.lab.client(NODE) as c:
            return [o for o in c.state()["observed"] if o["op"] == "volume"]


def sweep_stale_pools() -> None:
    """Pools of lab sessions killed before their teardown (their lab's run directory is gone,
    and its namespaces with the servers): unmount and remove them."""
    for d in Path("/var/tmp").glob("iris-t*-pool-*"):
        if d.is_dir() and not realizer.rundir(d.name.split("-")[1]).exists():
            storage.sweep_pool(d, SubprocessRunner())
            if not [m for m in storage.mountpoints() if m.startswith(str(d) + "/")]:
                shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def store(lab, tenants):  # noqa: F811 - the fixture
    sweep_stale_pools()
    pool = Path(tempfile.mkdtemp(prefix=f"iris-{lab.name}-pool-", dir="/var/tmp"))
    s = Store(lab, tenants, pool)
    try:
        yield s
    finally:
        try:
            s.set([], [])  # the agent releases every volume (wipes, or keeps the image)
        finally:
            storage.sweep_pool(pool, SubprocessRunner())
            shutil.rmtree(pool, ignore_errors=True)
    assert not [m for m in storage.mountpoints() if m.startswith(str(pool))]
    loops = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
                           capture_output=True, text=True).stdout
    assert str(pool) not in loops


def nfs_cp(lab, node: str, src: str, dst: str) -> subprocess.CompletedProcess:
    return subprocess.run(storage.nfs_cp_cmd(lab.ns(node), src, dst).full_argv(),
                          capture_output=True, text=True, timeout=120)


def nfs_ls(lab, node: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(storage.nfs_ls_cmd(lab.ns(node), url).full_argv(), capture_output=True, text=True,
                          timeout=30)


def url(v: VolumeOp, path: str = "") -> str:
    return storage.nfs_url(storage.server_ip(v), storage.pseudo_path(v), path)


def test_storage_iaas_host_and_l1_write_and_read_the_same_bytes_over_the_overlay(lab, store, tmp_path):
    v = store.volume("a")
    store.set([L1("a", "l0-1", "a1", vlan=101, address="10.0.101.21/24")], [v])
    assert probe.reachable(lab.ns("amgmt"), EXPORT_IP)
    [rep] = store.report()
    assert rep["serving"] and rep["mounted"] and rep["bytes"] == 16 * MIB and rep["tenant"] == "a"

    # the IaaS management server (the IaaS DC, across the GRE trunk) writes 2 MiB and reads them back
    data = os.urandom(2 * MIB)
    (tmp_path / "disk.img").write_bytes(data)
    r = nfs_cp(lab, "amgmt", str(tmp_path / "disk.img"), url(v, "disk.img"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = nfs_cp(lab, "amgmt", url(v, "disk.img"), str(tmp_path / "back.img"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "back.img").read_bytes() == data
    # an L1 of the same tenant, on another L0 (over the tenant's mesh), reads the same bytes
    r = nfs_cp(lab, "a1", url(v, "disk.img"), str(tmp_path / "l1.img"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "l1.img").read_bytes() == data
    # and they are really on the volume, in the pool on the storage node
    assert (store.pool / f"{v.name}.d" / "mnt" / "disk.img").read_bytes() == data
    assert "disk.img" in nfs_ls(lab, "a1", url(v)).stdout


def test_storage_export_unreachable_from_another_tenant_and_the_control_network(lab, store):
    v = store.volume("a")
    # tenant b: same VLAN, same subnet; its L1 even sits on the storage node itself
    store.set([L1("b", NODE, "b1", vlan=101, address="10.0.101.21/24")], [v])
    assert probe.reachable(lab.ns("amgmt"), EXPORT_IP)
    assert probe.reachable(lab.ns("b1"), "10.0.101.10")  # b's overlay works: it is only a's export it lacks
    ports = (storage.NFS_PORT, storage.MNT_PORT, storage.RPCBIND_PORT)
    assert all(probe.tcp_connect(lab.ns("amgmt"), EXPORT_IP, p) for p in ports)  # the service is up

    # every probe at once (each one that fails does so by a timeout)
    cut_off = [(n, EXPORT_IP) for n in ("bmgmt", "b1")]
    # the control network (the coordinator's seat), the storage node itself and the HaaS gateway:
    # no route to the tenant subnet; and nothing of the server listens on the node's own addresses
    cut_off += [(n, EXPORT_IP) for n in ("ctl", NODE, "hgw")]
    cut_off += [("ctl", lab.topo.ctl_ip(NODE)), ("ctl", lab.topo.fab_ip(NODE)), (NODE, lab.topo.ctl_ip(NODE))]
    with ThreadPoolExecutor(16) as ex:
        conns = {(n, a, p): ex.submit(probe.tcp_connect, lab.ns(n), a, p, 1.0) for n, a in cut_off for p in ports}
        pings = {n: ex.submit(probe.ping, lab.ns(n), EXPORT_IP, 2) for n in ("bmgmt", "b1")}
        lists = {n: ex.submit(nfs_ls, lab, n, url(v)) for n in ("bmgmt", "b1", "ctl")}
        arp = ex.submit(probe.arping, lab.ns("b1"), "iris1-b1", EXPORT_IP, 2, 2)
        assert [k for k, f in conns.items() if f.result()] == []
        assert {n: f.result() for n, f in pings.items()} == {"bmgmt": 0, "b1": 0}
        assert [n for n, f in lists.items() if f.result().returncode == 0] == []
        assert arp.result() == []
    # the export's namespace holds nothing but its tenant NIC
    assert sorted(nl.links(lab.ns("avol"))) == ["iris1-avol", "lo"]


def test_storage_write_past_the_volume_size_fails_cleanly(lab, store, tmp_path):
    v = store.volume("a", size_mb=16)
    store.set([], [v])
    assert probe.reachable(lab.ns("amgmt"), EXPORT_IP)
    small = os.urandom(256 << 10)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(os.urandom(24 * MIB))
    assert nfs_cp(lab, "amgmt", str(tmp_path / "small"), url(v, "small")).returncode == 0
    r = nfs_cp(lab, "amgmt", str(tmp_path / "big"), url(v, "big"))
    assert r.returncode != 0, "24 MiB went into a 16 MiB volume"
    assert "write" in (r.stdout + r.stderr).lower()
    # the quota held: the image did not grow, the pool holds nothing else, the server is still up
    assert (store.pool / f"{v.name}.img").stat().st_size == 16 * MIB
    [rep] = store.report()
    assert rep["serving"]
    r = nfs_cp(lab, "amgmt", url(v, "small"), str(tmp_path / "back"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "back").read_bytes() == small


def _holds(path: Path, marker: bytes) -> bool:
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(MIB):
            if marker in tail + chunk:
                return True
            tail = chunk[-len(marker):]
    return False


def test_storage_release_wipes_frees_and_the_next_tenant_reads_nothing_old(lab, store, tmp_path):
    marker = b"IRIS-SECRET-" + secrets.token_hex(16).encode()
    (tmp_path / "secret").write_bytes((marker + b"\n") * (MIB // (len(marker) + 1)))
    va, vk = store.volume("a", 0), store.volume("a", 1, keep=True)
    store.set([], [va, vk])
    assert probe.reachable(lab.ns("amgmt"), EXPORT_IP)
    for v in (va, vk):
        r = nfs_cp(lab, "amgmt", str(tmp_path / "secret"), url(v, "secret"))
        assert r.returncode == 0, r.stdout + r.stderr
    used = sum(f.stat().st_blocks for f in store.pool.glob("*.img")) * 512
    assert used > 2 * MIB

    # release: the wiped volume's image is gone, the kept one stays (and still holds the data:
    # the scan below would find the marker if it were there)
    store.set([], [])
    assert store.report() == []
    assert not (store.pool / f"{va.name}.img").exists()
    assert _holds(store.pool / f"{vk.name}.img", marker)
    assert sorted(p.name for p in store.pool.iterdir()) == [f"{vk.name}.img"]
    (store.pool / f"{vk.name}.img").unlink()  # the kept image is not the next tenant's business
    assert sum(f.stat().st_blocks for f in store.pool.iterdir()) == 0  # capacity back

    # tenant b gets a volume in the same pool, same size, at the same address on its own overlay
    vb = store.volume("b", 0)
    store.set([], [vb])
    assert probe.reachable(lab.ns("bmgmt"), EXPORT_IP)
    ls = nfs_ls(lab, "bmgmt", url(vb))
    assert ls.returncode == 0, ls.stderr
    assert "secret" not in ls.stdout
    assert nfs_cp(lab, "bmgmt", url(vb, "secret"), str(tmp_path / "stolen")).returncode != 0
    # nothing in the pool, b's raw image included, holds a byte pattern of a's data
    for f in store.pool.rglob("*"):
        if f.is_file():
            assert not _holds(f, marker), f
    # and tenant a's old address now answers for b's volume only on b's overlay
    assert nfs_ls(lab, "amgmt", url(va)).returncode != 0
