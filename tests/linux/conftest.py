"""Fresh network namespaces (and private OVS instances) per test, removed even on failure."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from iris_haas.hostd.reconciler import Host, HostConfig
from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs
from iris_haas.linux.netns import processes_in
from iris_haas.linux.proc import kill_pid
from iris_haas.linux.runner import SubprocessRunner


def pytest_collection_modifyitems(config, items):
    root = os.geteuid() == 0 and shutil.which("ovs-vswitchd") is not None
    for item in items:
        path = str(item.fspath).replace(os.sep, "/")
        if "tests/linux/" in path and "unit" not in item.keywords:
            item.add_marker(pytest.mark.linux)
            if not root:
                item.add_marker(pytest.mark.skip(reason="needs root and Open vSwitch"))


class Sandbox:
    def __init__(self):
        self.tag = "lx" + secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.ovs: list[ovs.OvsInstance] = []
        self.hosts: list[Host] = []
        self.dir = Path(tempfile.mkdtemp(prefix=f"iris-{self.tag}-"))
        self.runner = SubprocessRunner()

    def netns(self, node: str) -> str:
        name = f"iris-{self.tag}-{node}"
        if nl.ensure_netns(name):
            self.runner.run(nl.netns_sysctl_cmds(name))
        self.namespaces.append(name)
        return name

    def ovs_in(self, ns: str) -> ovs.OvsInstance:
        inst = ovs.OvsInstance(self.dir / ns, ns, f"test:{self.tag}")
        self.ovs.append(inst)
        inst.start(self.runner)
        return inst

    def host(self, cfg: HostConfig) -> Host:
        """A host driver, closed (its OVSDB connection too) before the OVS daemons stop."""
        h = Host(cfg)
        self.hosts.append(h)
        return h

    def close(self):
        for h in self.hosts:
            h.close()
        for inst in self.ovs:
            inst.stop(self.runner)
        for pid in processes_in(self.namespaces):
            kill_pid(pid)
        for n in self.namespaces:
            nl.delete_netns(n)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sandbox():
    threads = set(threading.enumerate())
    s = Sandbox()
    try:
        yield s
    finally:
        s.close()
    assert nl.list_netns(f"iris-{s.tag}-") == []
    assert set(threading.enumerate()) <= threads, "threads left running (an OVSDB connection not closed?)"
