"""Isolation bench: a hostile tenant, root in its L1s, against the L0s, the agents and the other tenants.

Runs as root on this machine: the two-DC lab (real OVS, namespaces, agents over mutual TLS).
Tenant ``a`` gets an lxc L1 and a kvm L1; tenant ``b`` gets L1s on the same L0s, on the same VLAN
and subnet. Then:

* **escapes**: from inside the lxc L1 and the kvm L1, as root there, the known escapes are tried
  (:mod:`iris_haas.lab.escapes`: a block device of the host's disk, cgroup v1 ``release_agent``,
  ``/proc/sysrq-trigger``, loading a kernel module, ``setns`` into PID 1's network namespace,
  ``ptrace`` of a host process, remounting ``/sys`` and ``/proc`` writable, the agents' ports and
  the control network). Each counts as an escape only if it really took effect.
* **forged requests** against every agent: plain HTTP, no client certificate, another host's
  certificate, a coordinator certificate of another CA, a host answering for another, and, with the
  coordinator's valid certificate, ops a compromised coordinator could send: a device of the host's
  own on a tenant bridge, a bridge that is not Iris's, a pool outside the host's pool roots, an
  ``l1_netns`` with ``..``. Accepted means the agent did it (an op it answers "refused" for and
  does not do is not accepted).
* **cross-tenant frames**: tenant ``a``'s L1s ping and arping (broadcast) on the shared VLAN while
  tenant ``b``'s NICs are sniffed; frames from ``a``'s MACs seen on ``b``'s side are counted.
* **L1 to control**: from every L1, ping and ARP every control-network and fabric address and
  connect to every agent's port; each answer is counted.

Prints one JSON object: ``escape_attempts``, ``escapes``, ``forged_requests``, ``forged_accepted``,
``cross_tenant_frames``, ``l1_to_control``, ``uid_map`` (the lxc L1's, on the L0), ``leftovers``
(what the lab left behind: none), and ``detail`` (each attempt and request, its outcome).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from iris_haas.agent.client import AgentClient, AgentError, ClientTls
from iris_haas.contract.ops import BridgeOp, DesiredState, PortOp, VolumeOp
from iris_haas.control import pki
from iris_haas.hostd.l1 import kvm as kvmdrv
from iris_haas.hostd.l1 import lxc as lxcdrv
from iris_haas.lab import escapes, probe, realizer
from iris_haas.lab import tenants as plan
from iris_haas.lab.tenants import L1
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovsdb, proc
from iris_haas.linux.netns import socket_in_netns
from iris_haas.linux.proc import read_pid

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIrisBenchKeyOnlyForTheLab tenant@iaas"


def l1s() -> list[L1]:
    return [
        L1("a", "l0-1", "ax", "lxc", "10.0.101.31/24", cpus=1, memory_mb=128, ssh_key=KEY),
        L1("a", "l0-2", "ak", "kvm", "10.0.101.32/24", cpus=1, memory_mb=160, ssh_key=KEY),
        L1("b", "l0-1", "bx", "netns", "10.0.101.31/24"),
        L1("b", "l0-2", "by", "netns", "10.0.101.32/24"),
    ]


def control_targets(lab) -> tuple[list[str], list[tuple[str, int]]]:
    """Every address of the HaaS control network and data fabric, and every agent's port."""
    nodes = ("hgw", *lab.topo.l0_nodes())
    ips = [lab.topo.ctl_ip(n) for n in ("ctl", *nodes)] + [lab.topo.fab_ip(n) for n in nodes]
    return ips + [lab.topo.haas.gateway_ip], [(a.ip, a.port) for a in lab.plan.agents]


# ---------------------------------------------------------------- escapes

NETWORK = ("connect_control_network", "ping_control_network")


