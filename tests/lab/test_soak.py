"""Soak: random lifecycles through the API against the lab, agents killed and restarted at random;
at every quiet point each host equals the database. ``IRIS_SOAK_LIFECYCLES`` and ``IRIS_SOAK_SEED``
choose the run: 60 in ``make test`` (about 3 minutes), 300 for the long run (about 15)."""

from __future__ import annotations

import os
import random

import pytest

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.control.sync import AgentDataPlane
from iris_haas.lab import audit, realizer
from iris_haas.lab.register import register

pytestmark = pytest.mark.lab

LIFECYCLES = int(os.environ.get("IRIS_SOAK_LIFECYCLES", "60"))
SEED = int(os.environ.get("IRIS_SOAK_SEED", "20261202"))
QUIET_EVERY = 20  # lifecycles between two quiet points


class Life:
    """One reservation's walk to its end, a random step at a time."""

    def __init__(self, rng: random.Random, tenant, rid: str):
        self.rng, self.tenant, self.rid, self.done = rng, tenant, rid, False

    def step(self) -> None:
        r = self.tenant.get(f"/reservations/{self.rid}")
        st, prov, life = r["reservation_state"], r["provision_state"], r["lifecycle_state"]
        if life in ("Terminated",):
            self.done = True
            return
        choices = []
        if st == "ReserveHeld":
            choices += ["commit"] * 4 + ["abort", "wait"]  # wait: the hold timer may end it
        elif st in ("ReserveFailed", "ReserveTimeout"):
            choices += ["abort", "terminate"]
        elif r["committed_version"] == 0:
            choices += ["terminate"]
        else:
            choices += ["terminate"]
            if life == "Created":
                choices += ["provision"] * 3 if prov == "Released" else ["release", "modify"]
        what = self.rng.choice(choices)
        if what == "wait":
            return
        if what == "modify":
            self.tenant.post(f"/reservations/{self.rid}/modify",
                             {"version": r["version"] + 1, "count": self.rng.choice([1, 2])})
            return
        self.tenant.post(f"/reservations/{self.rid}/{what}")
        self.done = what == "terminate"


def test_random_lifecycles_with_agents_killed_leave_every_host_equal_to_the_database(lab, tmp_path):
    rng = random.Random(SEED)
    ignore = audit.namespaces()
    agents_down: set[str] = set()
    dp = AgentDataPlane(lab.coordinator_tls(), netns=lab.ns("ctl"), timeout=15)
    with LocalCoordinator(tmp_path, hold_timeout_s=3, dataplane=dp, poll_interval_s=1, push_timeout_s=5,
                          provision_timeout_s=10) as c:
        admin = c.client(c.admin_token)
        tenants = {t: c.client(tok) for t, tok in register(lab, admin).items()}
        lives: list[Life] = []
        started = calls = refused = quiet = 0
        divergence: list[str] = []
        try:
            while started < LIFECYCLES or lives:
                if started < LIFECYCLES and (len(lives) < 4 or rng.random() < 0.2):
                    t = rng.choice(sorted(tenants))
                    try:
                        r = tenants[t].post("/reservations", {"duration_s": rng.choice([4, 600, 600, 600]),
                                            "items": [{"kind": "compute", "count": rng.choice([1, 1, 2]),
                                                       "l1_kind": "netns", "cpus": 1, "memory_mb": 64,
                                                       "disk_gb": 1}]})
                        lives.append(Life(rng, tenants[t], r["id"]))
                    except ApiError:
                        refused += 1
                    started += 1
                    if started % QUIET_EVERY == 0:  # a quiet point: every agent back, then compare
                        for n in sorted(agents_down):
                            realizer.start_agent(lab, n)
                        agents_down.clear()
                        left = audit.converged(lab, admin, 60, ignore)
                        divergence += [f"after {started} lifecycles: {d}" for d in left]
                        quiet += 1
                elif lives:
                    life = rng.choice(lives)
                    try:
                        life.step()
                    except ApiError:
                        refused += 1  # an illegal step, a host down: refused cleanly is fine
                    calls += 1
                    lives = [x for x in lives if not x.done]
                if rng.random() < 0.03:  # faults: an agent dies, or one comes back
                    node = rng.choice(lab.agent_nodes())
                    if node in agents_down:
                        realizer.start_agent(lab, node)
                        agents_down.discard(node)
                    else:
                        realizer.stop_agent(lab, node)
                        agents_down.add(node)
        finally:
            for n in sorted(agents_down):
                realizer.start_agent(lab, n)
            for r in admin.get("/reservations"):
                if r["lifecycle_state"] != "Terminated":
                    try:
                        admin.post(f"/reservations/{r['id']}/terminate")
                    except ApiError:
                        pass
        divergence += [f"at the end: {d}" for d in audit.converged(lab, admin, 60, ignore)]
        assert quiet >= LIFECYCLES // QUIET_EVERY and calls > LIFECYCLES
        assert divergence == [], divergence[:20]
