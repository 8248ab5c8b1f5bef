"""Authentication and the Annotated dependency aliases routes use."""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from iris_haas.api.metrics import CoordinatorMetrics
from iris_haas.contract.errors import Forbidden, TooManyRequests, Unauthorized
from iris_haas.control.engine import Coordinator
from iris_haas.control.inventory import Inventory

bearer = HTTPBearer(auto_error=False, description="an admin token or a tenant's token")


@dataclass(frozen=True)
class Principal:
    admin: bool
    tenant_id: int | None = None
    tenant_name: str | None = None

    @property
    def scope(self) -> int | None:
        """The tenant a query is limited to; None for the admin (sees everything)."""
        return None if self.admin else self.tenant_id


class AuthThrottle:
    """At most ``limit`` unknown or expired tokens per client address in ``window_s``; past that,
    the address is answered 429 (without its token being checked) until its oldest failure ages out."""

    def __init__(self, limit: int = 10, window_s: float = 60.0):
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, addr: str, now: float) -> deque[float]:
        q = self._failures.setdefault(addr, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[addr]  # nothing kept for addresses that behave
        return q

    def check(self, addr: str) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._recent(addr, now)
            if len(q) >= self.limit:
                raise TooManyRequests("too many unknown tokens from this address; try again later",
                                      retry_after_s=int(q[0] + self.window_s - now) + 1)

    def failed(self, addr: str) -> None:
        with self._lock:
            self._failures.setdefault(addr, deque()).append(time.monotonic())


def get_coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator


def get_inventory(request: Request) -> Inventory:
    return request.app.state.inventory


def get_metrics(request: Request) -> CoordinatorMetrics:
    return request.app.state.metrics


def principal(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing bearer token")
    throttle: AuthThrottle = request.app.state.auth_throttle
    addr = request.client.host if request.client else "unknown"
    throttle.check(addr)
    token = creds.credentials
    if hmac.compare_digest(token.encode(), request.app.state.admin_token.encode()):
        return Principal(admin=True)
    tenant = request.app.state.inventory.tenant_by_token(token)
    if tenant is None:
        throttle.failed(addr)
        raise Unauthorized("unknown or expired token")
    return Principal(admin=False, tenant_id=tenant.id, tenant_name=tenant.name)


def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if not p.admin:
        raise Forbidden("this needs the admin token")
    return p


def tenant(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if p.admin:
        raise Forbidden("this needs a tenant's token")
    return p


CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
InventoryDep = Annotated[Inventory, Depends(get_inventory)]
MetricsDep = Annotated[CoordinatorMetrics, Depends(get_metrics)]
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(admin)]
TenantDep = Annotated[Principal, Depends(tenant)]
