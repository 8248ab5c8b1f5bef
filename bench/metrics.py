"""Scrape latency of both /metrics with 1,000 active L1s, and events per second through the SSE stream.

A coordinator (`iris serve` in this process, a real uvicorn on 127.0.0.1, SQLite, its scheduler
ticking at the default interval) with one L0 big enough for 1,000 L1s, ten tenants each holding a
provisioned reservation of 100 lxc L1s, and the in-memory data plane; then, with the coordinator
stopped, an agent (a real uvicorn, mutual TLS, the in-memory host) holding that L0's desired
state: its 1,000 L1s, their ports and shaping (with counters) and their mesh. Each is scraped
``--scrapes`` times over one kept-alive connection from a process of its own, as Prometheus does
(the coordinator with the admin token, the agent with the coordinator's certificate).

Then ``--events`` events are written by a producer thread (batches of 100 per transaction, as
fast as SQLite takes them) while the admin reads ``GET /v1/events/stream`` with httpx-sse (the
SDK's ``Client.follow``); ``events_per_s`` = events / (first write .. last event received).

Prints one JSON object; targets: ``scrape_ms_p99`` <= 100, ``events_per_s`` >= 1000.

    python bench/metrics.py [--l1s 1000] [--scrapes 200] [--events 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from iris_haas.agent.client import AgentClient, ClientTls  # noqa: E402
from iris_haas.agent.server import Agent, create_app, freeze_heap  # noqa: E402
from iris_haas.agent.tls import ServerTls  # noqa: E402
from iris_haas.api.client import Client  # noqa: E402
from iris_haas.api.service import LocalCoordinator  # noqa: E402
from iris_haas.contract.ops import L1Op  # noqa: E402
from iris_haas.control import pki  # noqa: E402
from iris_haas.control.settings import Settings  # noqa: E402
from iris_haas.control.sync import InMemoryDataPlane  # noqa: E402
from iris_haas.hostd.memory import MemoryHost  # noqa: E402
from iris_haas.store.models import Event  # noqa: E402

TENANTS = 10
L0 = "l0-0"


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else values[0] * 1000


def populate(admin: Client, l1s: int) -> list[tuple[str, str]]:
    """The inventory, ten tenants, and their provisioned reservations: ``l1s`` L1s on one L0.
    Returns (tenant token, reservation id) of each."""
    admin.post("/sites", {"name": "haas"})
    admin.post("/nodes", {"name": L0, "site": "haas", "cpus": l1s, "memory_mb": 64 * l1s, "disk_gb": l1s,
                          "underlay_address": "198.18.10.10"})
    admin.post("/gateways", {"name": "haas-gw", "site": "haas", "underlay_address": "198.18.0.1",
                             "fabric_address": "198.18.10.1", "uplink": "up"})
    out = []
    for i in range(TENANTS):
        name = f"t{i}"
        token = admin.post("/tenants", {"name": name})["token"]
        with Client(admin.url, token, timeout=600) as t:
            t.post("/sites", {"name": f"iaas-{name}", "gateway_underlay": f"198.18.1.{10 + i}"})
            admin.post("/links", {"name": f"link-{name}", "site_a": "haas", "site_b": f"iaas-{name}",
                                  "capacity_mbps": 1000})
            count = l1s // TENANTS + (1 if i < l1s % TENANTS else 0)
            r = t.post("/reservations", {"duration_s": 86400, "items": [
                {"kind": "compute", "count": count, "l1_kind": "lxc", "cpus": 1, "memory_mb": 64, "disk_gb": 1}]})
            t.post(f"/reservations/{r['id']}/commit")
            assert t.post(f"/reservations/{r['id']}/provision")["provision_state"] == "Provisioned"
        out.append((token, r["id"]))
    return out


def time_scrapes(get, n: int) -> tuple[list[float], str]:
    lat, text = [], ""
    for _ in range(n):
        t = time.perf_counter()
        text = get()
        lat.append(time.perf_counter() - t)
    return lat, text


def scrape_coordinator(url: str, token: str, n: int) -> tuple[list[float], str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        def get() -> str:
            r = http.get("/metrics")
            r.raise_for_status()
            return r.text

        return time_scrapes(get, n)


def scrape_agent(url: str, ca_dir: str, node: str, n: int) -> tuple[list[float], str]:
    with AgentClient(url, ClientTls.coordinator(ca_dir), node=node, timeout=30) as c:
        return time_scrapes(c.metrics, n)


def in_scraper(fn, *args) -> tuple[list[float], str]:
    """Run the scrapes from a process of their own, as a Prometheus server is: the client's parsing
    does not compete with the server for this process's interpreter lock."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def series(text: str, name: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text) if f.name == name)


