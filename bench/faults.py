"""Faults bench: crash or cut off every part of Iris at every step, then check that it converges.

Runs as root on this machine: the two-DC lab (real OVS, namespaces, agents), a private
PostgreSQL, and real coordinators (`iris serve` processes). Each scenario injects one fault while
tenants reserve, commit, provision, modify, release and terminate through the API: a coordinator
killed at a named failpoint (before or after a database commit, between the hosts of one push),
an agent down while something changes, an L0 "rebooted" (its Iris state wiped while its agent is
down), ovs-vswitchd restarted, PostgreSQL restarted, the leading coordinator killed beside a
second one. Then the fault clears, and the bench waits until every host holds the generation
the database wants (``GET /v1/hosts``) and checks each host against the database exactly: what
its agent observes (L1s, ports, tunnels, tc classes, volumes) equals the desired ops, and no
namespace of an L1, export or router exists that the database does not want.

Prints one JSON object: ``scenarios``, ``passed``, ``leaks``, ``max_converge_s``, and
``per_scenario`` (name -> ``passed``, ``leaks``, ``converge_s``, ``detail``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from iris_haas.api.client import ApiError, Client
from iris_haas.api.service import free_port
from iris_haas.lab import audit, realizer
from iris_haas.lab.postgres import PostgresServer
from iris_haas.lab.register import register
from iris_haas.linux import netlink as nl
from iris_haas.linux import proc
from iris_haas.linux.runner import SubprocessRunner, cmd

ADMIN = "faults-admin-" + secrets.token_hex(8)



class Coordinator:
    """One `iris serve` process on the shared database; killed by its PID."""

    def __init__(self, lab, db_url: str, data_dir: Path, failpoints: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "IRIS_DATABASE_URL": db_url, "IRIS_DATA_DIR": str(data_dir), "IRIS_ADMIN_TOKEN": ADMIN,
               "IRIS_AGENT_TLS_DIR": str(lab.ca_dir), "IRIS_AGENT_NETNS": lab.ns("ctl"),
               "IRIS_SCHEDULER_INTERVAL_S": "0.3", "IRIS_POLL_INTERVAL_S": "1", "IRIS_PUSH_TIMEOUT_S": "10", "IRIS_PROVISION_TIMEOUT_S": "20",
               "IRIS_FAILPOINTS": failpoints}
        self.log = open(data_dir / f"serve-{self.port}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "iris"), "serve", "--port", str(self.port)],
                                     env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(self.url, ADMIN, timeout=2) as c:
                    c.get("/health")
                return
            except ApiError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"iris serve did not start (log {self.log.name})") from None
                time.sleep(0.1)

    def client(self, token: str = ADMIN, timeout: float = 60.0) -> Client:
        return Client(self.url, token, timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class Bench:
    def __init__(self, lab, pg: PostgresServer, db_url: str, data_dir: Path):
        self.lab, self.pg, self.db_url, self.data_dir = lab, pg, db_url, data_dir
        self.before = audit.namespaces()  # namespaces that were there before: not this bench's
        self.coord = Coordinator(lab, db_url, data_dir)
        self.tokens = register(self.lab, self.coord.client())
        self.extra: Coordinator | None = None

    def restart(self, failpoints: str = "") -> Coordinator:
        self.coord.stop()
        self.coord = Coordinator(self.lab, self.db_url, self.data_dir, failpoints)
        return self.coord

    def tenant(self, t: str = "a") -> Client:
        return self.coord.client(self.tokens[t])

    # -- the reservations the scenarios make
    def reserve(self, t: str = "a", count: int = 1, duration_s: int = 3600, bandwidth: int = 0,
                kind: str = "netns") -> dict:
        items: list[dict] = [{"kind": "compute", "count": count, "l1_kind": kind, "cpus": 1, "memory_mb": 64,
                              "disk_gb": 1}]
        if bandwidth:
            items.append({"kind": "network", "bandwidth_mbps": bandwidth})
        with self.tenant(t) as c:
            return c.post("/reservations", {"duration_s": duration_s, "items": items})

    def provisioned(self, t: str = "a", **kw) -> dict:
        r = self.reserve(t, **kw)
        with self.tenant(t) as c:
            c.post(f"/reservations/{r['id']}/commit")
            return c.post(f"/reservations/{r['id']}/provision")

    def call(self, t: str, path: str, body: dict | None = None) -> dict | None:
        """A tenant's call that may die with its coordinator: the error is part of the scenario."""
        try:
            with self.tenant(t) as c:
                return c.post(path, body)
        except ApiError:
            return None

    def terminate_all(self) -> None:
        with self.coord.client() as admin:
            for r in admin.get("/reservations"):
                if r["lifecycle_state"] not in ("Terminated",):
                    try:
                        admin.post(f"/reservations/{r['id']}/terminate")
                    except ApiError:
                        pass

    # -- convergence and the audit
    def converged(self, timeout: float = 60.0) -> list[str]:
        with self.coord.client(timeout=20) as admin:
            return audit.converged(self.lab, admin, timeout, self.before)


