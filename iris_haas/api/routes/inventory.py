"""The HaaS inventory (admin): one router per resource, built from one pattern."""

# No ``from __future__ import annotations``: the routes' body types are the factory's arguments, which
# FastAPI could not resolve from strings.
from fastapi import APIRouter, status

from iris_haas.api import schemas
from iris_haas.api.deps import AdminDep, CoordinatorDep, InventoryDep, PrincipalDep


def resource_router(kind: str, path: str, create: type, public: type, tag: str) -> APIRouter:
    router = APIRouter(prefix=f"/{path}", tags=[tag])

    @router.post("", response_model=public, status_code=status.HTTP_201_CREATED, summary=f"Register a {tag[:-1]}")
    def create_(body: create, inv: InventoryDep, _: AdminDep):  # type: ignore[valid-type]
        return inv.create(kind, body.model_dump())

    @router.get("", response_model=list[public], summary=f"List {tag}")
    def list_(inv: InventoryDep, _: AdminDep):
        return inv.list(kind)

    @router.get("/{name}", response_model=public, summary=f"Show a {tag[:-1]}")
    def get_(name: str, inv: InventoryDep, _: AdminDep):
        return inv.get(kind, name)

    @router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary=f"Remove a {tag[:-1]}")
    def delete_(name: str, inv: InventoryDep, _: AdminDep):
        inv.delete(kind, name)

    return router


nodes = resource_router("node", "nodes", schemas.NodeCreate, schemas.NodePublic, "nodes")
gateways = resource_router("gateway", "gateways", schemas.GatewayCreate, schemas.GatewayPublic, "gateways")
links = resource_router("link", "links", schemas.LinkCreate, schemas.LinkPublic, "links")
pools = resource_router("storage_pool", "storage-pools", schemas.StoragePoolCreate, schemas.StoragePoolPublic,
                        "storage-pools")


@nodes.patch("/{name}", response_model=schemas.NodePublic, summary="Set a node's state")
def update_node(name: str, body: schemas.NodeUpdate, coord: CoordinatorDep, _: AdminDep):
    """A node going ``down`` ends (Failed) every reservation that still has an L1 on it."""
    return coord.set_node_state(name, body.state)


images = APIRouter(prefix="/images", tags=["images"])


@images.post("", response_model=schemas.ImagePublic, status_code=status.HTTP_201_CREATED, summary="Register an image")
def create_image(body: schemas.ImageCreate, inv: InventoryDep, _: AdminDep):
    """An OS image a compute item may name (``image``), for L1s of its kind."""
    return inv.create("image", body.model_dump())


@images.get("", response_model=list[schemas.ImagePublic], summary="List images")
def list_images(inv: InventoryDep, _: PrincipalDep):
    """The images a tenant may name in its compute items (admin and tenants)."""
    return inv.list("image")


@images.get("/{name}", response_model=schemas.ImagePublic, summary="Show an image")
def get_image(name: str, inv: InventoryDep, _: PrincipalDep):
    return inv.get("image", name)


@images.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an image")
def delete_image(name: str, inv: InventoryDep, _: AdminDep):
    """Refused (409 InUse) while a reservation not yet terminated names it; the files on the L0s stay."""
    inv.delete("image", name)
