"""The per-host agent: HTTPS on the control network, for the coordinator only.

The server is TLS only and requires the coordinator's client certificate (see
:mod:`iris_haas.agent.tls`): no connection without it reaches a route. An agent run with
``--insecure-http`` (development only) speaks plain HTTP and wants ``Authorization: Bearer
<token>`` on every route but ``/v1/health`` instead.

Routes:

``GET  /v1/health``   liveness and the node's name
``GET  /v1/state``    what is really on the host (op form), the desired version, whether they agree
``GET  /v1/desired``  the last desired state received
``PUT  /v1/desired``  replace the desired state (:class:`~iris_haas.contract.ops.DesiredState`) and
                      reconcile the host to it; returns the actions taken. A state older than the
                      one held (a lower ``version``: the coordinator's generation) is refused
                      with 409, so a slow or second coordinator can never roll the host back
``POST /v1/apply``    reconcile again to the stored desired state (after a crash, a restart, or a
                      change made by hand)
``GET  /metrics``     Prometheus metrics of the host's L1s, ports, tunnels and tc classes, read at
                      scrape time without the reconcile lock (:mod:`iris_haas.agent.metrics`)

The desired state is kept in ``state_dir/desired.json`` (written before it is applied), so a
restarted agent still knows it: at start it applies it, and then every ``reconcile_s`` it
observes the host and repairs whatever drifted (a daemon restarted, a change made by hand), with
or without a coordinator. One lock serializes reconciliations. Errors are ``{type, message}``
with the error's HTTP status.
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from iris_haas.agent.metrics import AgentCollector, Exposition
from iris_haas.contract.errors import IrisError, Unauthorized, VersionConflict
from iris_haas.contract.ops import DesiredState
from iris_haas.hostd.actions import WarmUp
from iris_haas.hostd.policy import Policy
from iris_haas.hostd.reconciler import Host, HostConfig
from iris_haas.hostd.stats import HostStats

log = logging.getLogger("iris.agent")


class ApplyResult(BaseModel):
    version: int
    actions: list[str]
    in_sync: bool  # the host holds every op of the version (none pending, none refused)
    refused: list[str] = []  # ops this host's policy will not do, each with its reason


class StateReport(BaseModel):
    node: str
    version: int
    observed: list[dict]
    pending: list[str]
    in_sync: bool
    refused: list[str] = []


class HostDriver(Protocol):
    """What the agent needs of a host driver: the real :class:`Host` or :class:`MemoryHost`.
    Actions are reported as their strings."""

    def apply(self, desired: DesiredState) -> Sequence[object]: ...

    def plan(self, desired: DesiredState) -> Sequence[object]: ...

    def status(self, desired: DesiredState) -> tuple[list[dict[str, Any]], Sequence[object]]: ...

    def stats(self, desired: DesiredState) -> HostStats: ...

    def close(self) -> None: ...


def _pending(actions: Sequence[object]) -> list[object]:
    # a warm-up changes nothing on the host: a plan of warm-ups only is in sync
    return [a for a in actions if not isinstance(a, WarmUp)]


class Agent:
    def __init__(self, node: str, host: HostDriver, state_dir: Path, policy: Policy | None = None):
        self.node = node
        self.host = host
        self.policy = policy if policy is not None else Policy()
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.desired = self._load()

    def _path(self) -> Path:
        return self.state_dir / "desired.json"

    def _load(self) -> DesiredState:
        try:
            return DesiredState.model_validate_json(self._path().read_text())
        except (OSError, ValueError):
            return DesiredState()

    def _save(self, d: DesiredState) -> None:
        tmp = self._path().with_suffix(".tmp")
        tmp.write_text(d.model_dump_json())
        os.replace(tmp, self._path())

    def put(self, d: DesiredState) -> ApplyResult:
        with self.lock:
            if d.version < self.desired.version:
                raise VersionConflict(f"this host holds generation {self.desired.version}, newer than {d.version}",
                                      current=self.desired.version)
            self._save(d)
            self.desired = d
            return self._apply(*self._allowed())

    def apply(self) -> ApplyResult:
        with self.lock:
            return self._apply(*self._allowed())

    def _allowed(self) -> tuple[DesiredState, list[str]]:
        """The stored desired state without the ops this host's policy refuses, and those refusals."""
        ops, refused = [], []
        for op in self.desired.ops:
            why = self.policy.refusal(op)
            if why is None:
                ops.append(op)
            else:
                refused.append(f"{op.op} {op.ident()[1:]}: {why}")
        return self.desired.model_copy(update={"ops": ops}), refused

    def _apply(self, allowed: DesiredState, refused: list[str]) -> ApplyResult:
        if refused:
            log.warning("refused %d ops of generation %s: %s", len(refused), self.desired.version, refused)
        actions = self.host.apply(allowed)
        # check that the change is visible (pyroute2's habit): a second plan must be empty
        pending = _pending(self.host.plan(allowed))
        return ApplyResult(version=self.desired.version, actions=[str(a) for a in actions],
                           in_sync=not pending and not refused, refused=refused)

    def reconcile(self) -> ApplyResult | None:
        """One pass of the loop: observe, plan, and execute only if something differs."""
        with self.lock:
            allowed, refused = self._allowed()
            if not _pending(self.host.plan(allowed)):
                return None
            log.info("host drifted from generation %s: repairing", self.desired.version)
            return self._apply(allowed, refused)

    def run_reconciler(self, every_s: float) -> None:
        """Apply the stored state now, then reconcile every ``every_s`` seconds, in a thread,
        until :meth:`close`. A failing pass is logged; the next one tries again."""
        self._stop = threading.Event()

        def loop() -> None:
            while True:
                try:
                    self.reconcile()
                except Exception:  # noqa: BLE001 - the loop never gives up
                    log.exception("reconcile pass failed")
                if self._stop.wait(every_s):
                    return

        self._loop = threading.Thread(target=loop, name="iris-reconcile", daemon=True)
        self._loop.start()

    def close(self) -> None:
        """Stop the loop; let go of what the host driver holds (the real one: its OVSDB connection)."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._loop.join(timeout=30)
        self.host.close()

    def state(self) -> StateReport:
        with self.lock:
            allowed, refused = self._allowed()
            observed, planned = self.host.status(allowed)
            pending = _pending(planned)
            return StateReport(node=self.node, version=self.desired.version, observed=observed,
                               pending=[str(a) for a in pending], in_sync=not pending and not refused,
                               refused=refused)


def create_app(agent: Agent, token: str | None) -> FastAPI:
    """The agent's routes. ``token``: the bearer token of an ``--insecure-http`` agent; None for
    an agent whose TLS server already required the coordinator's certificate of every client."""
    app = FastAPI(title="iris agent", version="1")

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("missing or wrong agent token")

    Auth = Depends(auth)

    # the reference the agent holds, read without its lock: a scrape never waits for a reconcile pass
    metrics = Exposition(AgentCollector(agent.node, lambda: agent.desired, agent.host.stats))

    @app.exception_handler(IrisError)
    async def _iris_error(_req: Request, e: IrisError):
        return JSONResponse(status_code=e.status, content=e.to_dict())

    @app.get("/v1/health")
    def health() -> dict:
        return {"ok": True, "node": agent.node}

    @app.get("/v1/state", response_model=StateReport, dependencies=[Auth])
    def state() -> StateReport:
        return agent.state()

    @app.get("/v1/desired", response_model=DesiredState, dependencies=[Auth])
    def get_desired() -> DesiredState:
        return agent.desired

    @app.put("/v1/desired", response_model=ApplyResult, dependencies=[Auth])
    def put_desired(d: DesiredState) -> ApplyResult:
        return agent.put(d)

    @app.post("/v1/apply", response_model=ApplyResult, dependencies=[Auth])
    def apply() -> ApplyResult:
        return agent.apply()

    @app.get("/metrics", dependencies=[Auth], response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def freeze_heap() -> None:
    """Put everything alive now (the modules, the app, the stored state) out of the cyclic
    collector's reach, once the agent is ready to serve. Otherwise each full collection walks those
    ~170,000 objects again: a scrape of a host of 1,000 L1s makes ~40,000 short-lived ones, so
    every few scrapes one took 100-150 ms longer (measured with bench/metrics.py). Objects freed by
    their reference count are freed as before; only cycles among the frozen are kept."""
    gc.collect()
    gc.freeze()


def make_agent(node: str, cfg: HostConfig, state_dir: Path, policy: Policy | None = None) -> Agent:
    if not cfg.l1_dir:  # L1 nodes (containers, VMs) keep their state next to the agent's
        cfg.l1_dir = str(Path(state_dir) / "l1")
    if not cfg.storage_dir:  # so are the volumes it made (their data lives in the pools)
        cfg.storage_dir = str(Path(state_dir) / "storage")
    return Agent(node, Host(cfg), state_dir, policy)