class AgentServer:
    """An agent holding ``state`` on the in-memory host, served over mutual TLS on loopback."""

    def __init__(self, tmp: Path, state, l1s: int):
        pki.init_ca(tmp / "ca")
        pki.enroll_host(tmp / "ca", L0, tmp / "host")
        self.tls = ServerTls(tmp / "host")
        self.host = MemoryHost()
        self.agent = Agent(L0, self.host, tmp / "agent")
        self.agent.put(state)
        rng = random.Random(1)
        for o in state.ops:
            if isinstance(o, L1Op):  # traffic and use, so every series has a value of its own
                self.host.count(o.port, rx_bytes=rng.randrange(1 << 30), tx_bytes=rng.randrange(1 << 30),
                                rx_packets=rng.randrange(1 << 20), tx_packets=rng.randrange(1 << 20))
                self.host.use(o.name, rng.uniform(0, 1e4), rng.randrange(64 << 20))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.agent, None), host="127.0.0.1", port=self.port,
                                                    log_level="warning",
                                                    ssl_context_factory=lambda _c, _d: self.tls.context))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.ca = tmp / "ca"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the agent did not start")
            time.sleep(0.02)
        freeze_heap()  # as `iris agent run` does before it serves
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.tls.close()
        gc.unfreeze()


def events_per_s(lc: LocalCoordinator, admin_token: str, rid: str, n: int) -> float:
    """Write ``n`` events (100 per transaction) while the admin's stream reads them."""
    db = lc.engine.db
    with db.transaction() as s:
        after = s.scalar(select(func.max(Event.seq))) or 0
    got = 0
    done = threading.Event()

    def consume() -> None:
        nonlocal got
        with Client(lc.url, admin_token, timeout=60) as c:
            for _ in c.follow(after, idle_s=30):
                got += 1
                if got >= n:
                    done.set()
                    return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(0.5)  # the stream is open
    t0 = time.perf_counter()
    for off in range(0, n, 100):
        with db.transaction() as s:
            s.add_all([Event(reservation_id=rid, at=time.time(), type="bench", detail={"i": off + i})
                       for i in range(min(100, n - off))])
        db.bell.ring()
    if not done.wait(300):
        raise RuntimeError(f"the stream delivered {got} of {n} events")
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--l1s", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--events", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="iris-bench-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        # the leader's scheduler at its default interval: its ticks share the process with the scrapes
        with LocalCoordinator(tmp / "coord", dataplane=InMemoryDataPlane(),
                              scheduler_interval_s=Settings().scheduler_interval_s) as lc:
            token = lc.admin_token
            with Client(lc.url, token, timeout=600) as admin:
                tenants = populate(admin, args.l1s)
            populate_s = time.perf_counter() - t
            state = lc.engine.desired_state(L0)
            active = sum(isinstance(o, L1Op) for o in state.ops)

            coord_lat, coord_text = in_scraper(scrape_coordinator, lc.url, token, args.scrapes)

            eps = events_per_s(lc, token, tenants[0][1], args.events)

        # the agent alone in its process, as on a host
        with AgentServer(tmp / "pki", state, args.l1s) as ag:
            cpu0 = time.process_time()  # this process is the agent's server only: its CPU is the scrapes'
            agent_lat, agent_text = in_scraper(scrape_agent, f"https://127.0.0.1:{ag.port}", str(ag.ca), L0,
                                               args.scrapes)
            agent_cpu_ms = (time.process_time() - cpu0) * 1000 / args.scrapes
    coord_p99, agent_p99 = pct(coord_lat, 99), pct(agent_lat, 99)
    print(json.dumps({
        "active_l1s": active,
        "scrapes": args.scrapes,
        "coordinator_scrape_ms_p50": round(pct(coord_lat, 50), 2),
        "coordinator_scrape_ms_p99": round(coord_p99, 2),
        "agent_scrape_ms_p50": round(pct(agent_lat, 50), 2),
        "agent_scrape_ms_p99": round(agent_p99, 2),
        "scrape_ms_p99": round(max(coord_p99, agent_p99), 2),
        "agent_scrape_cpu_ms": round(agent_cpu_ms, 1),
        "agent_series": sum(1 for line in agent_text.splitlines() if line and not line.startswith("#")),
        "agent_port_series": series(agent_text, "iris_port_receive_bytes"),
        "coordinator_series": sum(1 for line in coord_text.splitlines() if line and not line.startswith("#")),
        "events": args.events,
        "events_per_s": round(eps, 1),
        "database": "sqlite",
        "populate_s": round(populate_s, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),  # the machine is shared: what else ran meanwhile
    }))


if __name__ == "__main__":
    main()
