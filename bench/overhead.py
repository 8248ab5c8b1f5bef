"""Overhead bench: the same benchmarks on the L0, in an lxc L1 and in a kvm L1 (the paper's Table 3, by structure).

Runs as root on this machine: the two-DC lab; tenant ``a`` gets an lxc L1 (on ``l0-1``) and a
kvm L1 (on ``l0-2``, TCG here), both of 1 cpu and 512 MB, booted from the Debian OS image with
``stress-ng`` added (``iris_haas.hostd.images``, built once into the lab's image root and kept).
Each benchmark is one ``stress-ng`` stressor, one instance, for ``--seconds`` (default 3), its
bogo operations per second of wall-clock time: ``cpu`` (CPU), ``get`` (system calls: the get*
family), ``fork`` (process creation), ``switch`` (context switches through a pipe). On the L0 it
runs as a process of this machine; in each L1 over SSH from the IaaS management host, with the
tenant's key, as the IaaS would run anything there.

Prints one JSON object: ``l0``, ``lxc``, ``kvm`` (each benchmark's score), ``lxc_ratio`` and
``kvm_ratio`` (each score over the L0's), ``seconds``, ``image_build_s`` (0 when cached),
``leftovers``. Other work on the machine makes the figures noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iris_haas.hostd import images
from iris_haas.lab import realizer, uservm
from iris_haas.lab import tenants as plan
from iris_haas.lab.tenants import L1

BENCHES = ("cpu", "get", "fork", "switch")
ADDRS = {"lxc": "10.0.101.33", "kvm": "10.0.101.34"}


def stress_cmd(bench: str, seconds: int) -> str:
    out = f"/tmp/iris-overhead-{bench}.yaml"
    return (f"stress-ng --{bench} 1 --timeout {seconds}s --metrics-brief -Y {out} >/dev/null 2>&1; "
            f"cat {out}; rm -f {out}")


def score(yaml_text: str, bench: str) -> float:
    """bogo-ops-per-second-real-time of ``bench`` in stress-ng's YAML report."""
    m = re.search(rf"- stressor: {bench}\n(?:\s+[\w-]+: .*\n)*?\s+bogo-ops-per-second-real-time: ([0-9.]+)",
                  yaml_text)
    if not m:
        raise RuntimeError(f"no score for {bench} in: {yaml_text[-300:]!r}")
    return float(m.group(1))


def ssh(ns: str, key: Path, ip: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(uservm.ssh_cmd(ns, key, ip, command).full_argv(), capture_output=True, text=True,
                          timeout=timeout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=3, help="each benchmark's run time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (the lab)"}))
        return 1
    t0 = time.monotonic()
    spec = images.inputs(packages=[*images.PACKAGES, "stress-ng"], mirror=images.apt_mirror())
    rootfs, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), spec)
    disk, _ = images.build(Path(realizer.LAB_IMAGE_ROOT), {**spec, "kind": "kvm"})
    build_s = round(time.monotonic() - t0, 1)
    name = "bo" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    scratch = Path(tempfile.mkdtemp(prefix="iris-overhead-"))
    key, pub = uservm.keypair(scratch, "tenant")
    out: dict = {}
    try:
        realizer.up(lab, ephemeral=True)
        nodes = [L1("a", "l0-1", "ovlxc", "lxc", f"{ADDRS['lxc']}/24", cpus=1, memory_mb=512, ssh_key=pub,
                    image=str(rootfs)),
                 L1("a", "l0-2", "ovkvm", "kvm", f"{ADDRS['kvm']}/24", cpus=1, memory_mb=512, ssh_key=pub,
                    image=str(disk))]
        res = plan.realize(lab, nodes)
        if not all(r["in_sync"] for r in res.values()):
            raise RuntimeError(f"the L1s did not come up: {res}")
        for ip in ADDRS.values():
            uservm.ssh_when_up(lab.ns("amgmt"), key, ip, timeout=120, every=0.5)
        scores: dict[str, dict[str, float]] = {"l0": {}, "lxc": {}, "kvm": {}}
        for bench in BENCHES:
            c = stress_cmd(bench, args.seconds)
            local = subprocess.run(["sh", "-c", c], capture_output=True, text=True, timeout=args.seconds + 60)
            scores["l0"][bench] = score(local.stdout, bench)
            for kind, ip in ADDRS.items():
                scores[kind][bench] = score(ssh(lab.ns("amgmt"), key, ip, c, timeout=args.seconds + 120).stdout, bench)
            print(f"{bench}: {scores['l0'][bench]:.0f} / {scores['lxc'][bench]:.0f} / {scores['kvm'][bench]:.0f}",
                  file=sys.stderr)
        out = {**{k: {b: round(v, 1) for b, v in s.items()} for k, s in scores.items()},
               "lxc_ratio": {b: round(scores["lxc"][b] / scores["l0"][b], 3) for b in BENCHES},
               "kvm_ratio": {b: round(scores["kvm"][b] / scores["l0"][b], 3) for b in BENCHES},
               "seconds": args.seconds, "image_build_s": build_s}
    finally:
        realizer.down(name)
        shutil.rmtree(scratch, ignore_errors=True)
    out["leftovers"] = realizer.leftovers(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
