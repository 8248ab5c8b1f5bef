from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from iris_haas.api import schemas
from iris_haas.api.deps import AdminDep, CoordinatorDep, MetricsDep, PrincipalDep, TenantDep
from iris_haas.contract.types import MAX_GB, MAX_MBPS, Cpus, DiskGb, DurationS, L1Kind, MemoryMb, Name
from iris_haas.control.schemas import ModifyRequest, ReserveRequest, from_epoch, to_epoch
from iris_haas.managers.base import segment_of
from iris_haas.store.models import Reservation, Tenant

reservations = APIRouter(prefix="/reservations", tags=["reservations"])
availability = APIRouter(prefix="/availability", tags=["availability"])


def public(res: Reservation, tenant: Tenant, resources: list[dict] | None = None) -> schemas.ReservationPublic:
    crit = res.criteria_for(res.version) or res.criteria_for(res.committed_version)
    seg = segment_of(res, tenant)
    return schemas.ReservationPublic(
        id=res.id, tenant_id=res.tenant_id, description=res.description, service_model=res.service_model,
        segment={"bridge": seg.bridge, "key": seg.key}, version=res.version,
        committed_version=res.committed_version, reservation_state=res.reservation_state,
        provision_state=res.provision_state, lifecycle_state=res.lifecycle_state,
        data_plane_active=res.data_plane_active,
        start=from_epoch(crit.start) if crit else None, end=from_epoch(crit.end) if crit else None,
        hold_expires_at=from_epoch(res.hold_expires_at) if res.hold_expires_at else None,
        items=crit.items if crit else [], resources=resources or [],
    )


@reservations.post("", response_model=schemas.ReservationPublic, status_code=status.HTTP_201_CREATED,
                   responses={409: {"model": schemas.ErrorBody, "description": "ReserveFailed: does not fit"}},
                   summary="Reserve (NSI reserve): hold resources until commit, abort or the hold timeout")
def reserve(body: ReserveRequest, coord: CoordinatorDep, who: TenantDep, metrics: MetricsDep):
    with metrics.admission("reserve"):
        res = coord.reserve(who.tenant_id, body)
    return public(*coord.get(who.tenant_id, res.id))


@reservations.get("", response_model=list[schemas.ReservationPublic])
def list_reservations(coord: CoordinatorDep, who: PrincipalDep):
    return [public(r, t) for r, t in coord.list(who.scope)]


@reservations.get("/{rid}", response_model=schemas.ReservationPublic)
def show(rid: str, coord: CoordinatorDep, who: PrincipalDep):
    return public(*coord.get(who.scope, rid))


@reservations.post("/{rid}/modify", response_model=schemas.ReservationPublic,
                   summary="Modify (NSI reserve with a higher version): extend the end, change count or bandwidth")
def modify(rid: str, body: ModifyRequest, coord: CoordinatorDep, who: PrincipalDep, metrics: MetricsDep):
    with metrics.admission("modify"):
        coord.modify(who.scope, rid, body)
    return public(*coord.get(who.scope, rid))


def _message(name: str, doc: str):
    def handler(rid: str, coord: CoordinatorDep, who: PrincipalDep):
        getattr(coord, name)(who.scope, rid)
        return public(*coord.get(who.scope, rid))

    handler.__name__ = name
    reservations.post(f"/{{rid}}/{name}", response_model=schemas.ReservationPublic, summary=doc,
                      responses={409: {"model": schemas.ErrorBody, "description": "illegal in the current state"}})(handler)


_message("commit", "Commit the held version (NSI reserveCommit)")
_message("abort", "Abort the held version (NSI reserveAbort)")
_message("provision", "Provision: the data plane is active while Provisioned and start <= now < end")
_message("release", "Release the data plane; the reservation stays")
_message("terminate", "Terminate: release everything and end the reservation")


@reservations.post("/{rid}/force-end", response_model=schemas.ReservationPublic,
                   summary="Admin: end a reservation abnormally (lifecycle Failed)")
def force_end(rid: str, coord: CoordinatorDep, _: AdminDep,
              reason: Annotated[str, Query(max_length=256)] = "ended by the HaaS operator"):
    coord.force_end(rid, reason)
    return public(*coord.get(None, rid))


@reservations.get("/{rid}/events", response_model=list[schemas.EventPublic])
def events(rid: str, coord: CoordinatorDep, who: PrincipalDep):
    return [schemas.EventPublic(id=e.id, at=from_epoch(e.at), type=e.type, detail=e.detail)
            for e in coord.events(who.scope, rid)]


@availability.get("", response_model=schemas.Availability,
                  summary="When, and how much: the earliest window where the request fits")
def get_availability(
    coord: CoordinatorDep,
    who: PrincipalDep,
    duration_s: Annotated[DurationS, Query()],
    count: Annotated[int, Query(ge=1, le=1000)] = 1,
    l1_kind: L1Kind = L1Kind.LXC,
    cpus: Annotated[Cpus, Query()] = 1,
    memory_mb: Annotated[MemoryMb, Query()] = 1024,
    disk_gb: Annotated[DiskGb, Query()] = 10,
    bandwidth_mbps: Annotated[int, Query(ge=0, le=MAX_MBPS)] = 0,
    tenant_site: Annotated[Name | None, Query()] = None,
    size_gb: Annotated[int, Query(ge=0, le=MAX_GB)] = 0,
    site: Annotated[Name | None, Query()] = None,
    not_before: datetime | None = None,
):
    a = coord.availability(
        tenant_id=who.scope, site=site, count=count, l1_kind=l1_kind, cpus=cpus, memory_mb=memory_mb,
        disk_gb=disk_gb, duration_s=duration_s, bandwidth_mbps=bandwidth_mbps, tenant_site=tenant_site,
        size_gb=size_gb, not_before=to_epoch(not_before) if not_before else None,
    )
    return schemas.Availability(**{**a, "start": from_epoch(a["start"]), "end": from_epoch(a["end"])})
