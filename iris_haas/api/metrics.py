"""The coordinator's Prometheus metrics (``GET /metrics``).

Two kinds:

* **Computed at scrape time** from the database (:class:`StateCollector`): reservations counted
  by each of their three NSI states in one grouped query, and each host's generations, in-sync flag
  and last contact from ``host_sync`` (as of the last change or poll: a scrape derives nothing);
  plus the pushes and polls this process made (:class:`iris_haas.control.sync.SyncCounts`).
* **Observed as requests run**: the API's latency by route template, method and status class
  (prometheus-fastapi-instrumentator: a template, never a raw path, so a tenant cannot add series
  by inventing URLs), and admission's (reserve and modify) by outcome.

Every app has a registry of its own (several apps in one process, as in the tests, do not collide).
``/metrics`` takes the admin token (Prometheus's ``authorization`` with ``credentials_file``), or
none when ``metrics_public`` is set, for a port only the Prometheus server reaches.

=========================================================  ==========================================
``iris_reservations{machine, state}``                      reservations in each state of each machine
                                                           (``reservation``, ``provision``, ``lifecycle``)
``iris_host_desired_generation{host}``                     its desired state's generation
``iris_host_acknowledged_generation{host}``                the newest one it confirmed
``iris_host_in_sync{host}``                                1 when its agent found the host matching it
``iris_host_last_seen_timestamp_seconds{host}``            its last answer (POSIX time)
``iris_host_pushes_total{host, outcome}``                  pushes of this process: ok, failed,
                                                           not_in_sync
``iris_host_polls_total{host, outcome}``                   polls: ok, failed
``iris_admission_duration_seconds{request, outcome}``      reserve/modify: held, failed (does not
                                                           fit), refused (any other error)
``iris_api_request_duration_seconds{handler, method,       until the answer's headers (an event
status}``                                                  stream's lifetime is not counted)
=========================================================  ==========================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as instrumentator_metrics
from sqlalchemy import func, select

from iris_haas.contract.errors import ReserveFailed
from iris_haas.contract.types import LifecycleState, ProvisionState, ReservationState
from iris_haas.control.engine import Coordinator
from iris_haas.store.models import HostSync, Reservation

MACHINES = (("reservation", Reservation.reservation_state, ReservationState),
            ("provision", Reservation.provision_state, ProvisionState),
            ("lifecycle", Reservation.lifecycle_state, LifecycleState))
# admission takes milliseconds; one that waits for the admission lock behind others takes longer
ADMISSION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)


class StateCollector(Collector):
    def __init__(self, coordinator: Coordinator):
        self.coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        with self.coordinator.db.reading() as s:  # waits for no writer
            groups = s.execute(select(Reservation.reservation_state, Reservation.provision_state,
                                      Reservation.lifecycle_state, func.count())
                               .group_by(Reservation.reservation_state, Reservation.provision_state,
                                         Reservation.lifecycle_state)).all()
            hosts = s.execute(select(HostSync.host, HostSync.generation, HostSync.acked, HostSync.in_sync,
                                     HostSync.last_seen).order_by(HostSync.host)).all()
        res = GaugeMetricFamily("iris_reservations", "reservations in each state of each NSI state machine",
                                labels=["machine", "state"])
        for i, (machine, _, states) in enumerate(MACHINES):
            counts = dict.fromkeys((str(x) for x in states), 0)  # every state, so a series never vanishes
            for g in groups:
                counts[g[i]] = counts.get(g[i], 0) + g[3]
            for state, n in counts.items():
                res.add_metric([machine, state], n)
        yield res

        gen = GaugeMetricFamily("iris_host_desired_generation", "the generation of the host's desired state",
                                labels=["host"])
        acked = GaugeMetricFamily("iris_host_acknowledged_generation", "the newest generation the host "
                                  "confirmed holding", labels=["host"])
        in_sync = GaugeMetricFamily("iris_host_in_sync", "1 when the host's agent found the host matching its "
                                    "state", labels=["host"])
        seen = GaugeMetricFamily("iris_host_last_seen_timestamp_seconds", "when the host last answered (POSIX "
                                 "time)", labels=["host"])
        for h in hosts:
            gen.add_metric([h.host], h.generation)
            acked.add_metric([h.host], h.acked)
            in_sync.add_metric([h.host], 1 if h.in_sync else 0)
            if h.last_seen is not None:
                seen.add_metric([h.host], h.last_seen)
        yield from (gen, acked, in_sync, seen)

        pushes = CounterMetricFamily("iris_host_pushes", "desired-state pushes this coordinator made, by "
                                     "outcome (ok, failed, not_in_sync)", labels=["host", "outcome"])
        polls = CounterMetricFamily("iris_host_polls", "polls of what a host holds, by outcome (ok, failed)",
                                    labels=["host", "outcome"])
        for (host, what, outcome), n in sorted(self.coordinator.sync.counts.snapshot().items()):
            (pushes if what == "push" else polls).add_metric([host, outcome], n)
        yield from (pushes, polls)


class CoordinatorMetrics:
    """One app's registry, its collector and its histograms."""

    def __init__(self, coordinator: Coordinator):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StateCollector(coordinator))
        self.admission_seconds = Histogram(
            "iris_admission_duration_seconds", "how long admission (reserve, modify) took, by outcome",
            ["request", "outcome"], buckets=ADMISSION_BUCKETS, registry=self.registry)

    def instrument(self, app: FastAPI) -> None:
        """The API's latency by route template, method and status class ("2xx")."""
        inst = Instrumentator(should_group_status_codes=True, should_group_untemplated=True,
                              registry=self.registry)
        inst.add(instrumentator_metrics.latency(
            metric_namespace="iris", metric_subsystem="api", metric_name="request_duration_seconds",
            metric_doc="how long the API took to answer (until the answer's headers), by route template",
            should_exclude_streaming_duration=True, buckets=API_BUCKETS, registry=self.registry))
        inst.instrument(app)

    @contextmanager
    def admission(self, request: str) -> Iterator[None]:
        """Time one admission (``request``: reserve or modify), labelled by how it ended."""
        outcome, t0 = "refused", time.perf_counter()
        try:
            yield
            outcome = "held"
        except ReserveFailed:
            outcome = "failed"
            raise
        finally:
            self.admission_seconds.labels(request, outcome).observe(time.perf_counter() - t0)