# ---------------------------------------------------------------- scenarios

def coordinator_failpoint(step: str, action: Callable[[Bench, dict], None],
                          prepare: Callable[[Bench], dict] | None = None):
    """Kill the coordinator at ``step`` (a named failpoint) during ``action``; restart it clean."""

    def run(b: Bench) -> str:
        ctx = prepare(b) if prepare else {}
        b.restart(failpoints=step)
        try:
            action(b, ctx)
        except (ApiError, OSError):
            pass
        deadline = time.monotonic() + 20
        while b.coord.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        died = not b.coord.alive()
        b.restart()
        return f"coordinator {'died' if died else 'did not die'} at {step}"

    return run


def _reserve(b: Bench, _: dict) -> None:
    b.reserve()


def _commit(b: Bench, ctx: dict) -> None:
    b.call("a", f"/reservations/{ctx['id']}/commit")


def _provision(b: Bench, ctx: dict) -> None:
    b.call("a", f"/reservations/{ctx['id']}/provision")


def _release(b: Bench, ctx: dict) -> None:
    b.call("a", f"/reservations/{ctx['id']}/release")


def _terminate(b: Bench, ctx: dict) -> None:
    b.call("a", f"/reservations/{ctx['id']}/terminate")


def _modify(b: Bench, ctx: dict) -> None:
    if b.call("a", f"/reservations/{ctx['id']}/modify", {"version": 2, "count": 2}) is not None:
        b.call("a", f"/reservations/{ctx['id']}/commit")


def _held(b: Bench) -> dict:
    return b.reserve()


def _committed(b: Bench) -> dict:
    r = b.reserve()
    b.call("a", f"/reservations/{r['id']}/commit")
    return r


def _provisioned(b: Bench) -> dict:
    return b.provisioned()


def agent_down_during(what: str):
    def run(b: Bench) -> str:
        # netns L1s where speed matters; a real LXC container for the terminate
        r = b.provisioned("a", duration_s=6 if what == "end" else 3600, kind="lxc" if what == "terminate" else "netns")
        node = next(x["node"] for x in r["resources"] if "node" in x)
        realizer.stop_agent(b.lab, node)
        t0 = time.monotonic()
        if what == "release":
            b.call("a", f"/reservations/{r['id']}/release")
        elif what == "terminate":
            b.call("a", f"/reservations/{r['id']}/terminate")
        elif what == "end":
            while time.monotonic() - t0 < 8:  # the end time passes while the agent is down
                time.sleep(0.2)
        elif what == "other-provision":
            other = b.provisioned("b")  # another tenant is not held up by the host that is down
            if other["provision_state"] != "Provisioned":
                raise AssertionError(f"tenant b's provision: {other['provision_state']}")
        realizer.start_agent(b.lab, node)
        return f"agent of {node} down during {what}"

    return run


