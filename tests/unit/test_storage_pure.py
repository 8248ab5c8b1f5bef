"""The storage driver's pure parts: the op, the commands, the server's configuration, the plan.
No root, no processes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from iris_haas.contract.ops import DesiredState, PortOp, VolumeOp
from iris_haas.hostd import storage
from iris_haas.hostd.actions import AddAddress, CreateVeth
from iris_haas.hostd.reconciler import Facts, HostConfig
from iris_haas.hostd.reconciler import plan as host_plan
from iris_haas.hostd.storage import (
    CreateVolume,
    MountVolume,
    RegisterVolume,
    ReleaseVolume,
    ServeVolume,
    StopServer,
    VolumeFacts,
)
from iris_haas.linux.ovsdb import OvsState


def vol(**kw) -> VolumeOp:
    args = dict(name="iris-ab12cd34-0", pool="/srv/pool0", size_gb=2, tenant="acme", owner="r1",
                netns="iris-nfs-ab12", address="10.0.101.50/24")
    args.update(kw)
    return VolumeOp(**args)


def test_volume_op_validates():
    assert vol().mib == 2048 and vol(size_mb=16).mib == 16
    DesiredState.model_validate({"ops": [vol().model_dump()]})
    for bad in ({"size_gb": 0}, {"name": "vol0"}, {"pool": "relative"}, {"address": None},
                {"netns": "not-iris"}, {"address": "10.0.101.500/24"}):
        with pytest.raises(ValidationError):
            vol(**bad)
    assert vol(netns=None, address=None).netns is None  # a volume need not be exported


def test_commands_and_config():
    v = vol(size_mb=16)
    argv = [c.argv for c in storage.create_image_cmds(v)]
    assert argv[0] == ("truncate", "-s", "16M", "/srv/pool0/iris-ab12cd34-0.img.part")
    assert argv[1][0] == "mkfs.ext4" and "-m" in argv[1] and argv[1][-1].endswith(".img.part")
    assert argv[2] == ("mv", "-T", "/srv/pool0/iris-ab12cd34-0.img.part", "/srv/pool0/iris-ab12cd34-0.img")
    assert storage.mount_cmd(v).argv[-2:] == ("/srv/pool0/iris-ab12cd34-0.img", "/srv/pool0/iris-ab12cd34-0.d/mnt")
    wipe = [c.argv for c in storage.wipe_cmds(storage.paths(v), 16 << 20)]
    assert wipe[0][:2] == ("fallocate", "--punch-hole") and str(16 << 20) in wipe[0]
    assert wipe[1] == ("rm", "-f", "--", "/srv/pool0/iris-ab12cd34-0.img")
    serve = storage.serve_cmd(v)
    assert serve.netns == "iris-nfs-ab12"
    assert serve.argv[:5] == ("unshare", "--mount", "--propagation", "slave", "--")
    conf = storage.ganesha_conf(v)
    assert "Bind_Addr = 10.0.101.50;" in conf
    assert "Clients = 10.0.101.0/24;" in conf  # default: the export address's own subnet
    assert 'Pseudo = "/iris-ab12cd34-0";' in conf and "Access_Type = None;" in conf
    assert "Clients = 10.0.101.7/32;" in storage.ganesha_conf(vol(clients="10.0.101.7/32"))
    assert storage.nfs_url("10.0.101.50", "/iris-ab12cd34-0", "x") == "nfs://10.0.101.50/iris-ab12cd34-0/x"


def serving(v: VolumeOp) -> VolumeFacts:
    return VolumeFacts(registered=v.model_dump(), image=True, image_bytes=v.mib << 20, mounted=True,
                       server=100, server_netns=v.netns, rpcbind=101, conf=storage.ganesha_conf(v))


def test_plan_create_converge_release():
    v = vol()
    name = v.name
    pre, post = storage.plan([v], {}, "/reg")
    assert (pre, post) == ([], [RegisterVolume(v), CreateVolume(v), MountVolume(v), ServeVolume(v)])
    assert [str(a) for a in post] == [
        "register volume iris-ab12cd34-0", "create volume iris-ab12cd34-0 (2048 MiB in /srv/pool0)",
        "mount volume iris-ab12cd34-0", "serve volume iris-ab12cd34-0 over nfs from iris-nfs-ab12 at 10.0.101.50/24"]
    assert storage.plan([v], {name: serving(v)}, "/reg") == ([], [])
    # the server died (rpcbind alone is left): stop what is left, serve again; the data stays
    f = serving(v)
    f.server = None
    assert storage.plan([v], {name: f}, "/reg") == ([StopServer(name)], [ServeVolume(v)])
    # unmounted by hand, or the namespace made again under the server: mount, and restart it
    for change in ({"mounted": False}, {"server_netns": None}):
        f = serving(v)
        for k, x in change.items():
            setattr(f, k, x)
        pre, post = storage.plan([v], {name: f}, "/reg")
        assert pre == [StopServer(name)] and post[-1] == ServeVolume(v), change
    # a new address: restart with the new configuration
    v2 = vol(address="10.0.101.51/24")
    assert storage.plan([v2], {name: serving(v)}, "/reg") == ([StopServer(name)], [RegisterVolume(v2),
                                                                                   ServeVolume(v2)])
    # no longer wanted: released, wiped or kept as the op last said
    assert storage.plan([], {name: serving(v)}, "/reg") == ([ReleaseVolume(name, keep=False)], [])
    k = vol(keep=True)
    assert storage.plan([], {name: serving(k)}, "/reg") == ([ReleaseVolume(name, keep=True)], [])
    assert str(ReleaseVolume(name, keep=True)) == "release volume iris-ab12cd34-0 (keep the image)"
    # a kept image is attached again, never formatted again
    f = VolumeFacts(image=True, image_bytes=2 << 30)
    assert storage.plan([k], {name: f}, "/reg")[1] == [RegisterVolume(k), MountVolume(k), ServeVolume(k)]


def test_plan_refuses_what_it_cannot_do():
    with pytest.raises(storage.StorageFailed, match="no storage_dir"):
        storage.plan([vol()], {}, "")
    with pytest.raises(storage.StorageFailed, match="one export namespace"):
        storage.plan([vol(), vol(name="iris-ab12cd34-1")], {}, "/reg")
    assert storage.plan([], {}, "") == ([], [])  # a host without storage is not bothered


def test_host_plan_releases_before_the_network_and_serves_after_it():
    v = vol()
    port = PortOp(bridge="irisb-acme", name="iriss-ab12", l1_netns="iris-nfs-ab12", l1_ifname="iris1-ab12",
                  vlan=101, address="10.0.101.50/24", tenant="acme")
    cfg = HostConfig(db="unix:/nonexistent", storage_dir="/reg", warmup=False)
    facts = Facts(ovs=OvsState(), links={})
    acts = [type(a) for a in host_plan(DesiredState(ops=[port, v]), facts, cfg)]
    assert acts.index(CreateVeth) < acts.index(AddAddress) < acts.index(ServeVolume)
    facts.volumes = {v.name: serving(v)}
    acts = host_plan(DesiredState(ops=[]), facts, cfg)
    assert acts and acts[0] == ReleaseVolume(v.name, keep=False)
