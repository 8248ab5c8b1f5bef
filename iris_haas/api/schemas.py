"""API schemas: a Create and a Public model per entity (FastAPI full-stack template habit)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iris_haas.contract.types import (
    HORIZON_S,
    AgentUrl,
    HostPath,
    IpAddr,
    L1Kind,
    Name,
    NodeState,
    NsaId,
    NsiProviderUrl,
    ServiceModel,
    StpId,
    WebhookUrl,
    stp_vlans,
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantCreate(_In):
    name: Name
    tunnel_key: int | None = Field(default=None, ge=1, le=2**32 - 1,
                                   description="GRE key of the tenant's overlay and trunk; default: assigned")
    token_ttl_s: int | None = Field(default=None, ge=60, le=HORIZON_S,
                                    description="the token expires after this many seconds; default: never")


class TenantPublic(_Out):
    id: int
    name: str
    tunnel_key: int


class TenantCreated(TenantPublic):
    token: str = Field(description="shown once; Iris keeps only its hash")
    token_expires_at: datetime | None = None


class SiteCreate(_In):
    """The admin registers a HaaS site (its name only); a tenant registers its own IaaS data center,
    which needs its gateway's address."""

    name: Name
    gateway_underlay: IpAddr | None = Field(default=None, description="IaaS site: public (underlay) address of "
                                            "the tenant's gateway")
    vlans: str = Field(default="1-4094", max_length=256, pattern=r"^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$",
                       description="IaaS site: VLAN IDs the IaaS uses, e.g. "
                       "101-102,200-299")
    mgmt_vlan: int = Field(default=101, ge=1, le=4094, description="IaaS site: the management VLAN, native on "
                           "each L1's NIC")
    service_model: ServiceModel = Field(default=ServiceModel.NODE, description="IaaS site: how its L1s join it")

    IAAS_ONLY: ClassVar[tuple[str, ...]] = ("gateway_underlay", "vlans", "mgmt_vlan", "service_model")


class SitePublic(_Out):
    id: int
    name: str
    kind: str
    gateway_underlay: str | None = None
    vlans: str | None = None
    mgmt_vlan: int | None = None
    service_model: str | None = None


class NodeCreate(_In):
    name: Name
    site: Name
    cpus: int = Field(ge=1, le=4096)
    memory_mb: int = Field(ge=64, le=64 * 1024 * 1024)
    disk_gb: int = Field(ge=0, le=1024 * 1024)
    l1_kinds: list[L1Kind] = Field(default_factory=lambda: [L1Kind.LXC, L1Kind.KVM, L1Kind.NETNS], min_length=1)
    underlay_address: IpAddr | None = Field(default=None, description="tunnel endpoint on the HaaS data fabric")
    agent_url: AgentUrl | None = None
    state: NodeState = NodeState.AVAILABLE


class NodeUpdate(_In):
    state: NodeState


class NodePublic(_Out):
    id: int
    name: str
    site_id: int
    cpus: int
    memory_mb: int
    disk_gb: int
    l1_kinds: list[str]
    underlay_address: str | None
    agent_url: str | None
    state: str


class GatewayCreate(_In):
    name: Name
    site: Name
    underlay_address: IpAddr = Field(description="public address: the inter-DC tunnels end here")
    fabric_address: IpAddr | None = Field(default=None, description="address on the HaaS data fabric, for the mesh")
    uplink: str = Field(default="eth0", min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.-]+$",
                        description="interface towards the internet (per-tenant limits apply here)")
    agent_url: AgentUrl | None = None


class GatewayPublic(_Out):
    id: int
    name: str
    site_id: int
    underlay_address: str
    fabric_address: str | None
    uplink: str
    agent_url: str | None


NSI_EVTS = "http://services.ogf.org/nsi/2013/12/descriptions/EVTS.A-GOLE"  # NSI's Ethernet VLAN transfer service


