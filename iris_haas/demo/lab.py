"""`iris demo`: Iris's main job, end to end, in the two-DC lab.

A coordinator (SQLite) and the lab with its agents; the HaaS inventory registered through the
API; two tenants register their IaaS sites. Tenant A reserves two LXC L1 nodes and 200 Mbit/s
for ten minutes (service model a), commits and provisions; the IaaS's own software (a stand-in
for CloudStack's KVM agent) runs user VMs (namespaces) on a guest VLAN on both sides, for the
shaped rate and the data path alone. Tenant B does the same with the same VLAN IDs and subnets.
Then the paper's tables 4 and 5 as a matrix between real QEMU user VMs that tenant a's IaaS
deploys over SSH (:mod:`iris_haas.demo.qemu`) on two IaaS hosts and on the L1s of a second
reservation booted from the IaaS image (two lxc, two kvm; no kvm in the quick mode): RTT and
goodput measured from inside the guests. The demo checks both tenants are isolated and that no
L1 reaches the control network. Then release, terminate, tear down. It writes ``report.json``
and PNG charts beside the paper's numbers, and exits non-zero if any check failed.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.table import Table

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.contract import names
from iris_haas.control.sync import AgentDataPlane
from iris_haas.demo import qemu
from iris_haas.lab import iaas, probe, realizer, uservm
from iris_haas.lab.register import register
from iris_haas.linux import netlink as nl
from iris_haas.linux import tc

# The paper's tables 4 (RTT, ms) and 5 (goodput, Mbit/s), 1 GbE, Open vSwitch 1.4 kernel datapath.
PAPER = {
    "rtt_ms": {"IaaS-IaaS": 0.36, "IaaS-HaaS(L)": 0.64, "HaaS(L)-HaaS(L)": 0.35, "IaaS-HaaS(K)": 1.22},
    "goodput_mbps": {"IaaS-IaaS": 934, "IaaS-HaaS(L)": 913, "HaaS(L)-HaaS(L)": 934, "HaaS(K)-HaaS(K)": 621},
}
GUEST_VLAN = 200


class Checks:
    def __init__(self, console: Console):
        self.console, self.items = console, []

    def __call__(self, name: str, ok: bool, detail: str = "") -> bool:
        self.items.append((name, bool(ok), detail))
        mark = "[green]✓[/green]" if ok else "[red]✗ FAILED[/red]"
        self.console.print(f"  {mark} {name}" + (f"  [dim]{detail}[/dim]" if detail else ""))
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [n for n, ok, _ in self.items if not ok]


def run(console: Console, *, out: Path = Path("."), quick: bool = False) -> int:
    seconds = 1.0 if quick else 3.0
    check = Checks(console)
    report: dict = {"paper": PAPER, "measured": {"rtt_ms": {}, "goodput_mbps": {}}, "not_measured": {}}
    name = "demo" + secrets.token_hex(2)
    data_dir = Path(tempfile.mkdtemp(prefix="iris-demo-"))
    t_start = time.monotonic()

    def step(text: str) -> None:
        console.rule(f"[bold]{text}")

    lab = realizer.load(None, name=name)
    try:
        step("Two data centers on this machine: namespaces, real Open vSwitch, GRE, tc, agents")
        with console.status("iris lab up"):
            up = realizer.up(lab, ephemeral=True)
        check("lab up: IaaS DCs of tenants a and b, HaaS DC with 4 L0s, an agent on each L0 and gateway",
              realizer.status(lab)["matches"], f"{up['total']:.1f} s")
        with ExitStack() as stack:
            coord = stack.enter_context(
                LocalCoordinator(data_dir, dataplane=AgentDataPlane(lab.coordinator_tls(), netns=lab.ns("ctl"))))
            admin = coord.client(coord.admin_token)
            tokens = register(lab, admin)
            tenant = {t: coord.client(tok) for t, tok in tokens.items()}
            stack.callback(_terminate_all, admin)
            check("inventory and tenants registered through the API", len(admin.get("/nodes")) == 4
                  and len(tokens) == 2)

            # The IaaS side, built once and never touched by provisioning: two KVM-host stand-ins
            # per tenant with one user VM each on a guest VLAN.
            hosts, uvms = {}, {}
            for t in ("a", "b"):
                for i in (1, 2):
                    h = iaas.add_iaas_host(lab, t, f"h{i}", f"10.0.101.{30 + i}/24")
                    stack.callback(iaas.remove_iaas_host, lab, t, h)
                    hosts[(t, i)] = h
                    uvms[(t, "iaas", i)] = h.add_vm(iaas.UserVM(f"{t}vi{i}", lab.ns(f"{t}vi{i}"), GUEST_VLAN,
                                                                f"10.1.0.{10 + i}/24", _mac(t, 0, i)))
            iaas_links = {t: set(nl.links(lab.ns(f"{t}mgmt"))) for t in ("a", "b")}

            l1s: dict[str, list[str]] = {}
            l1_hosts: list[iaas.IaasHost] = []
            res: dict[str, dict] = {}
            for t in ("a", "b"):
                step(f"Tenant {t}: 2 LXC L1 nodes + 200 Mbit/s for ten minutes, model (a)")
                t0 = time.monotonic()
                with console.status("reserve, commit, provision: the agents create and wire the L1s"):
                    r = tenant[t].post("/reservations", {"description": "demand peak", "duration_s": 600, "items": [
                        {"kind": "compute", "count": 2, "l1_kind": "lxc", "cpus": 1, "memory_mb": 512, "disk_gb": 1,
                         "addresses": ["10.0.101.51/24", "10.0.101.52/24"]},
                        {"kind": "network", "bandwidth_mbps": 200}]})
                    tenant[t].post(f"/reservations/{r['id']}/commit")
                    r = tenant[t].post(f"/reservations/{r['id']}/provision")
                    answered = all(probe.reachable(lab.ns(f"{t}mgmt"), f"10.0.101.{n}", timeout=15) for n in (51, 52))
                dt = time.monotonic() - t0
                res[t] = r
                l1s[t] = [x["l1"] for x in r["resources"] if "l1" in x]
                nodes = sorted({x["node"] for x in r["resources"] if "node" in x})
                check(f"{t}: reserved, committed, provisioned; both L1s answer on the management VLAN from "
                      "the IaaS management host", r["data_plane_active"] and answered,
                      f"{dt:.1f} s from reserve to answer; L1s on {', '.join(nodes)}")
                # CloudStack's part: its host software inside each L1, a user VM on the guest VLAN
                for i, l1 in enumerate(l1s[t], start=1):
                    nic = next(n for n in nl.links(l1) if n.startswith("iris1"))
                    h = iaas.IaasHost(name=l1, netns=l1, nic=nic, mgmt_vlan=101, rundir=data_dir / f"{l1}-ovs",
                                      owner=f"lab:{lab.name}").start()
                    stack.callback(h.stop)
                    l1_hosts.append(h)
                    uvms[(t, "haas", i)] = h.add_vm(iaas.UserVM(f"{t}vh{i}", lab.ns(f"{t}vh{i}"), GUEST_VLAN,
                                                                f"10.1.0.{20 + i}/24", _mac(t, 1, i)))
                ok = all(probe.reachable(uvms[(t, "iaas", 1)].netns, uvms[(t, "haas", i)].ip) for i in (1, 2))
                check(f"{t}: user VMs in the L1s talk to the IaaS's user VMs on guest VLAN {GUEST_VLAN}, "
                      "announced nowhere", ok)

            a_iaas, a_haas1, a_haas2 = uvms[("a", "iaas", 1)], uvms[("a", "haas", 1)], uvms[("a", "haas", 2)]
            step("Bandwidth: the 200 Mbit/s reservation, then a modify to 1000 Mbit/s")
            with probe.Iperf3Server(a_iaas.netns):
                shaped = probe.iperf3(a_haas1.netns, a_iaas.ip, seconds=seconds)
            report["shaped_mbps"] = {"reserved": 200, "measured": round(shaped, 1)}
            check("HaaS -> IaaS goodput is held to the reserved 200 Mbit/s", 150 <= shaped <= 205, f"{shaped:.0f} Mbit/s")
            tenant["a"].post(f"/reservations/{res['a']['id']}/modify", {"version": 2, "bandwidth_mbps": 1000})
            r = tenant["a"].post(f"/reservations/{res['a']['id']}/commit")
            limits = _observed_limits(lab, "a", r, l1s["a"])
            check("modify committed as version 2; the limits follow on the gateway and the L1 ports",
                  r["committed_version"] == 2 and r["data_plane_active"]
                  and limits["tunnel_limit"] == [1000.0] and limits["shape"] == [1000.0, 1000.0],
                  f"tc on the hosts now: tenant limit {limits['tunnel_limit']}, L1 ports {limits['shape']} Mbit/s")

            step("The data path alone: the same pairs between namespace stand-ins (no guest)")
            pairs = {
                "IaaS-IaaS": (a_iaas, uvms[("a", "iaas", 2)]),
                "IaaS-HaaS(L)": (a_iaas, a_haas1),
                "HaaS(L)-HaaS(L)": (a_haas1, a_haas2),
            }
            dp = report["datapath"] = {"rtt_ms": {}, "goodput_mbps": {}}
            for label, (x, y) in pairs.items():
                with console.status(f"{label}: ping and iperf3"):
                    rtt = probe.rtt_ms(x.netns, y.ip, count=10 if quick else 20)
                    with probe.Iperf3Server(y.netns):
                        gp = probe.iperf3(x.netns, y.ip, seconds=seconds)
                dp["rtt_ms"][label] = round(rtt, 3)
                dp["goodput_mbps"][label] = round(gp, 1)
            check("every pair measured", all(v == v and v > 0 for d in dp.values() for v in d.values()))
            # Every switch here is an OVS userspace datapath sharing this machine's CPUs: the path
            # IaaS <-> HaaS crosses seven of them (IaaS host, ToR, both gateways, L0, L1's own
            # bridge), IaaS <-> IaaS three, so the ratio measures the lab's CPU more than GRE.
            check("TCP through the trunk and the overlay carries at least 100 Mbit/s on every path",
                  min(dp["goodput_mbps"].values()) >= 100,
                  ", ".join(f"{k} {v:.0f}" for k, v in dp["goodput_mbps"].items()))

            kvm_l1s = 0 if quick else 2  # a user VM in a kvm L1 boots TCG inside TCG: minutes
            step("The paper's tables 4 and 5 between QEMU user VMs: IaaS hosts, lxc and kvm L1s from the IaaS image")
            fleet = qemu.Fleet()
            stack.callback(fleet.close)
            qres = _qemu_tables(console, check, lab, admin, tenant["a"], hosts, fleet, data_dir, kvm_l1s,
                                a_iaas.netns)
            res["a-vms"] = qres
            extra_l1s = [x["l1"] for x in qres["resources"] if "l1" in x]
            m = qemu.measure(fleet, count=10 if quick else 20, seconds=seconds)
            report["measured"] = {"rtt_ms": m["rtt_ms"], "goodput_mbps": m["goodput_mbps"]}
            report["not_measured"].update(m["not_measured"])
            if not kvm_l1s:
                for label in ("IaaS-HaaS(K)", "HaaS(K)-HaaS(K)"):
                    report["not_measured"][label] = "quick mode: no kvm L1 (a user VM in one boots in minutes)"
            report["user_vms"] = {"boot_s": fleet.boot_s, "retransmits": m["retransmits"], "guest": "QEMU TCG, 1 vCPU, "
                                  f"{uservm.GUEST_MEMORY_MB} MB, this machine's kernel, busybox and iperf3"}
            console.print(_matrix_table(report))
            want = [lb for lb, *_ in qemu.PAIRS if "(K)" not in lb or kvm_l1s]
            got = report["measured"]
            check("every pair answered from guest to guest: RTT and goodput > 0", all(
                got["rtt_ms"].get(lb, 0) > 0 and got["goodput_mbps"].get(lb, 0) > 0 for lb in want),
                "; ".join(f"{k}: {v}" for k, v in m["not_measured"].items() if k in want))
            left = fleet.destroy()
            check("the QEMU user VMs destroyed leave no process, tap, port or directory on their hosts",
                  left == [], ", ".join(left))

            step("Isolation: same VLAN IDs, same subnets, same addresses in both tenants")
            for me, other in (("a", "b"), ("b", "a")):
                mine = {nl.links(l1)[n]["address"] for l1 in l1s[me] for n in nl.links(l1) if n.startswith("iris1")}
                theirs = {nl.links(l1)[n]["address"] for l1 in l1s[other] for n in nl.links(l1) if n.startswith("iris1")}
                seen = set()
                for ip in ("10.0.101.51", "10.0.101.52"):
                    seen |= set(probe.arping(lab.ns(f"{me}mgmt"), "eth0", ip))
                check(f"{me}'s management host hears only {me}'s L1s for 10.0.101.51-52 (ARP)",
                      seen == mine and not (seen & theirs))
                vm = uvms[(me, "haas", 1)]
                check(f"{me}'s user VM reaches {me}'s IaaS user VM, whose twin in {other} has the same address",
                      probe.ping(vm.netns, uvms[(me, "iaas", 1)].ip, count=3) == 3)
            agents = lab.plan.agents
            silent = all(probe.ping(l1, a.ip, count=1, wait=0.5) == 0 and not probe.tcp_connect(l1, a.ip, a.port, 1.0)
                         for t in l1s for l1 in l1s[t] for a in agents)
            check("no L1 reaches the HaaS control network or any agent", silent,
                  f"{len(agents)} agents x {sum(map(len, l1s.values()))} L1s")
            check("the IaaS sides were never reconfigured by provisioning",
                  all(set(nl.links(lab.ns(f"{t}mgmt"))) == iaas_links[t] for t in ("a", "b")))

            step("Release and terminate")
            for h in l1_hosts:  # the IaaS evacuates and removes its hosts first
                h.stop()
            for t in ("a", "b"):
                tenant[t].post(f"/reservations/{res[t]['id']}/release")
                r = tenant[t].post(f"/reservations/{res[t]['id']}/terminate")
                check(f"{t}: released and terminated", r["lifecycle_state"] == "Terminated")
            r = tenant["a"].post(f"/reservations/{res['a-vms']['id']}/release")
            r = tenant["a"].post(f"/reservations/{res['a-vms']['id']}/terminate")
            check("a: the IaaS-image L1s released and terminated", r["lifecycle_state"] == "Terminated")
            gone = [n for n in [*extra_l1s, *(n for t in l1s for n in l1s[t])] if nl.netns_exists(n)]
            check("no L1 remains on any L0", gone == [], ", ".join(gone))
            states = coord.engine.desired_states()
            check("no host holds desired state any more", all(not s.ops for _, s in states.values()))
    except (ApiError, RuntimeError, OSError) as e:
        check("the scenario ran to its end", False, f"{type(e).__name__}: {e}")
    finally:
        with console.status("iris lab down"):
            realizer.down(name)
        check("lab down: nothing of the lab remains", realizer.leftovers(name) == [])
        shutil.rmtree(data_dir, ignore_errors=True)
    report["checks"] = {n: ok for n, ok, _ in check.items}
    report["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    charts = _charts(report, out, console)
    console.rule()
    console.print(f"{len(check.items) - len(check.failed)} of {len(check.items)} checks passed in "
                  f"{report['elapsed_s']:.0f} s; wrote {out / 'report.json'}" + (f", {', '.join(charts)}" if charts else ""))
    return 1 if check.failed else 0


def _qemu_tables(console: Console, check: Checks, lab, admin, tenant, iaas_hosts: dict, fleet: qemu.Fleet,
                 data_dir: Path, kvm_l1s: int, peer_ns: str) -> dict:
    """Tenant a's IaaS logs into two of its IaaS hosts and into the L1s of a second reservation
    (lxc, and ``kvm_l1s`` kvm, from the IaaS image) and deploys a QEMU user VM on each (see
    :mod:`iris_haas.demo.qemu`); returns the reservation once the VMs that could boot answer."""
    with console.status("the OS images with the IaaS stack (Open vSwitch, QEMU): built once, then cached"):
        imgs = qemu.build_images()
    for kind, path in imgs.items():
        admin.post("/images", {"name": f"iaas-{kind}", "l1_kind": kind, "path": str(path),
                               "description": "Debian with the IaaS's hypervisor stack"})
    key, pub = uservm.keypair(data_dir, "iaas-mgmt")
    mgmt = lab.ns("amgmt")
    tpl = uservm.Template.local(data_dir)
    for i in (1, 2):
        h = iaas_hosts[("a", i)]
        ip = f"10.0.101.{30 + i}"
        sshd = uservm.Sshd(h.netns, ip, data_dir / f"ah{i}-sshd", pub).start()
        fleet.stack.callback(sshd.stop)
        fleet.hosts[f"i{i}"] = uservm.HostSsh(mgmt, key, ip, workdir=str(data_dir / f"ah{i}-uvm"), ovs_db=h.ovs.db)
    t0 = time.monotonic()
    items = qemu.compute_items(pub, kvm=kvm_l1s)
    with console.status("reserve, commit, provision the L1s the IaaS adds as hosts"):
        r = tenant.post("/reservations", {"description": "IaaS hosts", "duration_s": 600, "items": items})
        tenant.post(f"/reservations/{r['id']}/commit")
        r = tenant.post(f"/reservations/{r['id']}/provision")
    l1 = {}
    for x in (x for x in r["resources"] if "l1" in x):
        item = items[0] if x["l1_kind"] == "lxc" else items[1]
        l1[f"{x['l1_kind'][0]}{x['n'] + 1}"] = qemu.l1_host(mgmt, key, x, item["addresses"][x["n"]])
    mgmt_vlan = lab.topo.tenant("a").mgmt_vlan
    up = {}

    def adopt(k: str, timeout: float, every: float) -> None:
        """The IaaS logs into L1 ``k`` once it answers and prepares its bridge: a host of its own."""
        host, nic = l1[k]
        uservm.ssh_when_up(mgmt, key, host.ip, timeout=timeout, every=every)
        up[k] = round(time.monotonic() - t0, 1)
        uservm.prepare_host(host, nic, mgmt_vlan, qemu.OWNER)
        fleet.prepared.append(host)
        fleet.hosts[k] = host

    with console.status("log into the lxc L1s over SSH, their own bridge, the VMs on the IaaS hosts and lxc L1s"):
        for k in ("l1", "l2"):
            adopt(k, timeout=60, every=0.5)
        for n, k in enumerate(("i1", "i2", "l1", "l2")):
            fleet.deploy(k, f"aq{k}", tpl, GUEST_VLAN, n + 1)
    with console.status("the QEMU guests on the IaaS hosts and lxc L1s boot (TCG)"):
        for k in ("i1", "i2", "l1", "l2"):
            fleet.wait(f"aq{k}", peer_ns, timeout=90)
    with console.status("log into the kvm L1s over SSH (TCG: a boot takes a while), their bridge, their VMs"):
        for n, k in enumerate(sorted(k for k in l1 if k.startswith("k"))):
            try:
                adopt(k, timeout=300, every=1)
                fleet.deploy(k, f"aq{k}", tpl, GUEST_VLAN, n + 5)
            except (uservm.DeployFailed, OSError, subprocess.TimeoutExpired) as e:
                fleet.errors[f"aq{k}"] = f"kvm L1 {k}: {type(e).__name__}: {str(e)[-300:]}"
    check(f"a: {len(l1)} L1s from the IaaS image (2 lxc, {kvm_l1s} kvm) provisioned; the IaaS management "
          "host logs into each over SSH and prepares its bridge", all(k in fleet.hosts for k in l1),
          "s from reserve to SSH: " + ", ".join(f"{k} {v}" for k, v in up.items()))
    with console.status("the QEMU guests in the kvm L1s boot (TCG inside TCG)"):
        for name in fleet.vms:
            if name not in fleet.boot_s and name not in fleet.errors:
                fleet.wait(name, peer_ns, timeout=420)
    check(f"{len(fleet.vms)} QEMU user VMs deployed over SSH answer on their serial shell",
          len(fleet.boot_s) == len(fleet.vms) == len(l1) + 2,
          "s from deploy: " + ", ".join(f"{k} {v}" for k, v in fleet.boot_s.items()))
    return r


def _observed_limits(lab, tenant: str, reservation: dict, l1s: list[str]) -> dict[str, list[float]]:
    """The rates the agents find really set in tc for one tenant: its class on the HaaS gateway's
    uplink (keyed by its IaaS gateway's address) and its L1s' ports."""
    cls = tc.tenant_class(lab.topo.tenant(tenant).gateway_ip)
    ports = {names.l1_port(x)[0] for x in l1s}
    out: dict[str, list[float]] = {"tunnel_limit": [], "shape": []}
    for host in ["hgw", *sorted({x["node"] for x in reservation["resources"] if "node" in x})]:
        with lab.client(host) as c:
            for o in c.state()["observed"]:
                if (o["op"] == "tunnel_limit" and o["class"] == tc.handle(cls)) or (
                        o["op"] == "shape" and o["port"] in ports):
                    out[o["op"]].append(float(o["rate_mbit"]))
    return {k: sorted(v) for k, v in out.items()}


def _terminate_all(admin) -> None:
    """On the way out, even after a failure: no reservation keeps an L1 alive."""
    for r in admin.get("/reservations"):
        if r["lifecycle_state"] not in ("Terminated",):
            try:
                admin.post(f"/reservations/{r['id']}/terminate")
            except ApiError:
                pass


def _mac(tenant: str, side: int, i: int) -> str:
    return f"02:1a:{ord(tenant):02x}:{side:02x}:00:{i:02x}"


def _labels(report: dict) -> list[str]:
    """The pairs measured or in the paper, in the tables' order."""
    have = {lb for d in (report["measured"], report.get("datapath", {}), report["paper"]) for k in d for lb in d[k]}
    return [lb for lb, *_ in qemu.PAIRS if lb in have]


def _matrix_table(report: dict) -> Table:
    t = Table(title="user VM to user VM (paper's tables 4 and 5): QEMU guests, namespaces (data path alone), paper")
    for c in ("pair", "RTT ms QEMU", "netns", "paper", "Mbit/s QEMU", "netns", "paper"):
        t.add_column(c, justify="right" if c != "pair" else "left")
    m, d, p = report["measured"], report.get("datapath", {}), report["paper"]

    def cell(src: dict, key: str, label: str, fmt: str) -> str:
        v = src.get(key, {}).get(label)
        return "-" if v is None else format(v, fmt)

    for label in _labels(report):
        t.add_row(label, cell(m, "rtt_ms", label, ".3f"), cell(d, "rtt_ms", label, ".3f"), cell(p, "rtt_ms", label, "g"),
                  cell(m, "goodput_mbps", label, ".1f"), cell(d, "goodput_mbps", label, ".0f"),
                  cell(p, "goodput_mbps", label, "g"))
    return t


def _charts(report: dict, out: Path, console: Console) -> list[str]:
    """The matrix as a bar chart beside the paper's. matplotlib is the optional extra ``report`` (no
    agent, nor the coordinator, needs it): without it the demo says so and writes report.json only."""
    m = report["measured"]
    if not m["rtt_ms"] and not report.get("datapath"):
        return []
    try:
        import matplotlib
    except ImportError:
        console.print("[yellow]no chart[/yellow]: matplotlib is not installed (pip install 'iris-haas\\[report]'; "
                      "`make demo` installs it)")
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(report)
    x = range(len(labels))
    series = (("QEMU user VMs (TCG), this machine", m), ("namespaces (data path alone)", report.get("datapath", {})),
              ("paper (1 GbE, 2013)", report["paper"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, unit in ((axes[0], "rtt_ms", "RTT (ms, log)"), (axes[1], "goodput_mbps", "goodput (Mbit/s)")):
        for j, (name, src) in enumerate(series):
            vals = [src.get(key, {}).get(lb, 0) for lb in labels]
            bars = ax.bar([i + (j - 1) * 0.27 for i in x], vals, width=0.27, label=name)
            ax.bar_label(bars, labels=[f"{v:.3g}" if v else "" for v in vals], fontsize=6, rotation=90, padding=2)
        if key == "rtt_ms":
            ax.set_yscale("log")
        ax.set_xticks(list(x), labels, fontsize=8, rotation=15)
        ax.set_ylabel(unit)
        ax.margins(y=0.25)
        ax.legend(fontsize=7)
    fig.suptitle("User VM to user VM: IaaS and HaaS (lxc L1: L, kvm L1: K) across the GRE trunk; 0: not measured")
    fig.tight_layout()
    path = out / "demo-network.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]
