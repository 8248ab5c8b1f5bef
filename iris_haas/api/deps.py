"""Authentication and the Annotated dependency aliases routes use."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from iris_haas.contract.errors import Forbidden, Unauthorized
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


def get_coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator


def get_inventory(request: Request) -> Inventory:
    return request.app.state.inventory


def principal(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing bearer token")
    token = creds.credentials
    if hmac.compare_digest(token.encode(), request.app.state.admin_token.encode()):
        return Principal(admin=True)
    tenant = request.app.state.inventory.tenant_by_token(token)
    if tenant is None:
        raise Unauthorized("unknown token")
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
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(admin)]
TenantDep = Annotated[Principal, Depends(tenant)]
