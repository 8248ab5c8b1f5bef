"""User-VM deploy bench: from the IaaS's deploy call until the VM answers on its guest VLAN (the paper's Table 2).

Runs as root on this machine: the two-DC lab; in tenant a's IaaS DC an IaaS host (``h1``, a
namespace with sshd) and an IaaS user VM on guest VLAN 733 that pings; on the HaaS side an lxc L1
(on ``l0-1``) and a kvm L1 (on ``l0-2``, TCG here), both booted from the OS image with the IaaS
stack (Open vSwitch, QEMU; built once into the lab's image root and kept), their own bridge
prepared over SSH (:func:`iris_haas.lab.uservm.prepare_host`). On each of the three hosts,
``--runs`` times (the IaaS host's and the lxc L1's runs interleaved, so the machine's other load
falls on both alike): :func:`iris_haas.lab.uservm.deploy_user_vm` (over SSH from the IaaS management
host: a tap on the host's bridge on VLAN 733 and a QEMU TCG guest, this machine's kernel and a
busybox initramfs) and the time until the IaaS user VM's ping is answered; then the VM is
destroyed. The template is copied to each host once before the runs (an IaaS's template on the
host's primary storage); each deploy still checks it.

Prints one JSON object: ``iaas_s``, ``haas_lxc_s``, ``haas_kvm_s`` (the p50 of the runs, seconds;
``haas_kvm_s`` null with ``haas_kvm_error`` when the kvm L1 could not be measured),
``lxc_over_iaas``, ``samples`` (every run), ``runs``, ``l1_ready_s`` (each L1 from the desired
state to ssh answering), ``leftovers``. A user VM in a kvm L1 is QEMU's TCG inside QEMU's TCG
here (no KVM on this machine): far slower, shown, not hidden. Other work on the machine makes the
figures noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iris_haas.hostd import images
from iris_haas.lab import iaas, probe, realizer, uservm
from iris_haas.lab import tenants as plan
from iris_haas.lab.tenants import L1

VLAN = 733
OWNER = "iaas:a"
L1_ADDRS = {"lxc": "10.0.101.36", "kvm": "10.0.101.37"}


def deploy_once(host: uservm.HostSsh, tpl: uservm.Template, peer_ns: str, i: int, timeout: float, tag: str) -> float:
    """One deploy, timed from the call until the VM's first answer; then the VM destroyed."""
    mac, addr = f"52:54:00:07:01:{0x40 + i:02x}", f"10.7.1.{40 + i}/24"
    t0 = time.monotonic()
    vm = uservm.deploy_user_vm(host, tpl, f"{tag}{i}", VLAN, mac, addr, owner=OWNER)
    try:
        probe.first_reply(peer_ns, vm.ip, timeout=timeout)
        dt = round(time.monotonic() - t0, 2)
    finally:
        vm.destroy()
    left = vm.leftovers()
    if left:
        raise RuntimeError(f"{tag}{i} left {left}")
    print(f"{tag}{i}: {dt} s", file=sys.stderr)
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kvm-timeout", type=float, default=600, help="seconds a user VM in the kvm L1 may take")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (the lab)"}))
        return 1
    spec = images.inputs(packages=[*images.PACKAGES, *images.IAAS_STACK], mirror=images.apt_mirror())
    rootfs, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), spec)
    disk, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), {**spec, "kind": "kvm"})
    name = "bd" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    scratch = Path(tempfile.mkdtemp(prefix="iris-deploy-"))
    key, pub = uservm.keypair(scratch, "iaas-mgmt")
    out: dict = {"runs": args.runs}
    samples: dict[str, list[float]] = {}
    sshd = None
    try:
        realizer.up(lab, ephemeral=True)
        h = iaas.add_iaas_host(lab, "a", "h1", "10.0.101.51/24")
        sshd = uservm.Sshd(h.netns, "10.0.101.51", lab.dir / "ah1-sshd", pub).start()
        peer = h.add_vm(iaas.UserVM("h1vm", lab.ns("h1vm"), VLAN, "10.7.1.11/24", "02:00:00:07:01:11"))
        mgmt = lab.ns("amgmt")
        tpl = uservm.Template.local(lab.dir)
        hosts = {"iaas": uservm.HostSsh(mgmt, key, "10.0.101.51", workdir=str(lab.dir / "ah1-uvm"), ovs_db=h.ovs.db)}
        nodes = [L1("a", "l0-1", "dplxc", "lxc", f"{L1_ADDRS['lxc']}/24", cpus=1, memory_mb=512, ssh_key=pub,
                    image=str(rootfs)),
                 L1("a", "l0-2", "dpkvm", "kvm", f"{L1_ADDRS['kvm']}/24", cpus=1, memory_mb=768, ssh_key=pub,
                    image=str(disk))]
        t0 = time.monotonic()
        res = plan.realize(lab, nodes)
        if not all(r["in_sync"] for r in res.values()):
            raise RuntimeError(f"the L1s did not come up: {res}")
        out["l1_ready_s"] = {}
        for n in nodes:
            hst = uservm.HostSsh(mgmt, key, L1_ADDRS[n.kind], workdir="/var/lib/iris-uvm",
                                 ovs_db="unix:/run/iris-ovs/db.sock")
            try:
                uservm.ssh_when_up(mgmt, key, hst.ip, timeout=180, every=0.5)
                out["l1_ready_s"][n.kind] = round(time.monotonic() - t0, 1)
                uservm.prepare_host(hst, n.nic() if n.kind == "lxc" else "eth0", lab.topo.tenant("a").mgmt_vlan,
                                    OWNER)
                uservm.stage_template(hst, tpl)
                hosts[n.kind] = hst
            except (uservm.DeployFailed, RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                if n.kind == "lxc":
                    raise
                out["haas_kvm_error"] = f"the kvm L1: {type(e).__name__}: {str(e)[-400:]}"
        uservm.stage_template(hosts["iaas"], tpl)
        samples = {"iaas": [], "lxc": []}
        for i in range(args.runs):  # interleaved, so the machine's other load falls on both alike
            samples["iaas"].append(deploy_once(hosts["iaas"], tpl, peer.netns, i, 60, "dpi"))
            samples["lxc"].append(deploy_once(hosts["lxc"], tpl, peer.netns, i, 60, "dpl"))
        if "kvm" in hosts:
            try:
                samples["kvm"] = [deploy_once(hosts["kvm"], tpl, peer.netns, i, args.kvm_timeout, "dpk")
                                  for i in range(args.runs)]
            except (uservm.DeployFailed, RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                out["haas_kvm_error"] = f"{type(e).__name__}: {str(e)[-400:]}"
        p50 = {k: round(statistics.median(v), 2) for k, v in samples.items()}
        out.update({"iaas_s": p50["iaas"], "haas_lxc_s": p50["lxc"], "haas_kvm_s": p50.get("kvm"),
                    "lxc_over_iaas": round(p50["lxc"] / p50["iaas"], 3), "samples": samples})
        for hst in (hosts.get("lxc"), hosts.get("kvm")):
            if hst:
                uservm.unprepare_host(hst)
        plan.realize(lab, [])
    finally:
        if sshd:
            sshd.stop()
        realizer.down(name)
        shutil.rmtree(scratch, ignore_errors=True)
    out["leftovers"] = realizer.leftovers(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
