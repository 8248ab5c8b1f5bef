"""Fresh network namespaces (and private OVS instances) per test, removed even on failure."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from iris_haas.linux import netlink as nl
from iris_haas.linux import ovs
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

    def close(self):
        for inst in self.ovs:
            inst.stop(self.runner)
        from iris_haas.lab.realizer import processes_in

        for pid in processes_in(self.namespaces):
            ovs.kill_pid(pid)
        for n in self.namespaces:
            nl.delete_netns(n)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sandbox():
    s = Sandbox()
    try:
        yield s
    finally:
        s.close()
    assert nl.list_netns(f"iris-{s.tag}-") == []
