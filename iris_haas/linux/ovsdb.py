"""OVSDB through ovsdbapp's IDL: rows read from an in-memory copy, changes in one transaction.

:class:`Ovsdb` holds one connection to one ``ovsdb-server`` (opened at first use, kept until
:meth:`Ovsdb.close`): the IDL keeps a copy of the rows Iris reads (:data:`COLUMNS`), updated by
ovsdbapp's connection thread as the server reports changes, so observing a host reads memory
instead of forking ``ovs-vsctl``. :meth:`Ovsdb.apply` writes a list of
:data:`iris_haas.linux.ovs.Change` s as one transaction and, as ``ovs-vsctl`` does, waits until
``ovs-vswitchd`` has applied it.

Rows come back as plain dicts in the form the ``iris_haas.linux.ovs.*_columns`` functions declare
wanted columns in (an optional column's value or ``None``, a set as a sorted list, a map as a
dict, a reference as the referenced row's UUID), so :func:`matches` compares the two directly.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ovs import jsonrpc
from ovs import poller as ovs_poller
from ovs import stream as ovs_stream
from ovs.db import idl as ovs_idl
from ovsdbapp.backend.ovs_idl import command, connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from iris_haas.contract.errors import IrisError
from iris_haas.linux import ovs

SCHEMA = "Open_vSwitch"
# What the IDL replicates. Not the rest: Interface statistics and status change every few seconds
# on every port and would keep the connection thread busy for nothing.
COLUMNS = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],  # the wait for ovs-vswitchd reads these
    "Bridge": ["name", "ports", "datapath_type", "external_ids", "other_config"],
    "Port": ["name", "interfaces", "tag", "trunks", "vlan_mode", "protected", "external_ids", "qos"],
    "Interface": ["name", "type", "options", "mtu_request", "ofport", "error"],
    "QoS": ["type", "external_ids"],
}


class OvsdbFailed(IrisError):
    status, type = 500, "OvsdbFailed"


@dataclass
class OvsState:
    """What one OVS instance holds: bridges, ports (with their ``bridge``) and interfaces, by name."""

    bridges: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)


def _empty(v: Any) -> Any:
    # an absent optional value, an empty set and an empty map are one datum in OVSDB
    return None if v is None or v == [] or v == {} else v


def matches(want: ovs.Columns, row: Mapping[str, Any] | None) -> bool:
    """Whether ``row`` exists and holds every column of ``want`` (maps exactly: Iris writes them
    whole)."""
    return row is not None and all(_empty(row.get(k)) == _empty(v) for k, v in want.items())


class _Api(impl_idl.OvsdbIdl):
    # ovsdbapp's Backend keeps the connection on the class: the ovsdb_connection setter stores
    # the first connection in a class attribute and ignores every later one, so a second
    # database in one process (a lab node's, a test's) would be read and written through the
    # first one's connection. This plain attribute shadows the property: one connection per
    # instance.
    ovsdb_connection: Any = None


class _SetColumns(command.DbSetCommand):
    """``db_set`` that writes each column whole: ovsdbapp's merges a map key by key (as
    ovs-vsctl's ``col:key=value`` does), which never removes a key Iris no longer wants (the
    ``local_ip`` of a tunnel that has none any more). ``None`` is an optional column's empty
    value."""

    def run_idl(self, txn: Any) -> None:
        record = self.api.lookup(self.table, self.record)
        for col, val in self.col_values:
            self.set_column(record, col, [] if val is None else val)


def _set(api: _Api, table: str, record: Any, columns: ovs.Columns) -> list[Any]:
    return [_SetColumns(api, table, record, *columns.items())] if columns else []


def _commands(api: _Api, c: ovs.Change) -> list[Any]:
    match c:
        case ovs.DelPort(name=name):
            return [api.del_port(name, if_exists=True)]
        case ovs.DelBridge(name=name):
            return [api.del_br(name, if_exists=True)]
        case ovs.AddBridge():
            br = api.add_br(c.name, may_exist=True, datapath_type=c.columns.get("datapath_type"))
            return [br, *_set(api, "Bridge", br, c.columns), *_set(api, "Interface", c.name, c.interface)]
        case ovs.AddPort():
            port = api.add_port(c.bridge, c.name, may_exist=True)
            return [port, *_set(api, "Port", port, c.columns), *_set(api, "Interface", c.name, c.interface)]
        case ovs.NoopQos():
            qos = api.db_create("QoS", type=ovs.NOOP_QOS, external_ids=dict(c.external_ids))
            return [qos, api.db_set("Port", c.port, ("qos", qos))]
    raise TypeError(f"not an OVSDB change: {c!r}")


def _atom(v: Any) -> Any:
    return str(v.uuid) if isinstance(v, ovs_idl.Row) else v


def _row(row: Any, table: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"_uuid": str(row.uuid)}
    for col, schema in table.columns.items():
        v, t = getattr(row, col), schema.type
        if t.is_map():
            out[col] = {_atom(k): _atom(x) for k, x in v.items()}
        elif t.is_scalar():
            out[col] = _atom(v)
        elif t.is_optional():
            out[col] = _atom(v[0]) if v else None
        else:
            out[col] = sorted(_atom(x) for x in v)
    return out


class Ovsdb:
    """One OVSDB server (``db``: ``unix:/path/db.sock`` or ``tcp:host:port``)."""

    def __init__(self, db: str, timeout: float = 10.0):
        self.db = db
        self.timeout = timeout
        self._api: _Api | None = None
        self._lock = threading.Lock()

    def _connect(self) -> _Api:
        with self._lock:
            if self._api is None:
                self._api = self._open()
            return self._api

    def _open(self) -> _Api:
        try:
            helper = idlutils.get_schema_helper(self.db, SCHEMA)
        except Exception as e:  # ovsdbapp raises a bare Exception when no server answers
            raise OvsdbFailed(f"OVSDB {self.db}: {e}") from e
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        idl = connection.OvsdbIdl(self.db, helper)
        try:
            return _Api(connection.Connection(idl, self.timeout))
        except Exception as e:
            idl.close()
            raise OvsdbFailed(f"OVSDB {self.db}: {e}") from e

    def _monitoring(self, api: _Api) -> None:
        # While the connection is down (ovsdb-server restarted) the copy stays as it was, and
        # after the reconnect it is the old one until the server has sent its rows again: wait
        # for both rather than plan against a stale copy. python-ovs's Idl says neither in public
        # (its state stays MONITORING while disconnected); its jsonrpc session says the first.
        deadline = time.monotonic() + self.timeout
        while not (api.idl._session.is_connected() and api.idl.state == ovs_idl.Idl.IDL_S_MONITORING):
            if time.monotonic() > deadline:
                raise OvsdbFailed(f"OVSDB {self.db}: not connected")
            time.sleep(0.05)

    def state(self) -> OvsState:
        api = self._connect()
        self._monitoring(api)
        with api.ovsdb_connection.lock:  # the connection thread updates the copy under it
            tables = api.idl.tables
            bridges = [_row(r, tables["Bridge"]) for r in tables["Bridge"].rows.values()]
            ports = {p["_uuid"]: p for p in (_row(r, tables["Port"]) for r in tables["Port"].rows.values())}
            ifaces = [_row(r, tables["Interface"]) for r in tables["Interface"].rows.values()]
        for b in bridges:
            for uuid in b["ports"]:
                if uuid in ports:
                    ports[uuid]["bridge"] = b["name"]
        return OvsState(bridges={b["name"]: b for b in bridges}, ports={p["name"]: p for p in ports.values()},
                        interfaces={i["name"]: i for i in ifaces})

    def apply(self, changes: Sequence[ovs.Change]) -> None:
        """Every change in one transaction; returns once ovs-vswitchd has applied it (or after
        ``timeout``)."""
        if not changes:
            return
        api = self._connect()
        try:
            # not logged by ovsdbapp: raised with the changes that failed
            with api.transaction(check_error=True, log_errors=False) as txn:
                for c in changes:
                    for cmd in _commands(api, c):
                        txn.add(cmd)
        except Exception as e:
            raise OvsdbFailed(f"OVSDB {self.db}: {'; '.join(str(c) for c in changes)}: {e}") from e

    def close(self) -> None:
        """Stop the connection thread and close the socket; the next use connects again."""
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.ovsdb_connection.stop(timeout=self.timeout)

    def __enter__(self) -> Ovsdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pairs(datum: Any) -> dict[str, int]:
    # an OVSDB map on the wire: ["map", [[key, value], ...]]
    if isinstance(datum, list) and len(datum) == 2 and datum[0] == "map":
        return {str(k): int(v) for k, v in datum[1] if isinstance(v, int)}
    return {}


def interface_statistics(db: str, timeout: float = 2.0) -> dict[str, dict[str, int]]:
    """Interface name -> its ``statistics`` column (``rx_bytes``, ``tx_packets``, ``rx_dropped``, ...),
    read with one ``select`` on a connection of its own, closed afterwards. Not through the IDL:
    ovs-vswitchd rewrites every interface's statistics every few seconds, which would keep the
    replica's connection thread busy for a number nobody reads between two scrapes. Bounded by
    ``timeout`` (raises :class:`OvsdbFailed`)."""
    deadline = time.monotonic() + timeout
    error, strm = ovs_stream.Stream.open_block(ovs_stream.Stream.open(db), int(timeout * 1000))
    if error:
        raise OvsdbFailed(f"OVSDB {db}: {errno.errorcode.get(error, error)}")
    conn = jsonrpc.Connection(strm)
    try:
        req = jsonrpc.Message.create_request("transact", [SCHEMA, {
            "op": "select", "table": "Interface", "where": [], "columns": ["name", "statistics"]}])
        error = conn.send(req)
        reply = None
        while not error:
            error, reply = conn.recv()
            if error == errno.EAGAIN:
                error, reply = 0, None
                left = deadline - time.monotonic()
                if left <= 0:
                    error = errno.ETIMEDOUT
                    break
                conn.run()
                poller = ovs_poller.Poller()
                conn.wait(poller)
                conn.recv_wait(poller)
                poller.timer_wait(int(left * 1000) + 1)
                poller.block()
            elif reply is not None and reply.id == req.id:
                break
        if error or reply is None or reply.type != jsonrpc.Message.T_REPLY:
            why = errno.errorcode.get(error, error) if error else (reply.error if reply else "no answer")
            raise OvsdbFailed(f"OVSDB {db}: select Interface statistics: {why}")
        rows = (reply.result or [{}])[0].get("rows", [])
    finally:
        conn.close()
    return {row["name"]: _pairs(row.get("statistics")) for row in rows if isinstance(row.get("name"), str)}


def snapshot(db: str, timeout: float = 10.0) -> OvsState:
    """The rows of one database, read once through a connection closed afterwards."""
    with Ovsdb(db, timeout) as o:
        return o.state()
