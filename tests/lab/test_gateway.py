"""`iris gateway-config`: the IaaS gateway's configuration as commands, and as an agent mode
that applies it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from iris_haas.lab import cli, probe
from iris_haas.lab.tenants import L1
from iris_haas.linux import ovs
from iris_haas.linux.runner import SubprocessRunner, cmd

pytestmark = pytest.mark.lab


def test_gateway_config_prints_readable_commands():
    r = CliRunner().invoke(cli.app, ["gateway-config", "--tenant", "acme", "--haas-gateway", "198.18.0.1",
                                     "--key", "77", "--trunk-port", "eth1", "--wan-port", "eth0"])
    assert r.exit_code == 0, r.output
    assert "add-br br-int" in r.output and "add-port br-int gre-haas" in r.output
    assert "options:key=" in r.output and "mtu 1546" in r.output


def test_iaas_gateway_agent_mode_rebuilds_a_broken_gateway(lab, tenants, tmp_path):
    tenants.set([L1("a", "l0-1", "g1", vlan=101, address="10.0.101.21/24")])
    assert probe.reachable(lab.ns("g1"), "10.0.101.10")
    g = lab.gateway_spec("a")
    r = CliRunner().invoke(cli.app, ["gateway-config", "--json", "--tenant", "a", "--haas-gateway",
                                     g.haas_gateway_ip, "--key", str(g.key), "--trunk-port", g.trunk_port,
                                     "--datapath-type", "netdev"])
    assert r.exit_code == 0, r.output
    desired = tmp_path / "gw.json"
    desired.write_text(r.output)
    assert [o["op"] for o in json.loads(r.output)["ops"]] == ["bridge", "port", "tunnel"]
    # someone removes the gateway's bridge by hand
    SubprocessRunner().run(ovs.txn(lab.ovs("agw").db, *ovs.del_bridge("br-int")))
    assert probe.ping(lab.ns("g1"), "10.0.101.10", count=2) == 0
    # the agent mode applies the generated configuration on the IaaS gateway
    c = cmd(sys.executable, "-m", "iris_haas.agent.cli", "--once", "--desired", str(desired),
            "--db", lab.ovs("agw").db, "--datapath-type", "netdev", "--state-dir", str(tmp_path / "state"),
            # the IaaS gateway's own bridge, trunk and tunnel: its operator lets the agent manage them
            "--host-device", g.bridge, "--host-device", g.trunk_port, "--host-device", g.tunnel,
            netns=lab.ns("agw"))
    p = subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["in_sync"]
    assert probe.reachable(lab.ns("g1"), "10.0.101.10")
