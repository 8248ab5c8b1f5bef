"""Open vSwitch: the rows Iris writes, as data, and as ``ovs-vsctl`` command lines.

What a bridge, a port and a GRE tunnel look like in OVSDB is declared once, by the ``*_columns``
functions (column name -> value, in the form :mod:`iris_haas.linux.ovsdb` reads rows back in:
``None`` for an empty optional column, a list for a set, a dict for a map). A change to OVSDB is
one of the small :data:`Change` classes built from those columns. The reconciler hands a list of
them to :class:`iris_haas.linux.ovsdb.Ovsdb`, which writes them in one transaction through the
IDL; the same objects render as ``ovs-vsctl`` sub-commands (:meth:`vsctl`), which
:func:`txn` chains with ``--`` into one :class:`~iris_haas.linux.runner.Cmd`: the configuration
an operator pastes, and the lab's own infrastructure. A create is ``--may-exist`` and then *sets*
every column given, so running it again converges an existing row; a delete is ``--if-exists``.

:class:`OvsInstance` runs a private ``ovsdb-server`` + ``ovs-vswitchd`` pair for one network
namespace (own database, sockets, pidfiles and ``OVS_RUNDIR``), as the lab needs where there is no
OVS kernel datapath: bridges there use ``datapath_type=netdev``. In production the datapath type
is ``system`` and the host's own OVS is used; that is a configuration value, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iris_haas.contract import names
from iris_haas.linux import proc
from iris_haas.linux.runner import Cmd, CommandFailed, Runner, cmd

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
Sub = list[str]  # one ovs-vsctl sub-command
Columns = Mapping[str, Any]

# OVS 3.1 deletes any qdisc it did not create on a port it configures, unless the port has a QoS
# of this type; Iris's htb on a gateway's uplink needs one.
NOOP_QOS = "linux-noop"


# ---------------------------------------------------------------- the rows, declared once

def bridge_columns(*, datapath_type: str, external_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"datapath_type": datapath_type, "external_ids": dict(external_ids or {})}


def port_columns(*, tag: int | None = None, trunks: Iterable[int] = (), vlan_mode: str | None = None,
                 protected: bool = False, external_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every VLAN column, so a changed spec overwrites the old one.

    ``tag`` alone (``vlan_mode=access``): an access port. ``tag`` with ``vlan_mode=native-untagged``:
    the tag is the native VLAN, sent untagged, and every other VLAN is trunked (how an L1's NIC
    carries its management VLAN untagged and the IaaS's guest VLANs tagged). No tag and no trunks:
    a trunk of every VLAN (tunnels, uplinks).
    """
    return {"tag": tag, "trunks": sorted(trunks), "vlan_mode": vlan_mode, "protected": protected,
            "external_ids": dict(external_ids or {})}


def gre_columns(*, remote_ip: str, key: int | None = None, local_ip: str | None = None) -> dict[str, Any]:
    """The Interface of a GRE tunnel port. GRE carries whole Ethernet frames with their 802.1Q
    tags, so one tunnel with no tag and no trunks carries every VLAN."""
    options = {"remote_ip": remote_ip}
    if key is not None:
        options["key"] = str(key)
    if local_ip:
        options["local_ip"] = local_ip
    return {"type": "gre", "options": options}


def patch_columns(peer: str) -> dict[str, Any]:
    """The Interface of a patch port: one end of a link between two bridges of one OVS."""
    return {"type": "patch", "options": {"peer": peer}}


# ---------------------------------------------------------------- changes

def _value(v: Any) -> str:
    if v is None:
        return "[]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


def _words(columns: Columns) -> list[str]:
    """``col=value ...``. A map is written key by key (``col:key="value"``, which ovs-vsctl merges
    into the row): the rows these commands make are new, or made before by the same command with
    the same keys."""
    words: list[str] = []
    for col, v in columns.items():
        if isinstance(v, Mapping):
            words += [f'{col}:{k}="{x}"' for k, x in sorted(v.items())]
        else:
            words.append(f"{col}={_value(v)}")
    return words


def _set(table: str, record: str, columns: Columns) -> list[Sub]:
    words = _words(columns)
    return [["set", table, record, *words]] if words else []


def _show(columns: Columns) -> str:
    return " ".join(f"{k}={dict(v) if isinstance(v, Mapping) else _value(v)}" for k, v in columns.items())


@dataclass(frozen=True)
class AddBridge:
    """The bridge exists with these Bridge columns (and these on its internal Interface)."""

    name: str
    columns: Columns = field(default_factory=dict, hash=False)
    interface: Columns = field(default_factory=dict, hash=False)

    def vsctl(self) -> list[Sub]:
        return [["--may-exist", "add-br", self.name], *_set("Bridge", self.name, self.columns),
                *_set("Interface", self.name, self.interface)]

    def __str__(self) -> str:
        return f"add-br {self.name} {_show(self.columns)} {_show(self.interface)}".rstrip()


