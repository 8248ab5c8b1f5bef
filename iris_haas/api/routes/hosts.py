"""The hosts as the coordinator sees them: which generation of desired state each holds."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from iris_haas.api.deps import AdminDep, CoordinatorDep

hosts = APIRouter(prefix="/hosts", tags=["agents"])


class HostPublic(BaseModel):
    host: str
    generation: int  # of its desired state; only grows
    acked: int  # the newest generation the host confirmed holding
    in_sync: bool  # its agent found the host matching it
    last_seen: float | None
    error: str | None  # the last push failure, verbatim (admins only: it may name any tenant's objects)
    attempts: int


@hosts.get("", response_model=list[HostPublic], summary="Each host's generations, in-sync flag and last contact")
def list_hosts(coord: CoordinatorDep, _: AdminDep):
    coord.sync.refresh()  # the generations the database wants now, not as of the last change
    return [HostPublic(host=r.host, generation=r.generation, acked=r.acked, in_sync=r.in_sync,
                       last_seen=r.last_seen, error=r.error, attempts=r.attempts) for r in coord.sync.hosts()]
