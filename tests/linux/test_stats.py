"""What an agent's scrape reads of its host (iris_haas.hostd.stats): cgroup usage on v1 and v2
files (unit), and on this machine a real cgroup, OVS's Interface statistics and an htb class's
counters in fresh namespaces, with an L1 of the state that is not there (yet)."""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from iris_haas.contract.ops import DesiredState, L1Op
from iris_haas.hostd.reconciler import HostConfig
from iris_haas.linux import cgroup, tc
from iris_haas.linux.runner import cmd
from tests.linux.test_drivers import _host_state


@pytest.mark.unit
def test_usage_from_v1_and_v2_files(tmp_path):
    v1 = tmp_path / "v1"
    for c, f, v in (("cpuacct", "cpuacct.usage", "2500000000\n"), ("memory", "memory.usage_in_bytes", "4096\n")):
        (v1 / c / "iris-k").mkdir(parents=True)
        (v1 / c / "iris-k" / f).write_text(v)
    assert cgroup.usage("iris-k", v1) == cgroup.Usage(2.5, 4096)
    assert cgroup.usage("iris-gone", v1) is None  # not made yet, or removed meanwhile
    v2 = tmp_path / "v2"
    (v2 / "iris-k").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    (v2 / "iris-k" / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (v2 / "iris-k" / "memory.current").write_text("8192\n")
    assert cgroup.usage("iris-k", v2) == cgroup.Usage(1.5, 8192)
    (v2 / "iris-k" / "memory.current").unlink()  # a file the kernel does not offer: that one is None
    assert cgroup.usage("iris-k", v2) == cgroup.Usage(1.5, None)


def test_a_real_group_counts_the_cpu_and_memory_of_what_runs_in_it():
    name = f"iris-st{secrets.token_hex(3)}"
    cgroup.create(name, cgroup.Limits(cpus=1, memory_bytes=256 << 20, pids=16))
    try:
        assert cgroup.usage(name) == cgroup.Usage(0.0, 0)
        burn = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
        subprocess.run(cgroup.join_argv(name, ("sh", "-c", burn)), check=True, timeout=60)
        use = cgroup.usage(name)
        assert use is not None and use.cpu_seconds is not None and use.cpu_seconds > 0.05
        assert use.memory_bytes is not None and use.memory_bytes > 0  # page cache it touched stays charged
    finally:
        cgroup.remove(name)
    assert cgroup.usage(name) is None and not cgroup.exists(name)


def test_host_stats_read_ovs_statistics_and_the_htb_class(sandbox):
    ns = sandbox.netns("h")
    inst = sandbox.ovs_in(ns)
    l1 = f"iris-{sandbox.tag}-l1"
    sandbox.namespaces.append(l1)
    host = sandbox.host(HostConfig(db=inst.db, netns=ns, datapath_type="netdev", warmup=False))
    state = _host_state(l1, rate=100)
    host.apply(state)
    # and an L1 the driver has not made yet: its port and cgroup are not there
    half = L1Op(name=f"iris-{sandbox.tag}-h", kind="lxc", netns=f"iris-{sandbox.tag}-h", bridge="irisb-t",
                port="irisp-h", vlan=101, owner="r", tenant="t")
    wanted = DesiredState(version=1, ops=[*state.ops, half])
    first = host.stats(wanted)
    assert first.errors == [] and first.l1s == {}
    assert set(first.ports) == {"irisp-p", "irist-t-1"}  # the half-made L1's port is left out
    # the L1 sends: ARP for an address no one holds leaves through its htb and enters OVS on irisp-p
    p = subprocess.run(cmd("ping", "-c", "5", "-i", "0.2", "-W", "1", "10.5.0.9", netns=l1).full_argv(),
                       capture_output=True, timeout=30)
    assert p.returncode != 0  # no answer, as meant
    deadline = time.monotonic() + 15  # ovs-vswitchd writes statistics every few seconds
    while True:
        now = host.stats(wanted)
        if now.ports["irisp-p"].rx_packets > first.ports["irisp-p"].rx_packets or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert now.ports["irisp-p"].rx_packets > first.ports["irisp-p"].rx_packets
    assert now.ports["irisp-p"].rx_bytes > first.ports["irisp-p"].rx_bytes
    cls = now.classes[("irisp-p", tc.PORT_CLASS)]
    assert cls.packets >= 3 and cls.bytes >= 3 * 42 and cls.drops == 0
    # OVSDB down: the scrape says so and reports the rest
    inst.stop(sandbox.runner)
    sandbox.ovs.remove(inst)  # stopped once, by its PIDs
    assert not inst.running()
    down = host.stats(wanted)
    assert down.ports == {} and down.errors and ("irisp-p", tc.PORT_CLASS) in down.classes