class LinkCreate(_In):
    name: Name
    site_a: Name
    site_b: Name
    capacity_mbps: int = Field(ge=1, le=10_000_000)
    kind: Literal["static", "nsi"] = Field(default="static", description="static: bandwidth Iris books on a link "
                                           "it owns; nsi: a circuit an NSI CS 2.0 provider reserves per reservation")
    nsi_provider: NsiProviderUrl | None = Field(default=None, description="nsi: the provider's SOAP endpoint")
    nsi_provider_nsa: NsaId | None = Field(default=None, description="nsi: the provider's NSA id")
    source_stp: StpId | None = Field(default=None, description="nsi: the STP at site_a, with its VLANs as a label")
    dest_stp: StpId | None = Field(default=None, description="nsi: the STP at site_b, with its VLANs as a label")
    service_type: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^\S+$",
                                     description=f"nsi: the provider's service type; default {NSI_EVTS}")

    NSI_FIELDS: ClassVar = ("nsi_provider", "nsi_provider_nsa", "source_stp", "dest_stp")

    @model_validator(mode="after")
    def _nsi_fields(self) -> LinkCreate:
        for f in self.NSI_FIELDS:
            if self.kind == "nsi" and getattr(self, f) is None:
                raise ValueError(f"{f}: an nsi link needs it")
            if self.kind == "static" and getattr(self, f) is not None:
                raise ValueError(f"{f}: only an nsi link takes it")
        for f in ("source_stp", "dest_stp"):
            vlans = stp_vlans(getattr(self, f) or "")
            if vlans and vlans[0] > vlans[1]:
                raise ValueError(f"{f}: the VLAN range must give its low end first")
        if self.kind == "nsi" and self.service_type is None:
            self.service_type = NSI_EVTS
        return self


class LinkPublic(_Out):
    id: int
    name: str
    site_a_id: int
    site_b_id: int
    capacity_mbps: int
    kind: str
    nsi_provider: str | None
    nsi_provider_nsa: str | None
    source_stp: str | None
    dest_stp: str | None
    service_type: str | None


class StoragePoolCreate(_In):
    name: Name
    site: Name
    capacity_gb: int = Field(ge=1, le=1024 * 1024 * 1024)
    host: Name | None = Field(default=None, description="the L0 whose agent serves the pool")
    path: HostPath | None = Field(default=None, description="its directory there")


class StoragePoolPublic(_Out):
    id: int
    name: str
    site_id: int
    capacity_gb: int
    host: str | None
    path: str | None


class ImageCreate(_In):
    """An OS image for one kind of L1, already on every L0 of the site at ``path`` (``iris image
    build`` makes one and prints its path and digest)."""

    name: Name
    l1_kind: L1Kind = Field(description="lxc: path is a rootfs directory; kvm: a disk image")
    path: HostPath = Field(description="where the image is on each L0 (under the agents' image roots)")
    digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of its build inputs")
    description: str = Field(default="", max_length=256)


class ImagePublic(_Out):
    id: int
    name: str
    l1_kind: str
    path: str
    digest: str | None
    description: str


class ReservationPublic(BaseModel):
    id: str
    tenant_id: int
    description: str
    service_model: str
    segment: dict = Field(description="the L2 segment: its bridge and GRE key (model b: configure the pod's "
                          "tunnel on the IaaS gateway with this key)")
    version: int
    committed_version: int
    reservation_state: str
    provision_state: str
    lifecycle_state: str
    data_plane_active: bool
    start: datetime | None
    end: datetime | None
    hold_expires_at: datetime | None
    items: list[dict]
    resources: list[dict] = Field(default_factory=list)


class EventPublic(BaseModel):
    id: int
    at: datetime
    type: str
    detail: dict


class FeedEvent(EventPublic):
    cursor: int = Field(description="opaque and stable: give it as `after` (or Last-Event-ID) to resume after "
                        "this event")
    reservation_id: str


class EventPage(BaseModel):
    events: list[FeedEvent]
    next: int = Field(description="the cursor to resume from: the last event's, or `after` when none came")


class WebhookCreate(_In):
    url: WebhookUrl = Field(description="where each event is POSTed as JSON, signed in X-Iris-Signature")


class WebhookPublic(BaseModel):
    id: int
    url: str
    created_at: datetime
    cursor: int = Field(description="the last event its receiver took")
    attempts: int = Field(description="deliveries failed in a row (each waits twice as long as the one before)")
    next_try: datetime | None = Field(description="after a failure: when delivery is tried again")
    last_error: str | None
    delivered_at: datetime | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="shown once: the HMAC-SHA256 key of X-Iris-Signature (sha256=<hex>)")


class Availability(BaseModel):
    start: datetime
    end: datetime
    count_fit: int = Field(description="how many L1s of the flavor fit in that window")
    bandwidth_free_mbps: int | None
    storage_free_gb: int | None


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the field; empty: the body as a whole")
    message: str


class ErrorBody(BaseModel):
    """Every error: its type (NotFound, InvalidInput, IllegalTransition, ...) and a message; some
    name the field at fault or carry details of their own (an illegal transition's state)."""

    model_config = ConfigDict(extra="allow")

    type: str
    message: str
    field: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="InvalidInput: each field at fault")
