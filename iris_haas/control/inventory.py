"""The HaaS inventory (admin) and tenants' own IaaS sites."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iris_haas.contract.errors import AlreadyExists, InUse, InvalidInput, NotFound
from iris_haas.contract.types import LifecycleState, ServiceModel
from iris_haas.store.db import Database
from iris_haas.store.models import (
    Allocation,
    Base,
    Criteria,
    Gateway,
    Image,
    Link,
    Node,
    Reservation,
    Site,
    StoragePool,
    Tenant,
    bump_inventory,
    give_tunnel_key,
)

KINDS: dict[str, type[Base]] = {
    "site": Site, "node": Node, "gateway": Gateway, "link": Link, "storage_pool": StoragePool, "tenant": Tenant,
    "image": Image,
}


def hash_token(token: str) -> str:
    # API tokens are 256 random bits, so a plain SHA-256 is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def parse_vlans(spec: str) -> list[tuple[int, int]]:
    """'101-102,200,300-399' -> [(101, 102), (200, 200), (300, 399)], each within 1-4094."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise InvalidInput(f"bad VLAN range {part!r}: use forms like 101 or 100-199", field="vlans") from None
        if not (1 <= a <= b <= 4094):
            raise InvalidInput(f"bad VLAN range {part!r}: IDs are 1-4094, low before high", field="vlans")
        out.append((a, b))
    return out


def find_image(s: Session, name: str, l1_kind: str, field: str) -> Image:
    """The image a compute item names, of its L1 kind; else InvalidInput naming ``field``."""
    img = s.scalar(select(Image).where(Image.name == name))
    if img is None:
        raise InvalidInput(f"no image named {name}", field=field)
    if img.l1_kind != l1_kind:
        raise InvalidInput(f"image {name} is for {img.l1_kind} L1s, not {l1_kind}", field=field)
    return img


_M = TypeVar("_M", bound=Any)


