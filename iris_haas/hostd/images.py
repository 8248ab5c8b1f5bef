"""OS images for L1s, built from Debian's packages (``iris image build``) and cached by content.

A kvm image is the lxc image of the same inputs made a raw ext4 disk (``<root>/<digest>/disk.img``,
read only: each kvm L1 boots a qcow2 layer of its own over it, see :mod:`iris_haas.hostd.l1.kvm`).
An lxc image is a Debian root filesystem made by ``debootstrap`` (variant ``minbase``) with the
packages an IaaS host needs to be adopted (:data:`PACKAGES`: an SSH server and ``iproute2``;
:data:`IAAS_STACK` adds Open vSwitch and QEMU, large). It is a directory
``<root>/<digest>/rootfs`` where ``digest`` is the SHA-256 of everything the build depends on
(:func:`digest`: kind, suite, packages, mirror, variant and this module's recipe version), so
the same inputs are built once and a changed input is a new image beside the old one. A build
happens in a temporary directory next to it and is renamed into place when complete, under a
lock, so a build interrupted half-way is never taken for an image and two builds of one image
at once make it once.

After ``debootstrap`` the recipe makes the rootfs fit an unprivileged container: its SSH host
keys are removed (each L1 makes its own at first start, see :data:`INIT`), PAM's
``pam_loginuid`` is made optional (a user namespace may not set the login uid, and sshd would
refuse every session), and apt's package cache and lists are dropped (``apt-get update`` in the
L1 brings them back).

:data:`INIT` is what an lxc L1 booted from an image runs as its init (the driver writes it into
the L1's disk, so an image made elsewhere works too; a kvm L1's initramfs puts it on the disk
before it switches to it): it makes the host keys, starts sshd, gives a kvm L1's serial console a
shell (the agent's way in) and reaps what the tenant runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from iris_haas.contract.errors import IrisError

RECIPE = 1  # bump when the build below changes what an image holds
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("openssh-server", "iproute2")
IAAS_STACK = ("openvswitch-switch", "qemu-system-x86")  # an IaaS KVM host's own stack (large)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
INIT_PATH = "usr/local/sbin/iris-init"  # inside the rootfs
ARTIFACT = {"lxc": "rootfs", "kvm": "disk.img"}  # what an image of each kind is, in its directory
DISK_SPARE_MB = 512  # a kvm image's free space (its L1s write into a copy-on-write layer of their own)
INIT = """#!/bin/sh
# Iris's init for an L1 booted from an OS image: its own SSH host keys, sshd, then reap.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
for t in ed25519 ecdsa; do
  [ -e /etc/ssh/ssh_host_${t}_key ] || ssh-keygen -q -t $t -N '' -f /etc/ssh/ssh_host_${t}_key
