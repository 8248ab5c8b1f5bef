"""The coordinator's REST API under /v1 (OpenAPI at /v1/openapi.json)."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from iris_haas import __version__
from iris_haas.api import deps, schemas, ui
from iris_haas.api.deps import AdminDep, CoordinatorDep
from iris_haas.api.metrics import CoordinatorMetrics
from iris_haas.api.routes import events, hosts, inventory, nsi, reservations, tenants
from iris_haas.contract.errors import IrisError
from iris_haas.control.engine import Coordinator
from iris_haas.control.inventory import Inventory
from iris_haas.control.webhooks import Webhooks, WebhookWorker

log = logging.getLogger("iris.api")


class Scheduler:
    """Runs ``Coordinator.tick`` every ``interval`` seconds in a thread: hold timeouts, start and end times."""

    def __init__(self, coordinator: Coordinator, interval: float):
        self.coordinator, self.interval = coordinator, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iris-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.coordinator.tick()
            except Exception:  # keep ticking; the next tick retries the same work
                log.exception("scheduler tick failed")


ERRORS = {
    401: "Unauthorized: no bearer token, or an unknown or expired one",
    403: "Forbidden: this token's role may not do this",
    404: "NotFound: no such object (or not this tenant's)",
    409: "A conflict: AlreadyExists, InUse, IllegalTransition (in the current state), VersionConflict, "
         "ReserveFailed (does not fit)",
    422: "InvalidInput: names each field at fault; nothing was stored",
    429: "TooManyRequests: too many unknown tokens from this address (or event streams open); see Retry-After",
    502: "DataPlaneError: a host did not take its state in time (the reconciler keeps trying), or an NSI provider "
         "refused or did not answer; nothing was applied",
    503: "ServiceUnavailable: the database is unreachable; nothing was applied; retry",
}
# the calls that wait for their hosts' or an NSI provider's answers
ANSWERS_502 = {"/reservations/{rid}/provision", "/reservations/{rid}/release"}
ANSWERS_409 = {"/availability"}  # a GET that answers ReserveFailed when nothing fits


def declare_errors(router: APIRouter) -> APIRouter:
    """Declare, on each route, every error status it can answer, with the error body: derived from
    what the route takes (a token, a role, path parameters, input) and what it does."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        calls, takes_input = set(), False
        todo: list[Dependant] = [route.dependant]
        while todo:
            d = todo.pop()
            calls.add(d.call)
            takes_input |= bool(d.path_params or d.query_params or d.body_params or d.header_params)
            todo.extend(d.dependencies)
        codes = set()
        if deps.principal in calls:
            codes |= {401, 429, 503}
        if calls & {deps.admin, deps.tenant}:
            codes.add(403)
        if route.dependant.path_params:
            codes.add(404)
        if route.methods - {"GET"} or route.path in ANSWERS_409:
            codes.add(409)
        if takes_input:
            codes.add(422)
        if route.path in ANSWERS_502:
            codes.add(502)
        for code in sorted(codes):
            route.responses.setdefault(code, {"model": schemas.ErrorBody, "description": ERRORS[code]})
    return router


def create_app(coordinator: Coordinator, admin_token: str, *, scheduler_interval: float | None = None,
               heartbeat_s: float = 15.0, stream_lasts_s: float = 300.0,
               webhook_allow_private: bool = False, metrics_public: bool = False) -> FastAPI:
    """The API; with ``scheduler_interval``, also the scheduler and the webhooks' delivery (which
    only the leader runs): a coordinator without them serves requests only. ``metrics_public``:
    ``/metrics`` answers without a token (else it takes the admin's)."""
    hooks = Webhooks(coordinator.db, allow_private=webhook_allow_private)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sched = Scheduler(coordinator, scheduler_interval) if scheduler_interval else None
        worker = WebhookWorker(hooks, coordinator.lease.held, scheduler_interval) if scheduler_interval else None
        for background in (sched, worker):
            if background:
                background.start()
        yield
        for background in (worker, sched):
            if background:
                background.stop()

    app = FastAPI(
        title="Iris",
        version=__version__,
        summary="HaaS resource coordinator: advance reservations of compute, network and storage for IaaS tenants",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.coordinator = coordinator
    app.state.inventory = Inventory(coordinator.db)
    app.state.admin_token = admin_token
    app.state.auth_throttle = deps.AuthThrottle()
    app.state.webhooks = hooks
    app.state.stream_slots = events.StreamSlots()
    app.state.heartbeat_s, app.state.stream_lasts_s = heartbeat_s, stream_lasts_s
    app.state.metrics = CoordinatorMetrics(coordinator)
    app.state.metrics.instrument(app)

    @app.exception_handler(IrisError)
    async def _iris_error(_: Request, exc: IrisError):
        retry = exc.extra.get("retry_after_s")
        return JSONResponse(exc.to_dict(), status_code=exc.status,
                            headers={"Retry-After": str(retry)} if retry else None)

    def invalid(errors: list[dict]) -> JSONResponse:
        message = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return JSONResponse({"type": "InvalidInput", "message": message, "errors": errors}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        return invalid([{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
                        for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # a body that is not JSON: invalid input like any other
            return invalid([{"field": "", "message": str(exc.detail)}])
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse({"type": kind, "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError):
        # the database is unreachable (restarting, failing over): nothing was applied; say so
        log.warning("database unreachable: %s", exc.orig)
        return JSONResponse({"type": "ServiceUnavailable", "message": "the database is unreachable; try again"},
                            status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse({"type": "InternalError", "message": "internal error; see the server log"},
                            status_code=500)

    v1 = APIRouter(prefix="/v1")

    @v1.get("/health", tags=["meta"])
    def health():
        return {"status": "ok", "version": __version__}

    @v1.get("/hosts/{host}/desired-state", tags=["agents"],
            summary="What a host's agent must realize: every operation of the active reservations on it")
    def desired_state(host: str, coord: CoordinatorDep, _: AdminDep):
        return {"host": host, "ops": [op.model_dump() for op in coord.desired_state(host).ops]}

    for router in (tenants.tenants, tenants.sites, inventory.nodes, inventory.gateways, inventory.links,
                   inventory.pools, inventory.images, reservations.reservations, reservations.availability, hosts.hosts,
                   hosts.utilization_router,
                   events.events, events.webhooks, nsi.requester):
        v1.include_router(declare_errors(router))
    app.include_router(declare_errors(v1))
    app.include_router(declare_errors(metrics_router(app.state.metrics, public=metrics_public)))
    ui.mount(app)  # the dashboard at /ui/
    return app


def metrics_router(metrics: CoordinatorMetrics, *, public: bool) -> APIRouter:
    """``GET /metrics`` where Prometheus looks by default: the admin token's, or anyone's when ``public``."""
    router = APIRouter(tags=["meta"])
    text = {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format"}

    @router.get("/metrics", response_class=Response, responses={200: text},
                dependencies=[] if public else [Depends(deps.admin)],
                summary="Prometheus metrics: reservations by NSI state, hosts' generations, latencies")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
