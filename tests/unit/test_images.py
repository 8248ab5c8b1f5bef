"""OS images: the admin's registry (API and CLI), a compute item naming one, the agent's policy
on image paths, and the image builder's pure parts (mirror, digest, the rootfs fitted for lxc)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iris_haas.api.service import LocalCoordinator
from iris_haas.cli.main import app
from iris_haas.contract.ops import L1Op
from iris_haas.hostd import images
from iris_haas.hostd.l1 import lxc
from iris_haas.hostd.policy import Policy
from tests.unit.test_desired import ops, provision

IMG = {"name": "debian12", "l1_kind": "lxc", "path": "/var/lib/iris/images/d/rootfs", "digest": "ab" * 32,
       "description": "Debian 12 with sshd"}


def compute(**kw):
    return {"kind": "compute", "count": 1, "l1_kind": "lxc", "cpus": 1, "memory_mb": 1024, "disk_gb": 10, **kw}


def test_the_admin_registers_images_and_tenants_list_them(api):
    got = api.ok("POST", "/images", json=IMG)
    assert {k: got[k] for k in IMG} == IMG
    assert [i["name"] for i in api.ok("GET", "/images", "alice")] == ["debian12"]
    assert api.ok("GET", "/images/debian12", "bob")["path"] == IMG["path"]
    assert api.call("POST", "/images", "alice", json={**IMG, "name": "mine"}).status_code == 403
    assert api.call("DELETE", "/images/debian12", "alice").status_code == 403
    r = api.call("POST", "/images", json=IMG)
    assert r.status_code == 409 and r.json()["type"] == "AlreadyExists"
    for body, field in (({**IMG, "name": "x", "path": "var/rel"}, "path"),
                        ({**IMG, "name": "x", "path": "/a/../etc"}, "path"),
                        ({**IMG, "name": "x", "l1_kind": "vmware"}, "l1_kind"),
                        ({**IMG, "name": "x", "digest": "nothex"}, "digest"),
                        ({**IMG, "name": "bad name"}, "name")):
        r = api.call("POST", "/images", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in json.dumps(r.json()), r.json()
    assert [i["name"] for i in api.ok("GET", "/images")] == ["debian12"]  # nothing of those stored
    assert api.call("GET", "/images/nope", "alice").status_code == 404


@pytest.mark.parametrize(("image", "why"), [("nope", "no image named nope"), ("kvm-disk", "is for kvm L1s")])
def test_a_compute_item_naming_an_unknown_or_other_kind_image_is_422_and_nothing_stored(api, image, why):
    api.ok("POST", "/images", json={**IMG, "name": "kvm-disk", "l1_kind": "kvm", "path": "/var/lib/iris/images/k.qcow2"})
    r = api.call("POST", "/reservations", "alice", json={"duration_s": 600, "items": [
        {"kind": "network", "bandwidth_mbps": 10}, compute(image=image)]})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "items.1.image" and why in r.json()["message"], r.json()
    assert api.ok("GET", "/reservations", "alice") == []


def test_the_l1_of_a_compute_item_boots_its_image_and_the_image_is_kept_while_used(api):
    api.ok("POST", "/images", json=IMG)
    r = provision(api, "alice", {"items": [compute(image="debian12", ssh_key="ssh-ed25519 AAAA a@b")]})
    node = r["resources"][0]["node"]
    (l1,) = ops(api, node, "l1")
    assert (l1["image"], l1["ssh_key"]) == (IMG["path"], "ssh-ed25519 AAAA a@b")
    other = provision(api, "bob", {"items": [compute()]})  # no image: the driver's built-in one
    assert ops(api, other["resources"][0]["node"], "l1")[0]["image"] is None
    d = api.call("DELETE", "/images/debian12")
    assert d.status_code == 409 and r["id"] in d.json()["message"]
    api.ok("POST", f"/reservations/{r['id']}/terminate", "alice")
    assert api.call("DELETE", "/images/debian12").status_code == 204
    assert api.ok("GET", "/images") == []


def _l1(image: str | None) -> L1Op:
    return L1Op(kind="lxc", name="n1", bridge="iris-b", port="iris0-n1", netns="iris-n1", image=image)


def test_the_agent_boots_images_only_from_under_its_image_roots(tmp_path):
    root = tmp_path / "images"
    (root / "d" / "rootfs").mkdir(parents=True)
    (root / "out").symlink_to("/etc")
    p = Policy(image_roots=(str(root),))
    assert p.refusal(_l1(None)) is None
    assert p.refusal(_l1(str(root / "d" / "rootfs"))) is None
    assert "image roots" in (p.refusal(_l1("/etc")) or "")
    assert "image roots" in (p.refusal(_l1(str(root / "out"))) or "")  # a symlink out of a root is out
    assert "image roots" in (Policy().refusal(_l1(str(root / "d" / "rootfs"))) or "")  # default: /var/lib/iris/images


def test_an_l1_from_an_image_runs_irises_init_and_the_busybox_one_does_not():
    with_image = lxc.config_lines(_l1("/var/lib/iris/images/d/rootfs"), 1_000_000, Path("/r"), Path("/u"))
    assert f"lxc.init.cmd = /{images.INIT_PATH}" in with_image
    assert not [ln for ln in lxc.config_lines(_l1(None), 1_000_000, Path("/r"), Path("/u")) if "init.cmd" in ln]
    assert lxc.disk_bytes(_l1("/x"), 200 << 20) == (200 << 20) * 5 // 4 + (lxc.MIN_DISK_MB << 20)


def test_the_mirror_is_the_machines_apt_mirror(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert images.apt_mirror("bookworm", tmp_path) == images.DEFAULT_MIRROR
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert images.apt_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("# deb http://no.example/debian bookworm main\n"
                                           "deb [arch=amd64] http://list.example/debian bookworm main\n")
    assert images.apt_mirror("bookworm", tmp_path) == "http://list.example/debian"
    assert images.apt_mirror("trixie", tmp_path) == images.DEFAULT_MIRROR


def test_an_image_is_named_by_the_digest_of_its_inputs(tmp_path):
    a = images.inputs(packages=["openssh-server", "iproute2"], mirror="http://m.example/debian/")
    assert images.digest(a) == images.digest(images.inputs(packages=["iproute2", "openssh-server", "iproute2"],
                                                           mirror="http://m.example/debian"))
    for other in (images.inputs(packages=["openssh-server"], mirror="http://m.example/debian"),
                  images.inputs(packages=a["packages"], mirror="http://n.example/debian"),
                  images.inputs(suite="trixie", packages=a["packages"], mirror=a["mirror"]),
                  images.inputs(kind="kvm", packages=a["packages"], mirror=a["mirror"])):
        assert images.digest(other) != images.digest(a)
    assert images.debootstrap_cmd(a, tmp_path / "r") == [
        "debootstrap", "--variant=minbase", "--include=iproute2,openssh-server", "bookworm", str(tmp_path / "r"),
        "http://m.example/debian"]
    assert images.cached(tmp_path, a) is None  # nothing built there
    (tmp_path / f".{images.digest(a)}.tmp" / "rootfs").mkdir(parents=True)  # a build cut short is no image
    assert images.cached(tmp_path, a) is None
    with pytest.raises(images.ImageBuildFailed, match="no images of kind vmware"):
        images.build(tmp_path, images.inputs(kind="vmware"))


def test_a_debootstrapped_rootfs_is_fitted_for_an_unprivileged_container(tmp_path):
    r = tmp_path / "rootfs"
    for d in ("etc/ssh", "etc/pam.d", "var/cache/apt/archives", "var/lib/apt/lists"):
        (r / d).mkdir(parents=True)
    for k in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
        (r / "etc/ssh" / k).write_text("secret")
    (r / "etc/ssh/sshd_config").write_text("UsePAM yes\n")
    (r / "etc/pam.d/sshd").write_text("session    required     pam_loginuid.so\nsession required pam_env.so\n")
    (r / "var/cache/apt/archives/x.deb").write_text("deb")
    (r / "var/cache/apt/pkgcache.bin").write_text("bin")
    (r / "var/lib/apt/lists/deb.debian.org_Packages").write_text("list")
    images._fit_for_lxc(r)
    assert sorted(p.name for p in (r / "etc/ssh").iterdir()) == ["sshd_config"]  # each L1 makes its own keys
    assert (r / "etc/pam.d/sshd").read_text() == ("session    optional     pam_loginuid.so\n"
                                                  "session required pam_env.so\n")
    assert [p for p in r.glob("var/**/*") if p.is_file()] == []
    images.install_init(r)
    init = r / images.INIT_PATH
    assert init.stat().st_mode & 0o111 and "/usr/sbin/sshd" in init.read_text()


def test_the_cli_adds_lists_and_removes_images(tmp_path):
    with LocalCoordinator(tmp_path) as c:
        admin = c.admin_token

        def iris(*args, ok=True):
            result = CliRunner().invoke(app, ["--url", c.url, "--token", admin, *args], env={"COLUMNS": "200"})
            assert (result.exit_code == 0) == ok, (args, result.output)
            return result.output

        out = iris("image", "add", "debian12", "--path", IMG["path"], "--digest", IMG["digest"], "-f", "json")
        assert json.loads(out)["path"] == IMG["path"]
        assert iris("image", "list", "-f", "value", "-c", "name", "-c", "l1_kind").split() == ["debian12", "lxc"]
        assert f"digest: {IMG['digest']}" in iris("image", "show", "debian12", "-f", "yaml")
        bad = iris("image", "add", "x", "--path", "relative", ok=False)
        assert "path" in bad and "Traceback" not in bad
        assert "removed image debian12" in iris("image", "rm", "debian12")
        assert iris("image", "list", "-f", "json").strip() == "[]"


def test_a_kvm_l1_from_an_image_boots_its_own_layer_over_the_disk():
    from iris_haas.hostd.l1 import kvm

    op = L1Op(kind="kvm", name="k1", bridge="iris-b", port="iris0-k1", netns="iris-k1",
              image="/var/lib/iris/images/d/disk.img")
    argv = kvm.qemu_cmd(op, kernel="/k", initrd="/i", pidfile="/p", console="/c", accel="tcg",
                        disk="/run/iris-kvm/iris-k1/disk.qcow2").argv
    assert argv[argv.index("-drive") + 1].startswith("file=/run/iris-kvm/iris-k1/disk.qcow2,if=virtio,format=qcow2")
    assert "ROOT=/dev/vda" in kvm.guest_env(op)
    plain = op.model_copy(update={"image": None})
    assert "-drive" not in kvm.qemu_cmd(plain, kernel="/k", initrd="/i", pidfile="/p", console="/c", accel="tcg").argv
    assert "ROOT=''" in kvm.guest_env(plain)
    assert "switch_root /newroot /usr/local/sbin/iris-init" in kvm.INIT
