"""The storage driver against the real kernel: a loop-mounted volume in a pool directory, served by
nfs-ganesha inside a fresh namespace, written and read by libnfs from another namespace.

Each test gets its own pool directory and namespaces, and leaves no mount, loop device, process or
file behind, even on failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from iris_haas.contract.ops import VolumeOp
from iris_haas.hostd import storage
from iris_haas.hostd.context import Context, HostConfig
from iris_haas.hostd.storage import CreateVolume, MountVolume, RegisterVolume, ReleaseVolume, ServeVolume, StopServer
from iris_haas.linux import netlink as nl
from iris_haas.linux.proc import alive, read_pid
from iris_haas.linux.runner import SubprocessRunner

pytestmark = [
    pytest.mark.linux,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("ganesha.nfsd", "rpcbind", "nfs-cp", "mkfs.ext4")),
                       reason="needs nfs-ganesha, rpcbind, libnfs-utils and e2fsprogs (scripts/install-deps.sh)"),
]


# capability numbers (linux/capability.h)
CAPS = {"chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4, "setgid": 6, "setuid": 7,
        "net_bind_service": 10, "net_admin": 12, "sys_module": 16, "sys_admin": 21}


def proc_uid(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def loops_under(pool: Path) -> list[str]:
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(pool) in line]


class StorageHost:
    """The storage part of a host's reconciler, on its own: observe, plan, apply."""

    def __init__(self, registry: Path):
        self.registry = str(registry)
        self.runner = SubprocessRunner()
        self.ctx = Context.of(HostConfig(db="unix:/nonexistent", storage_dir=self.registry), self.runner)

    def plan(self, vols):
        pre, post = storage.plan(vols, storage.observe(vols, self.registry), self.registry)
        return pre + post

    def apply(self, vols):
        acts = self.plan(vols)
        for a in acts:
            a.apply(self.ctx)
        return acts


@pytest.fixture
def rig(sandbox):
    pool = Path(tempfile.mkdtemp(prefix=f"iris-{sandbox.tag}-pool-", dir="/var/tmp"))
    srv, cli = sandbox.netns("srv"), sandbox.netns("cli")
    nl.ensure_veth("irisv-s", srv, "irisv-c", cli)
    nl.ensure_addr(srv, "irisv-s", "10.0.101.50/24")
    nl.ensure_addr(cli, "irisv-c", "10.0.101.10/24")
    host = StorageHost(sandbox.dir / "storage")
    try:
        yield host, pool, srv, cli
    finally:
        storage.sweep_pool(pool, host.runner)
        shutil.rmtree(pool, ignore_errors=True)
    assert loops_under(pool) == []
    assert not [m for m in storage.mountpoints() if m.startswith(str(pool))]


def vol(pool, srv, **kw) -> VolumeOp:
    args = dict(name="iris-lx-0", pool=str(pool), size_mb=16, netns=srv, address="10.0.101.50/24", tenant="a")
    args.update(kw)
    return VolumeOp(**args)


def nfs_cp(ns: str, src: str, dst: str) -> subprocess.CompletedProcess:
    return subprocess.run(storage.nfs_cp_cmd(ns, src, dst).full_argv(), capture_output=True, text=True, timeout=60)


