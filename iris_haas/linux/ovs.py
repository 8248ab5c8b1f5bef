"""Open vSwitch driver: OVSDB through ``ovs-vsctl --format=json``, one transaction per change.

Pure functions build ``ovs-vsctl`` sub-commands (lists of words); :func:`txn` chains them with
``--`` into one :class:`~iris_haas.linux.runner.Cmd`, so every change is one OVSDB transaction
(Neutron's ``ovs_lib`` habit). Every create uses ``--may-exist`` and then *sets* every column Iris
cares about, so running it again converges an existing row; every delete uses ``--if-exists``.

:class:`OvsInstance` runs a private ``ovsdb-server`` + ``ovs-vswitchd`` pair for one network
namespace (own database, sockets, pidfiles and ``OVS_RUNDIR``), as the lab needs where there is no
OVS kernel datapath: bridges there use ``datapath_type=netdev``. In production the datapath type
is ``system`` and the host's own OVS is used; that is a configuration value, nothing else changes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iris_haas.contract import names
from iris_haas.linux.runner import Cmd, CommandFailed, Runner, cmd

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
Sub = list[str]  # one ovs-vsctl sub-command


def _kv(prefix: str, d: Mapping[str, Any]) -> list[str]:
    return [f'{prefix}:{k}="{v}"' for k, v in sorted(d.items())]


def txn(db: str, *subs: Sub, timeout: int = 10, wait: bool = True) -> Cmd:
    """One OVSDB transaction: ``ovs-vsctl --db=DB -- sub1 -- sub2 ...``."""
    argv = ["ovs-vsctl", f"--db={db}", f"--timeout={timeout}"]
    if not wait:
        argv.append("--no-wait")
    for s in subs:
        if s:
            argv += ["--", *s]
    return cmd(*argv)


def add_bridge(
    name: str, *, datapath_type: str = "system", external_ids: Mapping[str, str] | None = None,
    fail_mode: str | None = None, mtu: int | None = None,
) -> list[Sub]:
    subs: list[Sub] = [
        ["--may-exist", "add-br", name],
        ["set", "Bridge", name, f"datapath_type={datapath_type}", *_kv("external_ids", external_ids or {})],
    ]
    if fail_mode:
        subs[-1].append(f"fail_mode={fail_mode}")
    if mtu:
        subs.append(["set", "Interface", name, f"mtu_request={mtu}"])
    return subs


def del_bridge(name: str) -> list[Sub]:
    return [["--if-exists", "del-br", name]]


def add_port(
    bridge: str, name: str, *, type: str | None = None, options: Mapping[str, Any] | None = None,
    tag: int | None = None, trunks: Iterable[int] | None = None, vlan_mode: str | None = None,
    protected: bool = False, external_ids: Mapping[str, str] | None = None, mtu: int | None = None,
    qos_noop: bool = False,
) -> list[Sub]:
    """Add (or converge) a port. Every VLAN column is set, so a changed spec overwrites the old one.

    ``tag`` alone: access port. ``tag`` + ``vlan_mode=native-untagged``: the tag is the native VLAN
    and every other VLAN is trunked (how an L1 gets its management VLAN untagged, DESIGN.md). No
    tag and no trunks: a trunk of every VLAN (tunnels, uplinks).
    ``qos_noop``: tell OVS to leave the port's qdisc alone, so Iris's own htb survives (OVS
    otherwise deletes any qdisc it did not create when it configures the port).
    """
    port_cols = [
        f"tag={tag if tag is not None else '[]'}",
        f"trunks={'[' + ','.join(str(t) for t in trunks) + ']' if trunks else '[]'}",
        f"vlan_mode={vlan_mode or '[]'}",
        f"protected={'true' if protected else 'false'}",
        *_kv("external_ids", external_ids or {}),
    ]
    subs: list[Sub] = [["--may-exist", "add-port", bridge, name], ["set", "Port", name, *port_cols]]
    iface = []
    if type:
        iface.append(f"type={type}")
    iface += _kv("options", options or {})
    if mtu:
        iface.append(f"mtu_request={mtu}")
    if iface:
        subs.append(["set", "Interface", name, *iface])
    if qos_noop:
        subs.append(["set", "Port", name, "qos=@noop"])
        subs.append(["--id=@noop", "create", "QoS", "type=linux-noop", *_kv("external_ids", external_ids or {})])
    return subs


def gre_port(
    bridge: str, name: str, *, remote_ip: str, key: int | None = None, local_ip: str | None = None,
    protected: bool = False, external_ids: Mapping[str, str] | None = None,
) -> list[Sub]:
    """A GRE tunnel port. GRE carries whole Ethernet frames with their 802.1Q tags, so one
    tunnel with no tag and no trunks carries every VLAN (the paper's figure 5)."""
    options: dict[str, Any] = {"remote_ip": remote_ip}
    if key is not None:
        options["key"] = key
    if local_ip:
        options["local_ip"] = local_ip
    return add_port(bridge, name, type="gre", options=options, protected=protected, external_ids=external_ids)


def del_port(name: str) -> list[Sub]:
    return [["--if-exists", "del-port", name]]


def set_other_config(bridge: str, **kv: str) -> list[Sub]:
    return [["set", "Bridge", bridge, *_kv("other_config", kv)]]


def list_cmd(db: str, table: str, columns: Iterable[str]) -> Cmd:
    return cmd("ovs-vsctl", f"--db={db}", "--timeout=10", "--format=json", "--data=json",
               f"--columns={','.join(columns)}", "list", table)


def decode(v: Any) -> Any:
    """OVSDB JSON datum to Python: maps to dict, sets to list, empty set to None."""
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
        kind, body = v
        if kind == "map":
            return {k: decode(x) for k, x in body}
        if kind == "set":
            items = [decode(x) for x in body]
            return items if items else None
        if kind == "uuid" or kind == "named-uuid":
            return body
    return v


def parse_list(out: str) -> list[dict[str, Any]]:
    if not out.strip():
        return []
    doc = json.loads(out)
    return [dict(zip(doc["headings"], (decode(c) for c in row))) for row in doc["data"]]


@dataclass
class OvsState:
    """What one OVS instance holds: bridges, ports (with their bridge) and interfaces, by name."""

    bridges: dict[str, dict]
    ports: dict[str, dict]
    interfaces: dict[str, dict]


def observe(runner: Runner, db: str) -> OvsState:
    br = parse_list(runner.run(list_cmd(db, "Bridge", ["name", "ports", "datapath_type", "external_ids", "_uuid"])))
    ports = parse_list(runner.run(list_cmd(db, "Port", ["name", "_uuid", "tag", "trunks", "vlan_mode", "protected",
                                                        "external_ids", "interfaces", "qos"])))
    ifs = parse_list(runner.run(list_cmd(db, "Interface", ["name", "_uuid", "type", "options", "mtu_request",
                                                           "ofport", "error", "statistics"])))
    port_by_uuid = {p["_uuid"]: p for p in ports}
    for b in br:
        plist = b["ports"] if isinstance(b["ports"], list) else ([b["ports"]] if b["ports"] else [])
        for pu in plist:
            if pu in port_by_uuid:
                port_by_uuid[pu]["bridge"] = b["name"]
    return OvsState(
        bridges={b["name"]: b for b in br},
        ports={p["name"]: p for p in ports},
        interfaces={i["name"]: i for i in ifs},
    )


@dataclass
class OvsInstance:
    """A private ovsdb-server + ovs-vswitchd for one network namespace.

    Files live in ``rundir`` (database, sockets, pidfiles, logs). The daemons are stopped by the
    PIDs in their pidfiles, never by name.
    """

    rundir: Path
    netns: str | None
    owner: str = ""

    @property
    def db(self) -> str:
        return f"unix:{self.rundir}/db.sock"

    def _env(self) -> dict[str, str]:
        r = str(self.rundir)
        return {"OVS_RUNDIR": r, "OVS_LOGDIR": r, "OVS_DBDIR": r, "OVS_SYSCONFDIR": r}

    def start_cmds(self) -> list[Cmd]:
        r = self.rundir
        env = self._env()
        return [
            cmd("ovsdb-tool", "create", f"{r}/conf.db", SCHEMA),
            cmd("ovsdb-server", f"{r}/conf.db", f"--remote=punix:{r}/db.sock", f"--pidfile={r}/ovsdb-server.pid",
                f"--unixctl={r}/ovsdb-server.ctl", f"--log-file={r}/ovsdb-server.log", "-vconsole:off",
                "--detach", netns=self.netns, env=env),
            cmd("ovs-vsctl", f"--db={self.db}", "--no-wait", "init", "--", "set", "Open_vSwitch", ".",
                f"external_ids:{names.OWNER}={self.owner}"),
            cmd("ovs-vswitchd", self.db, f"--pidfile={r}/ovs-vswitchd.pid", f"--unixctl={r}/ovs-vswitchd.ctl",
                f"--log-file={r}/ovs-vswitchd.log", "-vconsole:off", "--detach", netns=self.netns, env=env),
        ]

    def start(self, runner: Runner) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        if self.running():
            return
        for c in self.start_cmds():
            if c.argv[0] == "ovsdb-tool" and (self.rundir / "conf.db").exists():
                continue
            runner.run(c)

    def appctl(self, *args: str) -> Cmd:
        return cmd("ovs-appctl", f"--target={self.rundir}/ovs-vswitchd.ctl", *args)

    def pids(self) -> dict[str, int]:
        out = {}
        for d in ("ovs-vswitchd", "ovsdb-server"):
            try:
                out[d] = int((self.rundir / f"{d}.pid").read_text().strip())
            except (OSError, ValueError):
                pass
        return out

    def running(self) -> bool:
        pids = self.pids()
        return len(pids) == 2 and all(_alive(p) for p in pids.values())

    def stop(self, runner: Runner | None = None) -> None:
        """Delete our bridges first (netdev ports are persistent taps), then stop by PID."""
        if runner is not None and self.running():
            try:
                st = observe(runner, self.db)
                subs = [s for b in st.bridges for s in del_bridge(b)]
                if subs:
                    runner.run(txn(self.db, *subs, timeout=5))
            except CommandFailed:
                pass
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pids().get(name)
            if pid:
                kill_pid(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_pid(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM one process by PID, SIGKILL if it lingers; tolerant of it being gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            _reap(pid)
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
