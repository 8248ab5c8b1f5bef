"""The reservation criteria, as data: what a tenant asks for."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iris_haas.contract.types import (
    IPV4,
    MAX_GB,
    Cidr,
    Cpus,
    DiskGb,
    DurationS,
    L1Kind,
    Mbps,
    MemoryMb,
    Name,
    ServiceModel,
    SshKey,
)


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComputeItem(_Item):
    kind: Literal["compute"]
    count: int = Field(ge=1, le=1000)
    l1_kind: L1Kind = L1Kind.LXC
    cpus: Cpus = 1
    memory_mb: MemoryMb = 1024
    disk_gb: DiskGb = 10
    addresses: list[Cidr] = Field(default_factory=list, max_length=1000,
                                  description="management address (CIDR) of each L1, in order; or DHCP from the IaaS")
    ssh_key: SshKey | None = Field(default=None, description="the tenant's public SSH key for its L1s")
    image: Name | None = Field(default=None, description="a registered OS image of the L1 kind (GET /v1/images); "
                               "default: the driver's small built-in one (no SSH server)")

    @model_validator(mode="after")
    def _enough(self):
        if len(self.addresses) > self.count:
            raise ValueError(f"{len(self.addresses)} addresses for {self.count} L1s")
        return self


class NetworkItem(_Item):
    """Bandwidth between the tenant's IaaS site and the HaaS site."""

    kind: Literal["network"]
    bandwidth_mbps: Mbps
    tenant_site: Name | None = Field(default=None, description="the tenant's IaaS site; default: its only one")


class StorageItem(_Item):
    kind: Literal["storage"]
    size_gb: int = Field(ge=1, le=MAX_GB)
    keep: bool = Field(default=False, description="keep the data at release instead of wiping it")
    export_address: Cidr | None = Field(default=None, description="the NFS server's address (CIDR) in the tenant's "
                                        "subnet, on its management/storage VLAN; none: not exported")


Item = Annotated[ComputeItem | NetworkItem | StorageItem, Field(discriminator="kind")]


def to_epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def from_epoch(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


class Routing(BaseModel):
    """Service model (c): the L1s get a subnet of their own; a router on the HaaS side joins it to
    the tenant's management network, where the IaaS routes to it (``subnet`` via ``iaas_address``)."""

    model_config = ConfigDict(extra="forbid")

    subnet: str = Field(pattern=rf"^{IPV4}/([12]?[0-9]|30)$", description="the L1s' IPv4 subnet, e.g. "
                        "10.77.0.0/24 (/30 at most); the router takes its first address")
    iaas_address: Cidr = Field(description="the router's address (CIDR) on the tenant's management network")

    @field_validator("subnet")
    @classmethod
    def _net(cls, v: str) -> str:
        net = ipaddress.IPv4Network(v, strict=False)  # 10.77.0.9/24 is 10.77.0.0/24
        if net.num_addresses < 4:
            raise ValueError("the subnet needs room for a router and L1s")
        return str(net)


class ReserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=256)
    site: Name | None = Field(default=None, description="the HaaS site; default: the only one")
    service_model: ServiceModel | None = Field(
        default=None, description="a: the L1s join the tenant's own L2; b: a pod, an L2 segment of their own "
        "extended as a separate network; c: routed, a subnet of their own behind a router on the HaaS side; "
        "default: the tenant's IaaS site's model")
    routing: Routing | None = Field(default=None, description="model c: the L1s' subnet and the router's address")
    start: datetime | None = Field(default=None, description="no start means now")
    end: datetime | None = None
    duration_s: DurationS | None = None
    items: list[Item] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _schedule(self):
        if (self.service_model == ServiceModel.ROUTED) != (self.routing is not None):
            raise ValueError("service model c needs routing (subnet, iaas_address), and only it takes routing")
        if (self.end is None) == (self.duration_s is None):
            raise ValueError("give exactly one of end and duration_s")
        if self.end is not None and self.start is not None and to_epoch(self.end) <= to_epoch(self.start):
            raise ValueError("end must be after start")
        return self


class ModifyRequest(BaseModel):
    """An NSI modify: a reserve with a higher version on an existing reservation."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=2, description="the new version; must be higher than the current one")
    end: datetime | None = None
    count: int | None = Field(default=None, ge=1, le=1000, description="new count of the compute item")
    bandwidth_mbps: Mbps | None = None
    size_gb: int | None = Field(default=None, ge=1, le=MAX_GB)

    @model_validator(mode="after")
    def _something(self):
        if self.end is None and self.count is None and self.bandwidth_mbps is None and self.size_gb is None:
            raise ValueError("nothing to modify: give end, count, bandwidth_mbps or size_gb")
        return self