def test_storage_volume_served_idempotent_repaired_and_wiped(rig, tmp_path):
    host, pool, srv, cli = rig
    v = vol(pool, srv)
    assert host.apply([v]) == [RegisterVolume(v), CreateVolume(v), MountVolume(v), ServeVolume(v)]
    assert host.plan([v]) == []  # the change is visible: nothing left to do
    assert (pool / "iris-lx-0.img").stat().st_size == 16 << 20

    data = os.urandom(1 << 20)
    (tmp_path / "in").write_bytes(data)
    url = storage.nfs_url("10.0.101.50", storage.pseudo_path(v), "f")
    r = nfs_cp(cli, str(tmp_path / "in"), url)
    assert r.returncode == 0, r.stderr
    r = nfs_cp(cli, url, str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == data
    assert (pool / "iris-lx-0.d" / "mnt" / "f").read_bytes() == data  # really on the volume
    # the export daemons keep only what serving needs: no sys_admin, sys_module, net_admin, ...
    for pidfile, caps in ((storage.paths(v).pid, storage.GANESHA_CAPS), (storage.paths(v).rpcbind_pid,
                                                                        storage.RPCBIND_CAPS)):
        st = dict(ln.split(":", 1) for ln in Path(f"/proc/{read_pid(pidfile)}/status").read_text().splitlines())
        bnd = int(st["CapBnd"], 16)
        assert bnd == sum(1 << CAPS[c] for c in caps) and st["NoNewPrivs"].strip() == "1", st["CapBnd"]
        assert not bnd & (1 << CAPS["sys_admin"] | 1 << CAPS["sys_module"] | 1 << CAPS["net_admin"])
    assert proc_uid(read_pid(storage.paths(v).rpcbind_pid)) != 0  # rpcbind -s: its own user

    # the server dies: the next reconcile sees it and starts it again; the data is still there
    pid = read_pid(storage.paths(v).pid)
    os.kill(pid, 9)
    assert host.plan([v]) == [StopServer(v.name), ServeVolume(v)]
    host.apply([v])
    r = nfs_cp(cli, url, str(tmp_path / "out2"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out2").read_bytes() == data

    # release: the server and rpcbind stop, the volume is unmounted and its image wiped away.
    # A second name for the image's inode (a witness the driver does not know) shows that the
    # blocks themselves were discarded, not just one name unlinked.
    witness = pool.with_name(pool.name + ".witness")
    os.link(pool / "iris-lx-0.img", witness)
    try:
        assert data[:4096] in witness.read_bytes()
        pids = [read_pid(storage.paths(v).pid), read_pid(storage.paths(v).rpcbind_pid)]
        assert [str(a) for a in host.plan([])] == ["release volume iris-lx-0 (wipe the image)"]
        host.apply([])
        assert not any(alive(p) for p in pids)
        assert witness.stat().st_blocks == 0
        assert witness.read_bytes() == bytes(16 << 20)
    finally:
        witness.unlink(missing_ok=True)
    assert sorted(os.listdir(pool)) == []
    assert loops_under(pool) == []
    assert host.plan([]) == []
    assert nfs_cp(cli, url, str(tmp_path / "out3")).returncode != 0


def test_storage_write_past_the_volume_size_fails_cleanly(rig, tmp_path):
    host, pool, srv, cli = rig
    v = vol(pool, srv, size_mb=16)
    host.apply([v])
    small = os.urandom(64 << 10)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(os.urandom(24 << 20))
    export = storage.pseudo_path(v)
    assert nfs_cp(cli, str(tmp_path / "small"), storage.nfs_url("10.0.101.50", export, "small")).returncode == 0
    r = nfs_cp(cli, str(tmp_path / "big"), storage.nfs_url("10.0.101.50", export, "big"))
    assert r.returncode != 0, "a 24 MiB write into a 16 MiB volume succeeded"
    assert "write" in (r.stdout + r.stderr).lower()
    # the volume never grew, the server is still up and what was there reads back intact
    assert (pool / "iris-lx-0.img").stat().st_size == 16 << 20
    assert os.path.getsize(pool / "iris-lx-0.d" / "mnt" / "big") < 16 << 20
    assert host.plan([v]) == []
    r = nfs_cp(cli, storage.nfs_url("10.0.101.50", export, "small"), str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == small
    host.apply([])


def test_storage_keep_leaves_the_image_and_reattaches_it(rig, tmp_path):
    host, pool, srv, cli = rig
    v = vol(pool, srv, keep=True, netns=None, address=None)  # not exported: the host side only
    host.apply([v])
    (pool / "iris-lx-0.d" / "mnt" / "kept").write_bytes(b"still here")
    assert host.plan([]) == [ReleaseVolume("iris-lx-0", keep=True)]
    host.apply([])
    assert (pool / "iris-lx-0.img").exists()
    assert not [m for m in storage.mountpoints() if m.startswith(str(pool))]
    assert host.apply([v]) == [RegisterVolume(v), MountVolume(v)]  # no mkfs: data kept
    assert (pool / "iris-lx-0.d" / "mnt" / "kept").read_bytes() == b"still here"
    host.apply([v.model_copy(update={"keep": False})])
    host.apply([])
    assert sorted(os.listdir(pool)) == []


def test_storage_server_follows_its_namespace_and_mount(rig, sandbox, tmp_path):
    host, pool, srv, cli = rig
    v = vol(pool, srv)
    host.apply([v])
    (tmp_path / "in").write_bytes(b"x" * 5000)
    url = storage.nfs_url("10.0.101.50", storage.pseudo_path(v), "f")
    assert nfs_cp(cli, str(tmp_path / "in"), url).returncode == 0
    # the export namespace is deleted and made again (by hand, or by a repair of the port): the
    # server still runs in the old, unreachable one; the next reconcile moves it
    old = read_pid(storage.paths(v).pid)
    nl.delete_netns(srv)
    sandbox.netns("srv")
    nl.ensure_veth("irisv-s", srv, "irisv-c2", cli)
    nl.ensure_addr(srv, "irisv-s", "10.0.101.50/24")
    nl.ensure_addr(cli, "irisv-c2", "10.0.101.11/24")
    assert host.plan([v]) == [StopServer(v.name), ServeVolume(v)]
    host.apply([v])
    assert not alive(old)
    r = nfs_cp(cli, url, str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == b"x" * 5000
    host.apply([])