def l0_fingerprint(lab, node: str, pids: list[int]) -> dict:
    """What an escape from a VM would change on its L0, read on the L0: the kernel's global
    settings a guest's root would write, the modules loaded, whether a process of the L0 is
    traced, and whether the L1's QEMU is still confined (its uid, its sandbox, its cgroup)."""

    def text(path: str) -> str | None:  # None: this kernel has no such file (no module support)
        try:
            return Path(path).read_text()
        except OSError:
            return None

    qemu = kvmdrv.KvmL1(lab.dir / node / "agent" / "l1", host_netns=lab.ns(node))._pid("ak")
    q = proc.status(qemu) if qemu else {}
    return {
        "core_pattern": text("/proc/sys/kernel/core_pattern"),
        "modules": text("/proc/modules"),
        "release_agents": {str(p): p.read_text() for p in sorted(Path("/sys/fs/cgroup").glob("*/release_agent"))},
        "traced": {pid: proc.status(pid).get("TracerPid", "") for pid in pids},
        "qemu": (q.get("Uid"), q.get("Seccomp"), q.get("CapBnd")),
    }


def _serve_once(ns: str, data: bytes) -> tuple[int, threading.Thread]:
    """Send ``data`` to the first client of a TCP port in namespace ``ns`` (the tenant fetching
    its tool from its own management server); (port, the thread serving it)."""
    srv = socket_in_netns(ns)
    srv.bind(("0.0.0.0", 0))
    srv.listen(1)
    srv.settimeout(60)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def from_kvm(lab, args: list[str], pids: list[int]) -> list[escapes.Attempt]:
    """The probe in the kvm guest, as its root. A guest's root owns its own kernel, so what the
    probe does to that kernel (a release agent written, a module call let through) is the
    tenant's own business: an escape from a VM is a change on the L0, so each attempt on the
    host is judged by the L0's fingerprint before and after, and the network ones (the control
    network reached from the guest) by the probe itself."""
    drv = kvmdrv.KvmL1(lab.dir / "l0-2" / "agent" / "l1", host_netns=lab.ns("l0-2"))
    binary = escapes.probe_binary(lab.dir)
    before = l0_fingerprint(lab, "l0-2", pids)
    port, t = _serve_once(lab.ns("amgmt"), binary.read_bytes())
    rc, out = drv.console("ak", f"nc 10.0.101.10 {port} </dev/null > /tmp/p; chmod +x /tmp/p; echo $(wc -c < /tmp/p)",
                          timeout=120)
    t.join(timeout=5)
    if str(binary.stat().st_size) not in out:
        raise RuntimeError(f"the probe did not reach the guest: {out[-300:]!r}")
    inside = escapes.run(lambda script: drv.console("ak", script, timeout=180)[1], "/tmp/p", args)
    after = l0_fingerprint(lab, "l0-2", pids)
    changed = sorted(k for k in before if before[k] != after[k])
    return [a._replace(escaped=a.escaped if a.name in NETWORK else bool(changed),
                       detail=a.detail if a.name in NETWORK else
                       f"in the guest: {a.detail}; on the L0: {'changed ' + ', '.join(changed) if changed else 'nothing'}")
            for a in inside]


def try_escapes(lab, ips: list[str], ports: list[tuple[str, int]]) -> list[dict]:
    agent_pids = [p for a in lab.plan.agents if (p := read_pid(lab.dir / a.node / "agent.pid"))]
    args = escapes.probe_args(pids=agent_pids, tcp=ports, icmp=ips)
    lxc = lxcdrv.LxcL1(lab.dir / "l0-1" / "agent" / "l1", host_netns=lab.ns("l0-1"))
    out = [{"l1": "ax (lxc)", **a._asdict()} for a in escapes.probe_lxc(lxc, "ax", lab.dir, args)]
    out += [{"l1": "ak (kvm)", **a._asdict()} for a in from_kvm(lab, args, agent_pids)]
    return out


def id_maps(lab) -> dict:
    """The lxc L1's uid map, seen on the L0 (not the identity: its root is not the L0's)."""
    lxc = lxcdrv.LxcL1(lab.dir / "l0-1" / "agent" / "l1", host_netns=lab.ns("l0-1"))
    pid = lxc.init_pid("ax")
    return {"ax": Path(f"/proc/{pid}/uid_map").read_text().split() if pid else None}


# ---------------------------------------------------------------- forged requests

def _refused_at_tls(lab, node: str, tls: ClientTls, expect: str | None = None) -> tuple[bool, str]:
    try:
        with lab.client(node, timeout=5, tls=tls, expect=expect) as c:
            c.state()
    except AgentError as e:
        return False, str(e)[:200]
    return True, "answered"


