"""`iris lab up | down | status`: down removes everything the lab made and nothing else, also
after a failure half-way through up."""

from __future__ import annotations

import secrets

import pytest
from typer.testing import CliRunner

from iris_haas.lab import cli, realizer
from iris_haas.linux import netlink as nl
from iris_haas.linux.proc import alive, read_pid

pytestmark = pytest.mark.lab

SMALL = """
name = "{name}"
underlay_mtu = 1600
[haas]
l0_count = 1
[[iaas]]
tenant = "a"
key = 7
gateway_ip = "198.18.0.11"
"""


def _topo(tmp_path, name):
    p = tmp_path / f"{name}.toml"
    p.write_text(SMALL.format(name=name))
    return p


def test_up_status_down_through_the_cli_leave_nothing(tmp_path):
    name = "c" + secrets.token_hex(3)
    other = "o" + secrets.token_hex(3)
    run = CliRunner()
    try:
        r = run.invoke(cli.app, ["up", "-t", str(_topo(tmp_path, name))])
        assert r.exit_code == 0, r.output
        r = run.invoke(cli.app, ["up", "-t", str(_topo(tmp_path, other))])
        assert r.exit_code == 0, r.output
        r = run.invoke(cli.app, ["status", "-n", name])
        assert r.exit_code == 0, r.output
        assert '"matches": true' in r.output
        agent_pids = [read_pid(realizer.rundir(name) / n / "agent.pid") for n in ("hgw", "l0-1")]
        ovs_pids = list(realizer.Lab(realizer.from_run(name).plan).ovs("l0-1").pids().values())
        r = run.invoke(cli.app, ["down", "-n", name])
        assert r.exit_code == 0, r.output
        assert realizer.leftovers(name) == []
        for pid in agent_pids + ovs_pids:
            assert not alive(pid), pid
        # the other lab is untouched
        assert realizer.status(realizer.from_run(other))["matches"]
        r = run.invoke(cli.app, ["status", "-n", name, "-t", str(_topo(tmp_path, name))])
        assert r.exit_code == 1 and '"exists": false' in r.output
        # down again: nothing to do, no error
        assert run.invoke(cli.app, ["down", "-n", name]).exit_code == 0
    finally:
        realizer.down(name)
        realizer.down(other)
    assert realizer.leftovers(other) == []


def test_a_failure_half_way_through_up_leaves_nothing(tmp_path, monkeypatch):
    name = "f" + secrets.token_hex(3)
    lab = realizer.load(_topo(tmp_path, name))

    def boom(*a, **k):
        raise RuntimeError("injected failure after OVS and agents started")

    monkeypatch.setattr(realizer, "iaas_gateway", boom)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            realizer.up(lab, ephemeral=True)
    finally:
        realizer.down(name)
    assert realizer.leftovers(name) == []


def test_down_of_a_half_made_lab_by_name_only(tmp_path):
    """Namespaces and OVS exist but the run directory's record is gone: down still cleans."""
    name = "h" + secrets.token_hex(3)
    lab = realizer.load(_topo(tmp_path, name))
    try:
        realizer.up(lab, agents=False, ephemeral=True)
        (realizer.rundir(name) / "topology.json").unlink()
        # a stray process inside one of the lab's namespaces (as a test's iperf3 server would be)
        import subprocess

        from iris_haas.linux.runner import cmd

        p = subprocess.Popen(cmd("sleep", "600", netns=lab.ns("amgmt")).full_argv())
        assert realizer.lab_namespaces(name)
    finally:
        realizer.down(name)
    p.wait(timeout=5)
    assert realizer.leftovers(name) == []
    assert nl.list_netns(f"iris-{name}-") == []


def test_a_lab_whose_test_run_was_killed_is_swept(tmp_path):
    name = "k" + secrets.token_hex(3)
    lab = realizer.load(_topo(tmp_path, name))
    try:
        realizer.up(lab, agents=False, ephemeral=True)
        # pretend the creating process died: a PID that exited
        import subprocess

        dead = subprocess.Popen(["true"])
        dead.wait()
        (realizer.rundir(name) / "ephemeral.pid").write_text(f"{dead.pid}\n")
        assert name in realizer.sweep_stale()
    finally:
        realizer.down(name)
    assert realizer.leftovers(name) == []