class Inventory:
    def __init__(self, db: Database):
        self.db = db

    # the inventory's models all have id and name (and some tenant_id): typed as Any here
    def _by_name(self, s: Session, model: Any, name: str, tenant_id: int | None = None):
        q = select(model).where(model.name == name)
        if tenant_id is not None:
            q = q.where(model.tenant_id == tenant_id)
        obj = s.scalar(q)
        if obj is None:
            raise NotFound(f"no {model.__tablename__.rstrip('s').replace('_', ' ')} named {name}")
        return obj

    def _site_id(self, s: Session, name: str, field: str) -> int:
        site = s.scalar(select(Site).where(Site.name == name))
        if site is None:
            raise InvalidInput(f"no site named {name}", field=field)
        return site.id

    def _add(self, s: Session, obj: _M) -> _M:
        bump_inventory(s)
        s.add(obj)
        try:
            s.flush()
        except IntegrityError:
            raise AlreadyExists(f"a {obj.__tablename__.rstrip('s')} named {obj.name} exists") from None
        return obj

    # -- tenants
    def create_tenant(self, name: str, tunnel_key: int | None = None,
                      token_ttl_s: int | None = None) -> tuple[Tenant, str]:
        token = new_token()
        with self.db.transaction() as s:
            tunnel_key = give_tunnel_key(s, f"tenant:{name}", tunnel_key)
            now = time.time()
            t = self._add(s, Tenant(name=name, token_hash=hash_token(token), tunnel_key=tunnel_key, created_at=now,
                                    token_expires_at=now + token_ttl_s if token_ttl_s else None))
        return t, token

    def rotate_token(self, name: str, token_ttl_s: int | None = None) -> str:
        """A new token; the old one stops working at once."""
        token = new_token()
        with self.db.transaction() as s:
            t = self._by_name(s, Tenant, name)
            t.token_hash = hash_token(token)
            t.token_expires_at = time.time() + token_ttl_s if token_ttl_s else None
        return token

    def tenant_by_token(self, token: str) -> Tenant | None:
        """The token's tenant, while the token is valid."""
        with self.db.reading() as s:
            t = s.scalar(select(Tenant).where(Tenant.token_hash == hash_token(token)))
            if t is not None and t.token_expires_at is not None and t.token_expires_at <= time.time():
                return None
            return t

    # -- sites
    def create_site(self, *, tenant_id: int | None, name: str, gateway_underlay: str | None = None,
                    vlans: str | None = None, mgmt_vlan: int | None = None,
                    service_model: ServiceModel | None = None) -> Site:
        if tenant_id is not None and vlans:
            ranges = parse_vlans(vlans)
            if mgmt_vlan is not None and not any(a <= mgmt_vlan <= b for a, b in ranges):
                raise InvalidInput(f"management VLAN {mgmt_vlan} is not in the site's VLANs {vlans}",
                                   field="mgmt_vlan")
        kind = "haas" if tenant_id is None else "iaas"
        with self.db.transaction() as s:
            return self._add(s, Site(name=name, kind=kind, tenant_id=tenant_id, gateway_underlay=gateway_underlay,
                                     vlans=vlans, mgmt_vlan=mgmt_vlan, service_model=service_model))

    # -- HaaS resources
    def create(self, kind: str, fields: dict[str, Any]) -> Base:
        model = KINDS[kind]
        with self.db.transaction() as s:
            fields = dict(fields)
            for key in ("site", "site_a", "site_b"):
                if key in fields:
                    fields[f"{key}_id"] = self._site_id(s, fields.pop(key), key)
            if kind == "link" and fields["site_a_id"] == fields["site_b_id"]:
                raise InvalidInput("a link joins two different sites", field="site_b")
            if kind == "image":
                fields["created_at"] = time.time()
            return self._add(s, model(**fields))

    def list(self, kind: str, tenant_id: int | None = None) -> list[Any]:
        model: Any = KINDS[kind]
        with self.db.transaction() as s:
            q = select(model).order_by(model.id)
            if tenant_id is not None:
                q = q.where(model.tenant_id == tenant_id)
            return list(s.scalars(q))

    def get(self, kind: str, name: str, tenant_id: int | None = None) -> Base:
        with self.db.transaction() as s:
            return self._by_name(s, KINDS[kind], name, tenant_id)

    def delete(self, kind: str, name: str, tenant_id: int | None = None) -> None:
        model = KINDS[kind]
        with self.db.transaction() as s:
            obj = self._by_name(s, model, name, tenant_id)
            users = self._users(s, kind, obj)
            if users:
                raise InUse(f"{kind.replace('_', ' ')} {name} is used by {users}; release those first")
            s.delete(obj)
            bump_inventory(s)

    def _users(self, s: Session, kind: str, obj) -> str:
        resource_kind = {"node": "node", "link": "link", "storage_pool": "pool"}.get(kind)
        if resource_kind:
            n = s.scalar(select(Allocation.reservation_id).where(
                Allocation.resource_kind == resource_kind, Allocation.resource_id == obj.id).limit(1))
            return f"reservation {n}" if n else ""
        if kind == "image":
            return self._image_users(s, obj.name)
        if kind == "tenant":
            live = s.scalar(select(Reservation.id).where(
                Reservation.tenant_id == obj.id, Reservation.lifecycle_state != LifecycleState.TERMINATED).limit(1))
            sites = s.scalar(select(Site.name).where(Site.tenant_id == obj.id).limit(1))
            return (f"reservation {live}" if live else "") or (f"site {sites}" if sites else "")
        if kind == "site":
            for model in (Node, Gateway, StoragePool):
                name = s.scalar(select(model.name).where(model.site_id == obj.id).limit(1))
                if name:
                    return f"{model.__tablename__.rstrip('s')} {name}"
            link = s.scalar(select(Link.name).where(or_(Link.site_a_id == obj.id, Link.site_b_id == obj.id)).limit(1))
            if link:
                return f"link {link}"
            live = s.scalar(select(Reservation.id).where(
                Reservation.site_id == obj.id, Reservation.lifecycle_state != LifecycleState.TERMINATED).limit(1))
            return f"reservation {live}" if live else ""
        return ""

    def _image_users(self, s: Session, name: str) -> str:
        """A reservation not yet terminated whose compute item names the image."""
        rows = s.execute(select(Reservation.id, Criteria.items).join(Criteria, Criteria.reservation_id == Reservation.id)
                         .where(Reservation.lifecycle_state != LifecycleState.TERMINATED)).all()
        for rid, items in rows:
            if any(i.get("kind") == "compute" and i.get("image") == name for i in items or []):
                return f"reservation {rid}"
        return ""