def _plain_http(lab, node: str) -> tuple[bool, str]:
    url = lab.agent_url(node).replace("https://", "http://")
    try:
        with AgentClient(url, token="forged", netns=lab.ns("ctl"), timeout=5) as c:
            c.health()
    except AgentError as e:
        return False, str(e)[:200]
    return True, "answered plain HTTP"


def _with_op(lab, node: str, op, done) -> tuple[bool, str]:
    """Send the host's own desired state plus ``op`` with the coordinator's certificate (what a
    compromised coordinator could do); accepted if the host then holds what ``op`` asked for."""
    with lab.client(node, timeout=60) as c:
        held = DesiredState.model_validate(c.desired())
        try:
            r = c.put(held.model_copy(update={"ops": [*held.ops, op]}))
        finally:
            c.put(held.model_copy(update={"version": c.desired()["version"]}))  # as it was
    return bool(done()), "; ".join(r.get("refused") or []) or "not refused"


def _raw_put(lab, node: str, op: dict) -> tuple[bool, str]:
    """The host's desired state plus ``op`` as raw JSON (what no pydantic model would let out)."""
    with lab.client(node, timeout=60) as c:
        held = c.desired()
        r = c.http.put("/v1/desired", json={**held, "ops": [*held["ops"], op]}, extensions={"sni_hostname": node})
        if r.status_code < 400:
            c.put(DesiredState.model_validate(held).model_copy(update={"version": c.desired()["version"]}))
    return r.status_code < 400, f"{r.status_code} {r.text[:160]}"


def forge(lab, scratch: Path) -> list[dict]:
    pki.init_ca(scratch / "foreign")
    foreign = ClientTls.coordinator(scratch / "foreign")
    out = []
    for node in lab.agent_nodes():
        for what, run in forgeries(lab, node, foreign, scratch).items():
            try:
                accepted, detail = run()
            except Exception as e:  # noqa: BLE001 - a request that errors was not accepted
                accepted, detail = False, f"{type(e).__name__}: {e}"[:200]
            out.append({"agent": node, "request": what, "accepted": accepted, "detail": detail})
    return out


def forgeries(lab, node: str, foreign: ClientTls, scratch: Path) -> dict:
    """What is tried against ``node``'s agent: each returns (accepted, detail)."""
    ca = lab.ca_dir / "ca.crt"
    bridge = plan.segment(lab.topo, "a").bridge
    other = next(n for n in lab.agent_nodes() if n != node)
    outside = scratch / "not-a-pool"  # an existing directory, outside every pool root of the lab
    tries = {
        "plain HTTP": lambda: _plain_http(lab, node),
        "no client certificate": lambda: _refused_at_tls(lab, node, ClientTls(ca)),
        "another host's certificate": lambda: _refused_at_tls(lab, node, ClientTls.host(lab.tls_dir(other))),
        "another CA's coordinator": lambda: _refused_at_tls(lab, node, ClientTls(ca, foreign.cert, foreign.key)),
        "a host answering for another": lambda: _refused_at_tls(lab, node, lab.coordinator_tls(), expect=other),
        "a bridge not Iris's": lambda: _with_op(
            lab, node, BridgeOp(name="br-forged"),
            lambda: "br-forged" in ovsdb.snapshot(lab.ovs(node).db).bridges),
        "a pool outside the pool roots": lambda: _with_op(
            lab, node, VolumeOp(name="iris-forged", pool=str(outside), size_mb=8),
            lambda: outside.exists() and any(outside.iterdir())),
        "l1_netns with ..": lambda: _raw_put(lab, node, {
            "op": "port", "bridge": bridge, "name": "irisforged0", "l1_netns": "iris/../../proc/1/ns/net",
            "l1_ifname": "eth9"}),
    }

    def device_on_bridge(dev: str):
        return lambda: _with_op(lab, node, PortOp(bridge=bridge, name=dev),
                                lambda: ovsdb.snapshot(lab.ovs(node).db).ports.get(dev, {}).get("bridge") == bridge)

    for dev in sorted(d for d in nl.links(lab.ns(node)) if d != "lo" and not d.startswith("iris")):
        tries[f"host device {dev} on a tenant bridge"] = device_on_bridge(dev)  # its control and fabric NICs
    return tries