def agent_killed_mid_apply(failpoint: str, storage: bool = False):
    """The agent of an L0 dies at ``failpoint`` while it applies a provision; it is started again."""

    def run(b: Bench) -> str:
        node = "l0-1"
        realizer.stop_agent(b.lab, node)
        os.environ["IRIS_FAILPOINTS"] = failpoint  # inherited by the agent started now, by no one else
        try:
            realizer.start_agent(b.lab, node)
        finally:
            del os.environ["IRIS_FAILPOINTS"]
        with b.coord.client() as admin:  # only l0-1 has room: the L1 goes there
            for n in ("l0-2", "l0-3", "l0-4"):
                admin.patch(f"/nodes/{n}", {"state": "maintenance"})
        try:
            b.provisioned()
        except ApiError:
            pass  # the provision fails with its host: that is the point
        finally:
            with b.coord.client() as admin:
                for n in ("l0-2", "l0-3", "l0-4"):
                    admin.patch(f"/nodes/{n}", {"state": "available"})
        pid = proc.read_pid(b.lab.dir / node / "agent.pid")
        died = pid is None or not proc.alive(pid)
        realizer.start_agent(b.lab, node)
        return f"agent of {node} {'died' if died else 'did not die'} at {failpoint}"

    return run


def l0_rebooted(b: Bench) -> str:
    r = b.provisioned()
    node = next(x["node"] for x in r["resources"] if "node" in x)
    realizer.stop_agent(b.lab, node)
    # the reboot: every L1 namespace and every bridge of Iris on the L0 gone, its agent's state too
    ovs = b.lab.ovs(node)
    r_ = SubprocessRunner()
    out = r_.run(cmd("ovs-vsctl", f"--db={ovs.db}", "--format=json", "--columns=name,external_ids", "list",
                     "Bridge"))
    for row in json.loads(out)["data"]:
        name, ids = row[0], dict(row[1][1])
        if "iris-op" in ids:
            r_.run(cmd("ovs-vsctl", f"--db={ovs.db}", "--if-exists", "del-br", name))
    l1_dir = b.lab.dir / node / "agent" / "l1"
    for spec in l1_dir.glob("*.json") if l1_dir.exists() else []:
        ns = json.loads(spec.read_text()).get("netns")
        if ns and audit.L1_NETNS.match(ns):
            nl.delete_netns(ns)
    for f in (b.lab.dir / node / "agent").glob("desired.json"):
        f.unlink()
    shutil.rmtree(l1_dir, ignore_errors=True)
    realizer.start_agent(b.lab, node)
    return f"{node} rebooted with its Iris state wiped"


def vswitchd_restarted(node_of: Callable[[dict], str]):
    def run(b: Bench) -> str:
        r = b.provisioned()
        node = node_of(r)
        inst = b.lab.ovs(node)
        pid = inst.pids().get("ovs-vswitchd")
        if pid:
            os.kill(pid, signal.SIGKILL)
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
        [start] = [c for c in inst.start_cmds() if c.argv[0] == "ovs-vswitchd"]
        SubprocessRunner().run(start)
        return f"ovs-vswitchd of {node} killed and started again"

    return run


def postgresql_restarted(b: Bench) -> str:
    r = b.reserve()
    b.pg.stop(keep=True)
    failed = 0
    for _ in range(3):
        try:
            b.reserve()
        except ApiError:
            failed += 1
    b.pg.start()
    time.sleep(1.0)
    b.call("a", f"/reservations/{r['id']}/commit")
    b.provisioned()  # works again
    return f"PostgreSQL down for 3 reserves ({failed} refused), then back"


def leader_killed(b: Bench) -> str:
    second = Coordinator(b.lab, b.db_url, b.data_dir)
    try:
        r = b.provisioned("a", duration_s=5)  # its end time falls after the leader dies
        b.coord.kill()
        b.coord, second = second, b.coord  # the survivor serves and, within a tick, leads
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with b.coord.client() as admin:
                state = admin.get(f"/reservations/{r['id']}")["lifecycle_state"]
            if state == "PassedEndTime":
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"the second coordinator did not take over: still {state}")
        return "the leader killed; the second coordinator ended the reservation on time"
    finally:
        second.stop()