done
mkdir -p /run/sshd
/usr/sbin/sshd -E /var/log/sshd.log
# a kvm L1: a root shell on its serial console, which only the L0's agent reaches (a unix socket)
[ -c /dev/ttyS0 ] && (while :; do setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'; done) &
trap 'kill -TERM $(cat /run/sshd.pid) 2>/dev/null; exit 0' TERM USR1 PWR
while :; do sleep 3600 & wait; done
"""


class ImageBuildFailed(IrisError):
    status, type = 500, "ImageBuildFailed"


def apt_mirror(suite: str = SUITE, etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt is configured with for ``suite`` (one-line ``.list``
    or deb822 ``.sources`` files); Debian's own when none names it."""
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list")),
             *sorted((etc_apt / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
                if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                    return fields.get("URIs", "").split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == suite:
                    return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def inputs(kind: str = "lxc", suite: str = SUITE, packages: Iterable[str] = PACKAGES, mirror: str = DEFAULT_MIRROR,
           variant: str = VARIANT) -> dict[str, Any]:
    return {"recipe": RECIPE, "kind": kind, "suite": suite, "variant": variant, "mirror": mirror.rstrip("/"),
            "packages": sorted(set(packages))}


def digest(spec: dict[str, Any]) -> str:
    """The image's name in the cache: SHA-256 of its inputs, in a canonical order."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def debootstrap_cmd(spec: dict[str, Any], target: Path) -> list[str]:
    return ["debootstrap", f"--variant={spec['variant']}", f"--include={','.join(spec['packages'])}",
            spec["suite"], str(target), spec["mirror"]]


def cached(root: Path, spec: dict[str, Any]) -> Path | None:
    """The image of ``spec`` under ``root`` (an lxc rootfs, a kvm disk), if one is complete."""
    d = Path(root) / digest(spec)
    return d / ARTIFACT[spec["kind"]] if (d / "image.json").exists() else None


def build(root: Path, spec: dict[str, Any], progress: Callable[[str], None] = lambda _: None,
          timeout: float = 1800) -> tuple[Path, bool]:
    """The image of ``spec`` under ``root`` (an lxc rootfs directory; a kvm disk: the lxc
    image of the same inputs made an ext4 disk), built unless cached; and whether it was built
    now. ``progress`` gets each line of the build's output."""
    root = Path(root)
    if spec["kind"] == "kvm":
        return _build_once(root, spec, lambda stage: _make_disk(root, spec, stage, progress, timeout))
    if spec["kind"] != "lxc":
        raise ImageBuildFailed(f"no images of kind {spec['kind']}: lxc or kvm")

    def make_rootfs(stage: Path) -> None:
        _debootstrap(spec, stage / "rootfs", progress, timeout)
        _fit_for_lxc(stage / "rootfs")

    return _build_once(root, spec, make_rootfs)


def _build_once(root: Path, spec: dict[str, Any], make: Callable[[Path], None]) -> tuple[Path, bool]:
    """Under the image's lock: the cached image, or ``make`` fills a staging directory that then
    becomes the image (its ``image.json`` last, so an image with one is complete)."""
    root.mkdir(parents=True, exist_ok=True)
    name = digest(spec)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = cached(root, spec)
        if have:
            return have, False
        stage = root / f".{name}.tmp"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        t0 = time.monotonic()
        make(stage)
        (stage / "image.json").write_text(json.dumps({**spec, "digest": name, "built_s": round(time.monotonic() - t0, 1),
                                                      "built_at": time.time()}, indent=1) + "\n")
        shutil.rmtree(root / name, ignore_errors=True)
        os.replace(stage, root / name)
    return root / name / ARTIFACT[spec["kind"]], True


def _make_disk(root: Path, spec: dict[str, Any], stage: Path, progress: Callable[[str], None],
               timeout: float) -> None:
    """A kvm image: the lxc image of the same inputs as a raw ext4 disk (``mkfs.ext4 -d``, ids as
    they are: the guest has its own kernel), with Iris's init in it."""
    rootfs, _ = build(root, {**spec, "kind": "lxc"}, progress, timeout)
    tree = stage / "tree"
    subprocess.run(["cp", "-a", str(rootfs), str(tree)], check=True, timeout=300)
    install_init(tree)
    (tree / "etc" / "fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    size = sum(os.lstat(os.path.join(d, n)).st_blocks * 512 for d, ds, fs in os.walk(tree) for n in (*ds, *fs))
    with open(stage / "disk.img", "wb") as f:
        f.truncate(size * 5 // 4 + (DISK_SPARE_MB << 20))
    progress("I: Making the disk image (mkfs.ext4 -d)")
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "iris-root", "-d", str(tree), str(stage / "disk.img")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise ImageBuildFailed(f"mkfs.ext4: {r.stderr.strip()}")
    shutil.rmtree(tree)
    (stage / "disk.img").chmod(0o644)  # read by the L1s' unprivileged QEMUs (never written)


def _debootstrap(spec: dict[str, Any], target: Path, progress: Callable[[str], None], timeout: float) -> None:
    argv = debootstrap_cmd(spec, target)
    deadline = time.monotonic() + timeout
    tail: list[str] = []
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise ImageBuildFailed("debootstrap is not installed (scripts/install-deps.sh installs it)") from None
    assert p.stdout is not None
    try:
        for line in p.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            progress(line)
            if time.monotonic() > deadline:
                raise ImageBuildFailed(f"debootstrap took more than {timeout:.0f} s")
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if rc != 0:
        raise ImageBuildFailed(f"{' '.join(argv)} exited {rc}: " + "\n".join(tail))


def _fit_for_lxc(rootfs: Path) -> None:
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    pam = rootfs / "etc" / "pam.d" / "sshd"
    if pam.exists():
        pam.write_text(re.sub(r"^(session\s+)required(\s+pam_loginuid\.so)", r"\1optional\2", pam.read_text(),
                              flags=re.M))
    for d in (rootfs / "var" / "cache" / "apt", rootfs / "var" / "lib" / "apt" / "lists"):
        for p in d.glob("**/*"):
            if p.is_file() and (p.suffix in (".deb", ".bin") or d.name == "lists"):
                p.unlink()
    (rootfs / "etc" / "hostname").write_text("localhost\n")


IAAS_STACK_BINARIES = ("usr/sbin/ovs-vswitchd", "usr/bin/qemu-system-x86_64")  # what IAAS_STACK installs


def has_iaas_stack(rootfs: Path) -> bool:
    """Whether an lxc image carries an IaaS's hypervisor stack (Open vSwitch or QEMU), so its L1
    gets the devices that stack needs (``/dev/net/tun``; see :mod:`iris_haas.hostd.l1.lxc`)."""
    return any((Path(rootfs) / b).exists() for b in IAAS_STACK_BINARIES)


def install_init(rootfs: Path) -> None:
    """Write :data:`INIT` into a rootfs (an L1's copy of its image)."""
    p = rootfs / INIT_PATH
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(INIT)
    p.chmod(0o755)