# ---------------------------------------------------------------- frames and paths

def cross_tenant_frames(lab) -> int:
    """Frames of tenant a's lxc L1 seen on tenant b's NICs while it talks (ping, broadcast ARP)."""
    ns, nic = lab.ns("ax"), L1("a", "l0-1", "ax").nic()  # the lxc L1 shares its NIC's namespace
    mine = nl.links(ns)[nic]["address"]
    sniffers = [probe.Sniffer(lab.ns(n), L1("b", "l0-1", n).nic()) for n in ("bx", "by")]
    with contextlib.ExitStack() as stack:
        for s in sniffers:
            stack.enter_context(s)
        probe.ping(ns, "10.0.101.32", count=5)  # tenant a's kvm L1: the address b's "by" has too
        probe.ping(ns, "10.0.101.10", count=3)  # tenant a's IaaS host
        probe.arping(ns, nic, "10.0.101.32", count=3)
        probe.arping(ns, nic, "10.0.101.99", count=3)  # nobody: a broadcast that floods the VLAN
    return sum(1 for s in sniffers for f in s.frames if f[0] == mine)


def l1_to_control(lab, ips: list[str], ports: list[tuple[str, int]]) -> list[dict]:
    """From the L1s' own namespaces (lxc and netns L1s; the kvm guest is tried by the escapes)."""

    def answers(n: str, nic: str) -> list[dict]:
        ns = lab.ns(n)
        with ThreadPoolExecutor(8) as ex:
            pings = list(zip(ips, ex.map(lambda ip: probe.ping(ns, ip, count=1, wait=1), ips)))
            arps = list(zip(ips, ex.map(lambda ip: probe.arping(ns, nic, ip, count=1, deadline=2), ips)))
            conns = list(zip(ports, ex.map(lambda p: probe.tcp_connect(ns, p[0], p[1], timeout=1.0), ports)))
        return ([{"l1": n, "ping": ip} for ip, ok in pings if ok] + [{"l1": n, "arp": ip} for ip, ok in arps if ok]
                + [{"l1": n, "connect": f"{ip}:{port}"} for (ip, port), ok in conns if ok])

    return answers("ax", L1("a", "l0-1", "ax").nic()) + answers("bx", L1("b", "l0-1", "bx").nic())


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (the lab)"}))
        return 1
    name = "bi" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    scratch = Path(tempfile.mkdtemp(prefix="iris-isolation-"))  # not under the lab's pool root
    (scratch / "not-a-pool").mkdir()
    out: dict = {}
    try:
        t0 = time.monotonic()
        realizer.up(lab, ephemeral=True)
        res = plan.realize(lab, l1s())
        if not all(r["in_sync"] for r in res.values()):
            raise RuntimeError(f"the L1s did not come up: {res}")
        if not probe.reachable(lab.ns("amgmt"), "10.0.101.32", timeout=120):
            raise RuntimeError("the kvm L1 did not boot")
        print(f"lab and L1s up in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        ips, ports = control_targets(lab)
        tried = try_escapes(lab, ips, ports)
        maps = id_maps(lab)
        print(f"escapes tried: {len(tried)}", file=sys.stderr)
        forged = forge(lab, scratch)
        print(f"forged requests: {len(forged)}", file=sys.stderr)
        frames = cross_tenant_frames(lab)
        paths = l1_to_control(lab, ips, ports)
        out = {"escape_attempts": len(tried), "escapes": sum(1 for t in tried if t["escaped"]),
               "forged_requests": len(forged), "forged_accepted": sum(1 for f in forged if f["accepted"]),
               "cross_tenant_frames": frames, "l1_to_control": len(paths),
               "uid_map": maps,
               "detail": {"escapes": tried, "forged": forged, "control_paths": paths}}
    finally:
        realizer.down(name)
        shutil.rmtree(scratch, ignore_errors=True)
    out["leftovers"] = realizer.leftovers(name)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