def scenarios() -> dict[str, Callable[[Bench], str]]:
    node = lambda r: next(x["node"] for x in r["resources"] if "node" in x)  # noqa: E731
    return {
        "coordinator crash: reserve before commit": coordinator_failpoint("reserve.before_commit", _reserve),
        "coordinator crash: reserve after commit": coordinator_failpoint("reserve.after_commit", _reserve),
        "coordinator crash: commit after commit": coordinator_failpoint("commit.after_commit", _commit, _held),
        "coordinator crash: provision before commit": coordinator_failpoint("provision.before_commit", _provision,
                                                                            _committed),
        "coordinator crash: provision after commit": coordinator_failpoint("provision.after_commit", _provision,
                                                                           _committed),
        "coordinator crash: between the hosts of a push": coordinator_failpoint("push.hgw", _provision, _committed),
        "coordinator crash: release after commit": coordinator_failpoint("release.after_commit", _release,
                                                                         _provisioned),
        "coordinator crash: terminate after commit": coordinator_failpoint("terminate.after_commit", _terminate,
                                                                           _provisioned),
        "coordinator crash: modify after commit": coordinator_failpoint("modify.after_commit", _modify, _provisioned),
        "coordinator crash: commit of a modify": coordinator_failpoint("commit.after_commit", _modify, _provisioned),
        "agent down during release": agent_down_during("release"),
        "agent down during terminate": agent_down_during("terminate"),
        "agent down during the end time": agent_down_during("end"),
        "agent down during another tenant's provision": agent_down_during("other-provision"),
        "agent killed between the OVSDB transaction and the L1 start": agent_killed_mid_apply("agent.after_ovsdb"),
        "L0 rebooted, its Iris state wiped": l0_rebooted,
        "ovs-vswitchd restarted on an L0": vswitchd_restarted(node),
        "ovs-vswitchd restarted on the HaaS gateway": vswitchd_restarted(lambda r: "hgw"),
        "PostgreSQL restarted during reserves": postgresql_restarted,
        "leader coordinator killed, a second one running": leader_killed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="run the scenarios whose name contains this")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a scenario may take to converge")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (the lab)"}))
        return 1
    name = "bf" + secrets.token_hex(2)
    lab = realizer.load(None, name=name)
    pg = PostgresServer()
    data_dir = Path(tempfile.mkdtemp(prefix="iris-faults-"))
    out: dict = {"per_scenario": {}}
    bench = None
    try:
        realizer.up(lab, ephemeral=True)
        pg.start()
        bench = Bench(lab, pg, pg.fresh_database(), data_dir)
        for title, run in scenarios().items():
            if args.only and args.only not in title:
                continue
            entry: dict = {"passed": False, "leaks": 0, "converge_s": None}
            try:
                entry["detail"] = run(bench)
                t0 = time.monotonic()
                diffs = bench.converged(args.timeout)
                entry["converge_s"] = round(time.monotonic() - t0, 2)
                entry["leaks"] = len(diffs)
                if diffs:
                    entry["diffs"] = diffs[:20]
                entry["passed"] = not diffs
            except Exception as e:  # noqa: BLE001 - one scenario's failure is its result
                entry["error"] = f"{type(e).__name__}: {e}"[:500]
                bench.restart() if not bench.coord.alive() else None
                for n in realizer.ensure_agents(lab):
                    entry.setdefault("restarted", []).append(n)
            finally:
                try:  # a clean slate for the next one
                    bench.terminate_all()
                    left = bench.converged(args.timeout)
                    if left:
                        entry.setdefault("error", f"cleanup did not converge: {left[:5]}")
                except Exception as e:  # noqa: BLE001
                    entry.setdefault("error", f"cleanup: {e}"[:300])
            out["per_scenario"][title] = entry
            print(f"{'ok  ' if entry['passed'] else 'FAIL'} {title}: {entry.get('converge_s')} s "
                  f"{entry.get('error', '')}", file=sys.stderr)
    finally:
        if bench is not None:
            bench.coord.stop()
        realizer.down(name)
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    per = out["per_scenario"]
    out["scenarios"] = len(per)
    out["passed"] = sum(1 for e in per.values() if e["passed"])
    out["leaks"] = sum(e["leaks"] for e in per.values())
    out["max_converge_s"] = max((e["converge_s"] or 0 for e in per.values()), default=0)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
