"""Shared fixtures: a database on SQLite and on PostgreSQL, a coordinator with a fake clock, an API client.

The PostgreSQL server is Debian's, started by the suite itself in a temporary directory (Unix socket
only, no TCP port) and stopped by its PID at the end.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

# hypothesis first, at a shallow stack: its pytest plugin imports it at the terminal summary
# otherwise, where CPython 3.11.7's parser fails ("AST constructor recursion depth mismatch")
# when a test file that never imported it ran alone
import hypothesis  # noqa: F401
import pytest
from fastapi.testclient import TestClient

from iris_haas.agent.metrics import AgentCollector, Exposition
from iris_haas.api.app import create_app
from iris_haas.contract.ops import DesiredState
from iris_haas.control.engine import Coordinator
from iris_haas.control.sync import InMemoryDataPlane
from iris_haas.hostd.memory import MemoryHost
from iris_haas.lab.postgres import PostgresServer, pg_bindir
from iris_haas.store.db import Database

ADMIN = "admin-secret"
T0 = 2_000_000_000.0  # a fixed "now" for the fake clock


@pytest.fixture(scope="session")
def postgres():
    if os.geteuid() != 0:
        pytest.skip("the PostgreSQL tests start their own server, which needs root (runuser postgres)")
    if pg_bindir() is None:
        pytest.skip("PostgreSQL is not installed (make test installs it)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user (make test installs PostgreSQL)")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'iris.db'}")
        database.migrate()
    else:
        database = Database(request.getfixturevalue("postgres").fresh_database())
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'iris.db'}")
    database.migrate()
    yield database
    database.dispose()


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock():
    return Clock()


def make_coordinator(database: Database, clock: Clock, hold_timeout_s: float = 60.0) -> Coordinator:
    return Coordinator(database, hold_timeout_s=hold_timeout_s, dataplane=InMemoryDataPlane(), clock=clock)


@pytest.fixture
def coordinator(db, clock):
    """On SQLite and on PostgreSQL: every API and engine test runs on both stores."""
    coord = make_coordinator(db, clock)
    yield coord
    coord.close()


class Api:
    """A TestClient with the admin's and tenants' headers at hand."""

    def __init__(self, coordinator: Coordinator):
        self.coordinator = coordinator
        self.app = create_app(coordinator, ADMIN)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.tenants: dict[str, dict] = {}

    def as_(self, who: str | None) -> dict:
        if who is None:
            return {}
        return self.admin if who == "admin" else self.tenants[who]

    def call(self, method: str, path: str, who: str | None = "admin", **kw):
        return self.client.request(method, f"/v1{path}", headers=self.as_(who), **kw)

    def ok(self, method: str, path: str, who: str | None = "admin", **kw):
        r = self.call(method, path, who, **kw)
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json() if r.status_code != 204 else None

    def add_tenant(self, name: str, site_ip: str) -> None:
        token = self.ok("POST", "/tenants", json={"name": name})["token"]
        self.tenants[name] = {"Authorization": f"Bearer {token}"}
        self.ok("POST", "/sites", name, json={"name": f"iaas-{name}", "gateway_underlay": site_ip})
        self.ok("POST", "/links", json={"name": f"link-{name}", "site_a": "haas", "site_b": f"iaas-{name}",
                                        "capacity_mbps": 1000})


def standard_inventory(api: Api, nodes: int = 4, cpus: int = 8) -> None:
    api.ok("POST", "/sites", json={"name": "haas"})
    for i in range(nodes):
        api.ok("POST", "/nodes", json={"name": f"l0-{i}", "site": "haas", "cpus": cpus, "memory_mb": 16384,
                                       "disk_gb": 500, "underlay_address": f"198.18.10.{10 + i}"})
    api.ok("POST", "/gateways", json={"name": "haas-gw", "site": "haas", "underlay_address": "198.18.0.1",
                                      "fabric_address": "198.18.10.1", "uplink": "up"})
    api.ok("POST", "/storage-pools", json={"name": "pool0", "site": "haas", "capacity_gb": 1000})
    api.add_tenant("alice", "198.18.1.1")
    api.add_tenant("bob", "198.18.2.1")


@pytest.fixture
def api(coordinator):
    a = Api(coordinator)
    standard_inventory(a)
    return a


def pytest_collection_modifyitems(config, items):
    """The tier of a test is its directory: tests/unit, tests/linux, tests/lab."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("unit", "linux", "lab"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


class MemoryAgents(InMemoryDataPlane):
    """Each host an in-memory host behind the agent's own collector: what ``/v1/utilization``
    reads is what an agent holding that state reports."""

    def __init__(self) -> None:
        super().__init__()
        self.memory: dict[str, MemoryHost] = {}

    def push(self, host, agent_url, state):
        ack = super().push(host, agent_url, state)
        self.memory.setdefault(host, MemoryHost()).apply(state)
        return ack

    def metrics(self, host, agent_url):
        held, mh = self.states.get(host, DesiredState()), self.memory.setdefault(host, MemoryHost())
        return Exposition(AgentCollector(host, lambda: held, mh.stats)).render().decode()
