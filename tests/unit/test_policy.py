"""An agent does only what its host's policy allows, whoever asks: Iris's own objects, L1
namespaces within its prefix, volumes under the host's pool roots, and foreign devices on an Iris
bridge only when the host's operator named them. A refused op is reported; the rest applies."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from iris_haas.agent.server import Agent, create_app
from iris_haas.hostd.memory import MemoryHost
from iris_haas.hostd.policy import Policy

BRIDGE = {"op": "bridge", "name": "irisb-a"}


def agent(tmp_path, policy: Policy):
    host = MemoryHost()
    http = TestClient(create_app(Agent("l0-1", host, tmp_path / "agent", policy), "tok"),
                      headers={"Authorization": "Bearer tok"})
    return host, http


def put(http, *ops):
    r = http.put("/v1/desired", json={"version": 1, "ops": [BRIDGE, *ops]})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("op,why", [
    ({"op": "port", "bridge": "irisb-a", "name": "eth0"}, "'eth0'"),  # the L0's control NIC on a tenant bridge
    ({"op": "port", "bridge": "br-ctl", "name": "irisp-x"}, "'br-ctl'"),  # an Iris port on a bridge not Iris's
    ({"op": "bridge", "name": "br-int"}, "'br-int'"),
    ({"op": "tunnel", "bridge": "irisb-a", "name": "gre0", "remote_ip": "198.18.0.9"}, "'gre0'"),
    ({"op": "shape", "port": "eth0", "rate_mbit": 1}, "'eth0'"),
])
def test_an_op_on_a_device_that_is_not_irises_is_refused_and_the_rest_applies(tmp_path, op, why):
    host, http = agent(tmp_path, Policy())
    out = put(http, op, {"op": "port", "bridge": "irisb-a", "name": "irisp-ok"})
    assert len(out["refused"]) == 1 and why in out["refused"][0], out
    assert out["in_sync"] is False  # the coordinator sees the host does not hold all of it
    kinds = {ident for ident in host.objects}
    assert ("bridge", "irisb-a") in kinds and ("port", "irisp-ok") in kinds
    assert not any(why.strip("'") in str(ident) for ident in kinds)
    assert http.get("/v1/state").json()["refused"] == out["refused"]


def test_a_host_device_the_operator_named_may_join_an_iris_bridge(tmp_path):
    host, http = agent(tmp_path, Policy(host_devices=frozenset({"eth1"})))
    out = put(http, {"op": "port", "bridge": "irisb-a", "name": "eth1", "trunk": True})
    assert out["refused"] == [] and out["in_sync"] and ("port", "eth1") in host.objects


def volume(pool: str) -> dict:
    return {"op": "volume", "name": "iris-v1", "pool": pool, "size_mb": 1}


def test_a_volume_outside_the_pool_roots_is_refused_even_through_a_symlink(tmp_path):
    root = tmp_path / "pools"
    (root / "p0").mkdir(parents=True)
    os.symlink("/etc", root / "escape")
    host, http = agent(tmp_path, Policy(pool_roots=(str(root),)))
    for pool in ("/etc", str(root / "escape"), str(tmp_path)):
        out = put(http, volume(pool))
        assert len(out["refused"]) == 1 and "pool roots" in out["refused"][0], (pool, out)
        assert not any(ident[0] == "volume" for ident in host.objects)
    out = put(http, volume(str(root / "p0")))
    assert out["refused"] == [] and any(ident[0] == "volume" for ident in host.objects)
