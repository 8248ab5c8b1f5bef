"""Realize a :class:`~iris_haas.lab.topology.LabPlan`: up, down, status.

Everything the lab makes is found again by name, so ``down`` works from nothing but the lab's
name, also after a crash half-way through ``up``:

* namespaces ``iris-<lab>-*`` (every link of the lab lives inside one; nothing is created in
  the host's own namespace, so deleting the namespaces deletes every veth and tap);
* ``RUN_ROOT/<lab>/``: OVS databases, sockets, pidfiles and logs; the control channel's CA
  (``ca/``, also the coordinator's certificate) and each agent's certificate (``<node>/tls``),
  pidfile and state.

``down`` stops the OVS daemons (bridges deleted first) and the agents by the PIDs in their
pidfiles, then any other process still inside one of the lab's namespaces (tests' iperf3
servers, say), again by PID, then deletes the namespaces and the run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from iris_haas.agent.client import AgentClient, AgentError, ClientTls
from iris_haas.contract import names
from iris_haas.control import pki
from iris_haas.hostd.gateway import GatewaySpec, iaas_gateway_ops
from iris_haas.hostd.l1 import kvm, make_drivers
from iris_haas.hostd.reconciler import Host as HostDriver
from iris_haas.hostd.reconciler import HostConfig
from iris_haas.lab.topology import LabPlan, Topology, expand
from iris_haas.lab.upa import UPA_PORT
from iris_haas.linux import cgroup, ovs, ovsdb
from iris_haas.linux import netlink as nl
from iris_haas.linux.netns import processes_in, socket_in_netns
from iris_haas.linux.proc import alive, kill_pid, read_pid
from iris_haas.linux.runner import SubprocessRunner, cmd

RUN_ROOT = Path(os.environ.get("IRIS_LAB_RUN", "/run/iris/lab"))
LAB_OWNER = "lab:{}"


def rundir(lab: str) -> Path:
    return RUN_ROOT / lab


def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(16, n)))


@dataclass
class Lab:
    """A realized (or to-be-realized) lab: the plan plus helpers to reach its nodes."""

    plan: LabPlan

    @property
    def topo(self) -> Topology:
        return self.plan.topo

    @property
    def name(self) -> str:
        return self.topo.name

    @property
    def dir(self) -> Path:
        return rundir(self.name)

    def ns(self, node: str) -> str:
        return self.topo.ns(node)

    def ovs(self, node: str) -> ovs.OvsInstance:
        return ovs.OvsInstance(self.dir / node, self.ns(node), LAB_OWNER.format(self.name))

    @property
    def upa_url(self) -> str:
        """The lab's NSI provider (:mod:`iris_haas.lab.upa`), on the control network."""
        return f"http://{self.topo.ctl_ip('ctl')}:{UPA_PORT}/nsi/provider"

    def nsi_listener(self) -> tuple[socket.socket, str]:
        """A socket on the control network for a coordinator to take the uPA's callbacks on
        (``LocalCoordinator(sockets=...)``), and the reply URL that names it."""
        ip = self.topo.ctl_ip("ctl")
        s = socket_in_netns(self.ns("ctl"), proto=socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY on it
        s.bind((ip, 0))
        return s, f"http://{ip}:{s.getsockname()[1]}/v1/nsi/requester"

    @property
    def ca_dir(self) -> Path:
        """The lab's CA; also the coordinator's IRIS_AGENT_TLS_DIR (its certificate is in it)."""
        return self.dir / "ca"

    def tls_dir(self, node: str) -> Path:
        """An agent's ``--tls-dir``."""
        return self.dir / node / "tls"

    def coordinator_tls(self) -> ClientTls:
        return ClientTls.coordinator(self.ca_dir)

    def agent_url(self, node: str) -> str:
        a = next(a for a in self.plan.agents if a.node == node)
        return f"https://{a.ip}:{a.port}"

    def client(self, node: str, timeout: float = 60.0, *, tls: ClientTls | None = None,
               expect: str | None = None) -> AgentClient:
        """A client of ``node``'s agent, from the control network, as the coordinator (or with
        ``tls``: another certificate, none, a foreign CA's; ``expect``: the host name its
        certificate must give, ``node`` unless told), so a bench can try what an agent refuses."""
        return AgentClient(self.agent_url(node), tls or self.coordinator_tls(), node=expect or node,
                           netns=self.ns("ctl"), timeout=timeout)

    def agent_nodes(self) -> list[str]:
        return [a.node for a in self.plan.agents]

    def gateway_spec(self, tenant: str) -> GatewaySpec:
        x = self.topo.tenant(tenant)
        return GatewaySpec(tenant=tenant, haas_gateway_ip=self.topo.haas.gateway_ip, key=x.key, trunk_port="tor",
                           wan_port="up", datapath_type=self.topo.datapath_type)


def load(path: str | Path | None = None, **override) -> Lab:
    return Lab(expand(Topology.load(path, **override)))


def from_run(lab: str) -> Lab | None:
    """The lab as it was brought up (its topology is saved in the run directory)."""
    p = rundir(lab) / "topology.json"
    if not p.exists():
        return None
    return Lab(expand(Topology.model_validate_json(p.read_text())))


# ---------------------------------------------------------------- up

def up(lab: Lab, *, agents: bool = True, timeout: float = 30.0, ephemeral: bool = False) -> dict:
    """Create the lab; idempotent (an existing piece is kept). Returns timings.

    ``ephemeral``: the lab belongs to this process (a test session, a bench); if the process
    dies without taking it down, :func:`sweep_stale` removes it later.
    """
    t0 = time.monotonic()
    p = lab.plan
    r = SubprocessRunner()
    lab.dir.mkdir(parents=True, exist_ok=True)
    if ephemeral:
        (lab.dir / "ephemeral.pid").write_text(f"{os.getpid()}\n")
    (lab.dir / "topology.json").write_text(lab.topo.model_dump_json())
    if not (lab.ca_dir / pki.CA_KEY).exists():
        pki.init_ca(lab.ca_dir)
    for a in p.agents:
        if not (lab.tls_dir(a.node) / names.HOST_CERT).exists():
            pki.enroll_host(lab.ca_dir, a.node, lab.tls_dir(a.node))
    times: dict[str, float] = {}
    try:
        with _pool(len(p.namespaces)) as ex:
            new = [n for n in p.namespaces if nl.ensure_netns(n)]
            list(ex.map(lambda n: r.run(nl.netns_sysctl_cmds(n)), new))
        times["netns"] = time.monotonic() - t0
        with _pool(len(p.veths)) as ex:
            list(ex.map(lambda v: nl.ensure_veth(v.a, v.a_ns, v.b, v.b_ns, mtu=v.mtu), p.veths))
        with _pool(len(p.linux_bridges)) as ex:
            list(ex.map(_linux_bridge, p.linux_bridges))
        for ns, ifname, cidr in p.addrs:
            nl.ensure_addr(ns, ifname, cidr)
        times["links"] = time.monotonic() - t0
        if agents:
            _start_upa(lab, r)
        # agents first: their start (a Python interpreter each) overlaps the OVS work below;
        # they touch OVS only when asked, after _wait_agents
        with _pool(1) as bg:
            started = bg.submit(_start_agents, lab, r) if agents else None
            with _pool(len(p.ovs)) as ex:
                list(ex.map(lambda o: _ovs_node(lab, o, r), p.ovs))
            if started is not None:
                started.result()
        times["ovs"] = time.monotonic() - t0
        for h in p.hosts:
            nl.set_link(h.ns, h.ifname, up=True)
            nl.ensure_addr(h.ns, h.ifname, h.addr)
        with _pool(len(p.hosts)) as ex:
            list(ex.map(lambda h: r.run(nl.tx_offload_off_cmd(h.ns, h.ifname)), p.hosts))
        # the IaaS side, built once: each gateway gets Iris's generated configuration
        with _pool(len(lab.topo.iaas)) as ex:
            list(ex.map(lambda x: iaas_gateway(lab, x.tenant, r), lab.topo.iaas))
        times["iaas"] = time.monotonic() - t0
        if agents:
            _wait_agents(lab, timeout)
            _wait_upa(lab, timeout)
            times["agents"] = time.monotonic() - t0
            from iris_haas.lab import tenants

            # the inter-DC trunks (each tenant's L2 extension, planned with nothing on it yet), on
            # agents that hold nothing yet: `up` on a running lab must not undo what a coordinator
            # has since provisioned
            base = {n: d for n, d in tenants.desired(lab.topo).items() if d.ops}

            def holds_nothing(n: str) -> bool:
                with lab.client(n) as c:
                    return not c.desired()["ops"]

            with _pool(len(base)) as ex:
                fresh = {n for n, empty in zip(base, ex.map(holds_nothing, base)) if empty}
            tenants.push(lab, base, only=fresh)
            times["overlay"] = time.monotonic() - t0
    except BaseException:
        # leave nothing half-made behind
        down(lab.name)
        raise
    times["total"] = time.monotonic() - t0
    return times


def _linux_bridge(b) -> None:
    with nl.ipr(b.ns) as h:
        idx = nl.link_index(h, b.name)
        if idx is None:
            h.link("add", ifname=b.name, kind="bridge")
            idx = nl.link_index(h, b.name)
        h.link("set", index=idx, state="up", mtu=b.mtu)
        for port in b.ports:
            pidx = nl.link_index(h, port)
            h.link("set", index=pidx, master=idx, state="up")
    if b.addr:
        nl.ensure_addr(b.ns, b.name, b.addr)


def _ovs_node(lab: Lab, o, r: SubprocessRunner) -> None:
    inst = lab.ovs(o.node)
    inst.start(r)
    owner = {names.OWNER: LAB_OWNER.format(lab.name)}
    subs: list = []
    for b in o.bridges:
        subs += ovs.add_bridge(b.name, datapath_type=lab.topo.datapath_type, external_ids=owner, mtu=b.mtu)
        for port in b.ports:
            subs += ovs.add_port(b.name, port.name, tag=port.tag, vlan_mode=port.vlan_mode, external_ids=owner)
    r.run(ovs.txn(inst.db, *subs))
    for b in o.bridges:
        if b.addr:
            nl.set_link(o.ns, b.name, up=True, mtu=b.mtu)
            nl.ensure_addr(o.ns, b.name, b.addr)


def iaas_gateway(lab: Lab, tenant: str, r: SubprocessRunner | None = None, *, circuit_vlan: int | None = None) -> None:
    """The tenant's IaaS gateway configured as its operator would with `iris gateway-config`: the
    trunk over the internet, or inside the NSI circuit on ``circuit_vlan``."""
    node = f"{tenant}gw"
    cfg = HostConfig(db=lab.ovs(node).db, netns=lab.ns(node), datapath_type=lab.topo.datapath_type,
                     underlay_mtu=lab.topo.underlay_mtu)
    with HostDriver(cfg, r or SubprocessRunner()) as h:
        h.apply(iaas_gateway_ops(replace(lab.gateway_spec(tenant), circuit_vlan=circuit_vlan)))


def _start_upa(lab: Lab, r: SubprocessRunner) -> None:
    """The lab's WAN provider, in the control network's namespace (it reaches the internet
    switch's namespace itself), unless it runs already."""
    d = lab.dir / "upa"
    d.mkdir(parents=True, exist_ok=True)
    pidfile = d / "upa.pid"
    if pidfile.exists() and alive(read_pid(pidfile) or -1):
        return
    pid = r.spawn(cmd(sys.executable, "-m", "iris_haas.lab.wan", "--lab", lab.name, netns=lab.ns("ctl")),
                  log=str(d / "upa.log"))
    pidfile.write_text(f"{pid}\n")


def _wait_upa(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        s = socket_in_netns(lab.ns("ctl"))
        try:
            s.settimeout(1.0)
            s.connect((lab.topo.ctl_ip("ctl"), UPA_PORT))
            return
        except OSError:
            if time.monotonic() > deadline:
                log = lab.dir / "upa" / "upa.log"
                raise RuntimeError(f"the lab's uPA did not start: {log.read_text()[-500:] if log.exists() else ''}") from None
            time.sleep(0.05)
        finally:
            s.close()


# where the lab's storage pools are made (tests and benches create them with mkdtemp here)
LAB_POOL_ROOT = "/var/tmp"
# where the lab's L1 OS images are (built once, kept: see iris_haas.hostd.images)
LAB_IMAGE_ROOT = "/var/cache/iris-test-images"


def _start_agents(lab: Lab, r: SubprocessRunner) -> None:
    """Start the agents that are not running, all through one launcher (imports once, forks one
    process per agent into its namespace; see :mod:`iris_haas.agent.launcher`)."""
    specs = []
    for a in lab.plan.agents:
        d = lab.dir / a.node
        d.mkdir(parents=True, exist_ok=True)
        pidfile = d / "agent.pid"
        if pidfile.exists() and alive(read_pid(pidfile) or -1):
            continue
        specs.append({"netns": a.ns, "log": str(d / "agent.log"), "listen": a.ip, "port": a.port, "node": a.node,
                      "db": lab.ovs(a.node).db, "datapath_type": lab.topo.datapath_type,
                      "underlay_mtu": lab.topo.underlay_mtu, "state_dir": str(d / "agent"),
                      "tls_dir": str(lab.tls_dir(a.node)), "pidfile": str(pidfile),
                      "pool_root": [LAB_POOL_ROOT], "image_root": [LAB_IMAGE_ROOT]})
    if not specs:
        return
    spec = lab.dir / "agents.json"
    spec.write_text(json.dumps(specs))
    r.run(cmd(sys.executable, "-m", "iris_haas.agent.launcher", str(spec)), timeout=60)


def start_agent(lab: Lab, node: str) -> None:
    """(Re)start one agent, e.g. after a test killed it."""
    a = next(a for a in lab.plan.agents if a.node == node)
    _start_agents(Lab(LabPlan(lab.topo, [], [], [], [], [], [], [a])), SubprocessRunner())
    _wait_agents(lab, 30.0, [node])


def enroll_agent(lab: Lab, node: str) -> int:
    """Enrol ``node`` again (a new key and certificate: rotation) and have its running agent
    load them now (SIGHUP; it would within its check interval anyway). Returns the new serial."""
    cert = pki.enroll_host(lab.ca_dir, node, lab.tls_dir(node))
    pid = read_pid(lab.dir / node / "agent.pid")
    if pid and alive(pid):
        os.kill(pid, signal.SIGHUP)
    return cert.serial_number


def ensure_agents(lab: Lab) -> list[str]:
    """Restart any agent of the lab that is not running; returns the nodes restarted."""
    dead = [a.node for a in lab.plan.agents
            if not alive(read_pid(lab.dir / a.node / "agent.pid") or -1)]
    for n in dead:
        start_agent(lab, n)
    return dead


def sweep_stale() -> list[str]:
    """Take down ephemeral labs whose creating process is gone (a test run that was killed)."""
    gone = []
    if not RUN_ROOT.exists():
        return gone
    for d in sorted(RUN_ROOT.iterdir()):
        pid = read_pid(d / "ephemeral.pid")
        if pid is not None and not alive(pid):
            down(d.name)
            gone.append(d.name)
    return gone


def stop_agent(lab: Lab, node: str) -> None:
    pid = read_pid(lab.dir / node / "agent.pid")
    if pid:
        kill_pid(pid)


def _wait_agents(lab: Lab, timeout: float, nodes: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    pending = set(nodes or lab.agent_nodes())
    while pending:
        for n in sorted(pending):
            c = lab.client(n, timeout=2.0)
            try:
                c.health()
                pending.discard(n)
            except AgentError:
                pass
            finally:
                c.close()
        if pending:
            if time.monotonic() > deadline:
                logs = {n: _tail(lab.dir / n / "agent.log") for n in pending}
                raise RuntimeError(f"agents not up after {timeout}s: {sorted(pending)}; logs: {logs}")
            time.sleep(0.1)


def _tail(p: Path, n: int = 800) -> str:
    try:
        return p.read_text()[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------- down

def lab_namespaces(lab: str) -> list[str]:
    return nl.list_netns(names.lab_netns(lab, ""))


def down(lab: str) -> dict:
    """Remove everything lab ``lab`` created, and nothing else. Tolerant of a half-made lab."""
    r = SubprocessRunner()
    d = rundir(lab)
    removed = {"processes": 0, "namespaces": 0, "l1s": 0}
    if d.exists():
        for sub in sorted(d.iterdir()):
            if not sub.is_dir():
                continue
            for pidfile in ("agent.pid", "upa.pid"):
                pid = read_pid(sub / pidfile)
                if pid:
                    kill_pid(pid)
                    removed["processes"] += 1
        # the L1s the agents made, by their own drivers: an L1 is more than processes in a
        # namespace (a container's cgroups and disk mount, a VM's run directory and cgroup)
        for sub in sorted(d.iterdir()):
            if (sub / "agent" / "l1").is_dir():
                for drv in make_drivers(sub / "agent" / "l1", r, names.lab_netns(lab, sub.name)).values():
                    for n in drv.names():
                        try:
                            drv.destroy(n)
                            removed["l1s"] += 1
                        except Exception as e:  # noqa: BLE001 - down goes on; leftovers() tells
                            print(f"lab down: {sub.name}: L1 {n}: {e}", file=sys.stderr)
        insts = [ovs.OvsInstance(sub, None) for sub in sorted(d.iterdir()) if (sub / "conf.db").exists()]
        with _pool(len(insts)) as ex:
            list(ex.map(lambda i: i.stop(r), insts))
        removed["processes"] += 2 * len(insts)
    nss = lab_namespaces(lab) + agents_namespaces(d)
    for pid in processes_in(nss):
        kill_pid(pid)
        removed["processes"] += 1
    # Devices die with their namespace (veths, and persistent taps too: checked on this kernel);
    # only a device without netlink ops would be handed to the host's namespace instead. Taps
    # (an L1 VM's NIC, OVS netdev ports) are deleted explicitly anyway, and afterwards nothing
    # of the lab's may have appeared on the host.
    host_before = set(nl.links(None))
    lab_links: set[str] = set()
    for n in nss:
        try:
            here = nl.links(n)
        except Exception:  # a namespace going away under us
            continue
        lab_links |= set(here) - {"lo"}
        for name, info in here.items():
            if info.get("kind") == "tun":
                nl.delete_link(n, name)
    for n in nss:
        nl.delete_netns(n)
        removed["namespaces"] += 1
    moved = sorted((set(nl.links(None)) - host_before) & lab_links)
    for name in moved:  # appeared on the host the moment the lab's namespaces died: the lab's
        nl.delete_link(None, name)
    removed["moved_to_host"] = moved
    shutil.rmtree(d, ignore_errors=True)
    return removed


def agents_namespaces(d: Path) -> list[str]:
    """The namespaces the lab's agents made for L1s, exports and routers (named by the coordinator
    or a test, not by the lab): from their stored desired states and L1 records."""
    out: set[str] = set()
    for state in d.glob("*/agent/desired.json"):
        try:
            ops = json.loads(state.read_text()).get("ops", [])
        except (OSError, ValueError):
            continue
        out |= {o[k] for o in ops for k in ("netns", "l1_netns") if o.get(k)}
    for spec in d.glob("*/agent/l1/*/*.json"):
        try:
            ns = json.loads(spec.read_text()).get("netns")
        except (OSError, ValueError):
            continue
        if ns:
            out.add(ns)
    return sorted(n for n in out if n.startswith(names.PREFIX) and nl.netns_exists(n))


# ---------------------------------------------------------------- status

def status(lab: Lab) -> dict:
    """What exists of the lab, and whether it matches the topology."""
    want = set(lab.plan.namespaces)
    have = set(lab_namespaces(lab.name))
    nodes = {}
    for o in lab.plan.ovs:
        inst = lab.ovs(o.node)
        info: dict = {"ovs": inst.running()}
        if info["ovs"]:
            try:
                st = ovsdb.snapshot(inst.db)
                missing = [b.name for b in o.bridges if b.name not in st.bridges]
                missing += [p.name for b in o.bridges for p in b.ports if p.name not in st.ports]
                info["bridges"] = sorted(st.bridges)
                info["missing"] = missing
            except ovsdb.OvsdbFailed as e:
                info["error"] = str(e)
        nodes[o.node] = info
    for a in lab.plan.agents:
        info = nodes.setdefault(a.node, {})
        try:
            with lab.client(a.node, timeout=15.0) as c:
                s = c.state()
            info["agent"] = "up"
            info["in_sync"] = s["in_sync"]
        except (AgentError, OSError, FileNotFoundError) as e:
            info["agent"] = f"down ({type(e).__name__})"
    matches = (not (want - have) and all(n.get("ovs", True) and not n.get("missing") and not n.get("error")
                                    for n in nodes.values())
               and all(nodes[a.node].get("agent") == "up" for a in lab.plan.agents))
    extra = sorted(have - want)
    return {
        "lab": lab.name,
        "exists": bool(have),
        "matches": matches,
        "namespaces": {"expected": len(want), "present": len(have & want), "missing": sorted(want - have),
                       "extra": extra},
        "nodes": nodes,
    }




def leftovers(lab: str) -> list[str]:
    """Anything of lab ``lab`` that still exists (empty after a clean ``down``)."""
    out = [f"netns {n}" for n in lab_namespaces(lab)]
    if rundir(lab).exists():
        out.append(f"dir {rundir(lab)}")
    prefix = names.lab_netns(lab, "")  # an L1's cgroups and VM run directory carry its namespace's name
    out += [f"cgroup {p}" for p in sorted(cgroup.ROOT.glob(f"*/{prefix}*"))]
    out += [f"dir {p}" for p in sorted(kvm.RUN_ROOT.glob(f"{prefix}*"))]
    with open("/proc/self/mountinfo") as f:
        out += [f"mount {ln.split()[4]}" for ln in f if ln.split()[4].startswith(str(rundir(lab)))]
    return out
