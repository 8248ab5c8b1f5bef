from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from iris_haas.api import schemas
from iris_haas.api.deps import AdminDep, InventoryDep, PrincipalDep
from iris_haas.contract.errors import Forbidden, InvalidInput
from iris_haas.contract.types import HORIZON_S
from iris_haas.control.schemas import from_epoch
from iris_haas.store.models import Tenant

tenants = APIRouter(prefix="/tenants", tags=["tenants"])
sites = APIRouter(prefix="/sites", tags=["sites"])


def created(tenant: Tenant, token: str) -> schemas.TenantCreated:
    expires = from_epoch(tenant.token_expires_at) if tenant.token_expires_at else None
    return schemas.TenantCreated(id=tenant.id, name=tenant.name, tunnel_key=tenant.tunnel_key, token=token,
                                 token_expires_at=expires)


@tenants.post("", response_model=schemas.TenantCreated, status_code=status.HTTP_201_CREATED)
def create_tenant(body: schemas.TenantCreate, inv: InventoryDep, _: AdminDep):
    tenant, token = inv.create_tenant(body.name, body.tunnel_key, body.token_ttl_s)
    return created(tenant, token)


@tenants.get("", response_model=list[schemas.TenantPublic])
def list_tenants(inv: InventoryDep, _: AdminDep):
    return inv.list("tenant")


@tenants.get("/{name}", response_model=schemas.TenantPublic)
def get_tenant(name: str, inv: InventoryDep, _: AdminDep):
    return inv.get("tenant", name)


@tenants.post("/{name}/token", response_model=schemas.TenantCreated, summary="Issue a new token (the old one stops working)")
def rotate_token(name: str, inv: InventoryDep, _: AdminDep,
                 ttl_s: Annotated[int | None, Query(ge=60, le=HORIZON_S,
                                                    description="the new token expires after this long")] = None):
    token = inv.rotate_token(name, ttl_s)
    return created(inv.get("tenant", name), token)


@tenants.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tenant(name: str, inv: InventoryDep, _: AdminDep):
    inv.delete("tenant", name)


@sites.post("", response_model=schemas.SitePublic, status_code=status.HTTP_201_CREATED,
            summary="Register a site: the admin registers HaaS sites, a tenant its own IaaS site")
def create_site(body: schemas.SiteCreate, inv: InventoryDep, who: PrincipalDep):
    if who.admin:
        given = [f for f in body.IAAS_ONLY if f in body.model_fields_set]
        if given:
            raise InvalidInput("the admin registers HaaS sites (name only); IaaS sites are registered by their "
                               "tenant", field=given[0])
        return inv.create_site(tenant_id=None, name=body.name)
    if body.gateway_underlay is None:
        raise InvalidInput("an IaaS site needs its gateway's underlay address", field="gateway_underlay")
    return inv.create_site(tenant_id=who.tenant_id, **body.model_dump())


@sites.get("", response_model=list[schemas.SitePublic])
def list_sites(inv: InventoryDep, who: PrincipalDep):
    return inv.list("site", who.scope)


@sites.get("/{name}", response_model=schemas.SitePublic)
def get_site(name: str, inv: InventoryDep, who: PrincipalDep):
    return inv.get("site", name, who.scope)


@sites.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT,
              responses={403: {"model": schemas.ErrorBody, "description": "tenants remove only their own IaaS sites"}})
def delete_site(name: str, inv: InventoryDep, who: PrincipalDep):
    site = inv.get("site", name, who.scope)
    if not who.admin and site.kind != "iaas":
        raise Forbidden("tenants remove only their own IaaS sites")
    inv.delete("site", name, who.scope)