@dataclass(frozen=True)
class DelBridge:
    name: str

    def vsctl(self) -> list[Sub]:
        return [["--if-exists", "del-br", self.name]]

    def __str__(self) -> str:
        return f"del-br {self.name}"


@dataclass(frozen=True)
class AddPort:
    """The port exists on ``bridge`` with these Port columns and these on its Interface."""

    bridge: str
    name: str
    columns: Columns = field(default_factory=dict, hash=False)
    interface: Columns = field(default_factory=dict, hash=False)

    def vsctl(self) -> list[Sub]:
        return [["--may-exist", "add-port", self.bridge, self.name], *_set("Port", self.name, self.columns),
                *_set("Interface", self.name, self.interface)]

    def __str__(self) -> str:
        return f"add-port {self.bridge} {self.name} {_show(self.columns)} {_show(self.interface)}".rstrip()


@dataclass(frozen=True)
class DelPort:
    name: str

    def vsctl(self) -> list[Sub]:
        return [["--if-exists", "del-port", self.name]]

    def __str__(self) -> str:
        return f"del-port {self.name}"


@dataclass(frozen=True)
class NoopQos:
    """A ``linux-noop`` QoS on an existing port, so OVS leaves the port's qdisc alone."""

    port: str
    external_ids: Mapping[str, str] = field(default_factory=dict, hash=False)

    def vsctl(self) -> list[Sub]:
        return [["set", "Port", self.port, "qos=@noop"],
                ["--id=@noop", "create", "QoS", *_words({"type": NOOP_QOS, "external_ids": self.external_ids})]]

    def __str__(self) -> str:
        return f"qos {self.port} type={NOOP_QOS}"


Change = AddBridge | DelBridge | AddPort | DelPort | NoopQos


# ---------------------------------------------------------------- ovs-vsctl

def txn(db: str, *subs: Sub, timeout: int = 10, wait: bool = True) -> Cmd:
    """One OVSDB transaction: ``ovs-vsctl --db=DB -- sub1 -- sub2 ...``."""
    argv = ["ovs-vsctl", f"--db={db}", f"--timeout={timeout}"]
    if not wait:
        argv.append("--no-wait")
    for s in subs:
        if s:
            argv += ["--", *s]
    return cmd(*argv)


def add_bridge(name: str, *, datapath_type: str = "system", external_ids: Mapping[str, str] | None = None,
               mtu: int | None = None) -> list[Sub]:
    return AddBridge(name, bridge_columns(datapath_type=datapath_type, external_ids=external_ids),
                     {"mtu_request": mtu} if mtu else {}).vsctl()


def del_bridge(name: str) -> list[Sub]:
    return DelBridge(name).vsctl()


def add_port(bridge: str, name: str, *, tag: int | None = None, trunks: Iterable[int] = (),
             vlan_mode: str | None = None, protected: bool = False,
             external_ids: Mapping[str, str] | None = None) -> list[Sub]:
    """Add (or converge) a port; see :func:`port_columns`."""
    return AddPort(bridge, name, port_columns(tag=tag, trunks=trunks, vlan_mode=vlan_mode, protected=protected,
                                              external_ids=external_ids)).vsctl()


def gre_port(bridge: str, name: str, *, remote_ip: str, key: int | None = None, local_ip: str | None = None,
             protected: bool = False, external_ids: Mapping[str, str] | None = None) -> list[Sub]:
    return AddPort(bridge, name, port_columns(protected=protected, external_ids=external_ids),
                   gre_columns(remote_ip=remote_ip, key=key, local_ip=local_ip)).vsctl()


def del_port(name: str) -> list[Sub]:
    return DelPort(name).vsctl()


# ---------------------------------------------------------------- a private OVS per namespace

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
            pid = proc.read_pid(self.rundir / f"{d}.pid")
            if pid is not None:
                out[d] = pid
        return out

    def running(self) -> bool:
        pids = self.pids()
        return len(pids) == 2 and all(proc.alive(p) for p in pids.values())

    def stop(self, runner: Runner | None = None) -> None:
        """Delete our bridges first (netdev ports are persistent taps), then stop by PID."""
        if runner is not None and self.running():
            try:
                bridges = runner.run(cmd("ovs-vsctl", f"--db={self.db}", "--timeout=5", "list-br")).split()
                if bridges:
                    runner.run(txn(self.db, *[s for b in bridges for s in del_bridge(b)], timeout=5))
            except CommandFailed:
                pass
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pids().get(name)
            if pid:
                proc.kill_pid(pid)
