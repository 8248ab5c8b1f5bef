"""The README's CLI walk-through, command by command, against the lab: the `iris` commands of its
block run in order (each must exit 0) against a coordinator whose data plane is the lab's real
agents; then, while the reservation is provisioned, the IaaS side pings both L1s across the
tunnel and copies a file to and from the volume over NFS; after the walk-through's terminate,
nothing of it answers and the volume is wiped. On the way, ``GET /v1/utilization`` (the
dashboard's) shows the tenant both L1s as the real agents measure them.

Only what names the lab's own hosts differs from the README: its addresses (the README's
placeholders, each replaced as a whole word), its gateway's name (the name its agent's
certificate carries), its uplink, and a pool directory of this test's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from iris_haas.api.service import LocalCoordinator
from iris_haas.control.sync import AgentDataPlane
from iris_haas.hostd import storage
from iris_haas.lab import probe, realizer
from iris_haas.lab.realizer import LAB_POOL_ROOT
from iris_haas.linux import netlink as nl
from iris_haas.linux.runner import SubprocessRunner
from tests.lab.test_coordinator_e2e import terminate_all
from tests.unit.test_readme import run_line, walk_through

pytestmark = pytest.mark.lab

L1_ADDRESSES = ("10.0.101.51", "10.0.101.52")  # the README's --address values
EXPORT_ADDRESS = "10.0.101.80"  # its --export-address


def lab_words(lab, pool: Path) -> dict[str, str]:
    """README word -> the lab's: the hosts and the tenant's IaaS side the walk-through names."""
    t = lab.topo
    a = next(x for x in t.iaas if x.tenant == "a")
    return {
        "198.18.2.11": t.fab_ip("l0-1"), "https://198.18.1.11:7780": lab.agent_url("l0-1"),
        "198.18.2.12": t.fab_ip("l0-2"), "https://198.18.1.12:7780": lab.agent_url("l0-2"),
        "haas-gw": "hgw", "198.18.0.1": t.haas.gateway_ip, "198.18.2.1": t.fab_ip("hgw"),
        "https://198.18.1.1:7780": lab.agent_url("hgw"), "eth0": "up",
        "/var/lib/iris/pools/pool0": str(pool),
        "198.19.0.1": a.gateway_ip, "1001": str(a.key), "101": str(a.mgmt_vlan),
    }


def nfs_round_trip(lab, tmp_path: Path, volume: str) -> bytes:
    """Write a file to the volume from the IaaS management host, read it back; returns what was read."""
    data = os.urandom(256 * 1024)
    (tmp_path / "in").write_bytes(data)
    url = storage.nfs_url(EXPORT_ADDRESS, f"/{volume}", "blob")
    for c in (storage.nfs_cp_cmd(lab.ns("amgmt"), str(tmp_path / "in"), url),
              storage.nfs_cp_cmd(lab.ns("amgmt"), url, str(tmp_path / "out"))):
        p = subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    return (tmp_path / "out").read_bytes()


def test_the_readme_walk_through_against_the_lab(lab, tmp_path):
    realizer.ensure_agents(lab)  # an earlier test may have failed with an agent stopped
    lines = walk_through()
    pool = Path(tempfile.mkdtemp(prefix=f"iris-{lab.name}-readme-", dir=LAB_POOL_ROOT))
    words = lab_words(lab, pool)
    block = " ".join(lines).split()
    assert [w for w in words if w not in block] == [], "the README no longer names these"
    terminate_at = next(i for i, line in enumerate(lines) if line.startswith("iris terminate"))
    try:
        with LocalCoordinator(tmp_path / "coord",
                              dataplane=AgentDataPlane(lab.coordinator_tls(), netns=lab.ns("ctl"))) as coord:
            values = {"ADMIN_TOKEN": coord.admin_token}
            env: dict[str, str] = {}
            admin = coord.client(coord.admin_token)
            try:
                for line in lines[:terminate_at]:
                    run_line(line, coord.url, values, env, lambda w: words.get(w, w))
                with coord.client(values["TENANT_TOKEN"]) as tenant:
                    res = tenant.get(f"/reservations/{values['ID']}")
                assert (res["provision_state"], res["committed_version"]) == ("Provisioned", 2), res
                l1s = [x["l1"] for x in res["resources"] if "l1" in x]
                volume = next(x["volume"] for x in res["resources"] if "volume" in x)
                # packets flow: the IaaS management host reaches both L1s across the GRE trunk
                for ip in L1_ADDRESSES:
                    assert probe.reachable(lab.ns("amgmt"), ip, timeout=15), ip
                # the dashboard's utilization: the real agents' readings of the L1s' cgroups and ports
                with coord.client(values["TENANT_TOKEN"]) as tenant:
                    use = tenant.get("/utilization")
                assert {u["l1"] for u in use["l1s"] if (u["memory_bytes"] or 0) > 0} == set(l1s), use["l1s"]
                assert {p["l1"] for p in use["ports"] if p["kind"] == "port"} >= set(l1s), use["ports"]
                # the volume is exported on the tenant's network, and keeps what is written
                assert probe.reachable(lab.ns("amgmt"), EXPORT_ADDRESS, timeout=15)
                assert nfs_round_trip(lab, tmp_path, volume) == (tmp_path / "in").read_bytes()
                for line in lines[terminate_at:]:
                    result = run_line(line, coord.url, values, env, lambda w: words.get(w, w))
                assert result is not None and values["ID"] in result.output  # `iris list` shows it
                # terminated: the L1s are gone, the volume wiped (at once, or by the reconciler's retry)
                assert probe.ping(lab.ns("amgmt"), L1_ADDRESSES[0], count=2, wait=0.5) == 0
                assert not any(nl.netns_exists(n) for n in l1s)
                deadline = time.monotonic() + 30
                while list(pool.glob("*.img")) and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert not list(pool.glob("*.img"))
            finally:
                terminate_all(coord, admin)
                admin.close()
    finally:
        storage.sweep_pool(pool, SubprocessRunner())
        shutil.rmtree(pool, ignore_errors=True)
