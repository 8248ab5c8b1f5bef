"""SQLAlchemy 2 models. Times are POSIX seconds (float, UTC) so calendar arithmetic is exact
and identical on SQLite and PostgreSQL; the API converts them to ISO 8601."""

from __future__ import annotations

import secrets

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from iris_haas.contract.errors import AlreadyExists


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Counters. ``inventory``: bumped by every inventory change, so a coordinator may keep the
    node table in memory and reload it only when another process (or itself) changed it."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


def bump_inventory(session) -> None:
    session.execute(update(Meta).where(Meta.key == "inventory").values(value=Meta.value + 1))


DATA_PLANE_KEY = "dp:"  # + a tenant's id: the Meta row counting changes to its data plane


def bump_data_plane(session, tenant_ids) -> None:
    """Count a change to these tenants' data plane (a reservation of theirs activated, changed or
    ended), in the transaction that makes it: a coordinator keeps each tenant's planned part of
    the hosts' desired state until its count moves, whichever process moved it. The row is made
    by the first change. Sorted, so two transactions take the rows' locks in one order."""
    upsert = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(Meta)
    for tid in sorted(set(tenant_ids)):
        session.execute(upsert.values(key=f"{DATA_PLANE_KEY}{tid}", value=1).on_conflict_do_update(
            index_elements=[Meta.key], set_={"value": Meta.value + 1}))


def next_number(session, key: str, count: int = 1) -> int:
    """The next number of a sequence (``l1``, ``volume``, ``segment``), or the first of the next
    ``count``: given once, never again, so the names built from them (``contract.names``) cannot
    collide."""
    return session.execute(update(Meta).where(Meta.key == key).values(value=Meta.value + count)
                           .returning(Meta.value)).scalar_one() - count + 1


def give_tunnel_key(session, owner: str, key: int | None = None) -> int:
    """A GRE key never given before: ``key`` if it is free, else a random one (32 bits, not 0),
    so a tenant cannot guess another's key from its own."""
    if key is not None:
        if session.get(TunnelKey, key) is not None:
            raise AlreadyExists(f"tunnel key {key} was given before", field="tunnel_key")
    else:
        key = secrets.randbelow(2**32 - 1) + 1
        while session.get(TunnelKey, key) is not None:
            key = secrets.randbelow(2**32 - 1) + 1
    session.add(TunnelKey(key=key, owner=owner))
    session.flush()
    return key


class TunnelKey(Base):
    """Every GRE key ever given, to a tenant's segment or to a pod's: a key is never given twice,
    so no host can still hold a key that now means another tenant."""

    __tablename__ = "tunnel_keys"
    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(64))  # tenant:<id> or segment:<no>


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The GRE key of the tenant's overlay and inter-DC trunk; the tenant's IaaS gateway uses it too.
    tunnel_key: Mapped[int] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    token_expires_at: Mapped[float | None] = mapped_column(Float, default=None)  # None: until rotated


class Site(Base):
    """A data center: the HaaS provider's (kind ``haas``) or a tenant's IaaS site (kind ``iaas``)."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    gateway_underlay: Mapped[str | None] = mapped_column(String(64))
    vlans: Mapped[str | None] = mapped_column(String(256))
    mgmt_vlan: Mapped[int | None] = mapped_column(Integer)
    service_model: Mapped[str | None] = mapped_column(String(1))


class Node(Base):
    """An L0: a physical machine in the HaaS data center."""

    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    # ",lxc,kvm," rather than JSON: admission filters on it in SQL over every node, with no
    # per-row decoding (see ``supports``).
    l1_kinds_text: Mapped[str] = mapped_column("l1_kinds", String(64))
    underlay_address: Mapped[str | None] = mapped_column(String(64), doc="tunnel endpoint on the HaaS data fabric")
    agent_url: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), default="available")

    @property
    def l1_kinds(self) -> list[str]:
        return [k for k in self.l1_kinds_text.split(",") if k]

    @l1_kinds.setter
    def l1_kinds(self, kinds: list[str]) -> None:
        self.l1_kinds_text = "," + ",".join(kinds) + ","

    @classmethod
    def supports(cls, l1_kind: str):
        return cls.l1_kinds_text.contains(f",{l1_kind},", autoescape=True)


class Gateway(Base):
    __tablename__ = "gateways"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    underlay_address: Mapped[str] = mapped_column(String(64), doc="public address: the inter-DC tunnels end here")
    fabric_address: Mapped[str | None] = mapped_column(String(64), doc="address on the HaaS data fabric (mesh)")
    uplink: Mapped[str] = mapped_column(String(15), default="eth0", doc="interface towards the internet")
    agent_url: Mapped[str | None] = mapped_column(String(256))


class Link(Base):
    """An inter-DC link between two sites, with a capacity that reservations share. ``static``:
    bandwidth Iris only books; ``nsi``: a circuit an OGF NSI CS 2.0 provider reserves for each
    reservation, between two STPs of its network (Iris is the requester)."""

    __tablename__ = "links"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_a_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    site_b_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    capacity_mbps: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8), default="static", server_default="static")
    nsi_provider: Mapped[str | None] = mapped_column(String(512), default=None, doc="the provider's SOAP endpoint")
    nsi_provider_nsa: Mapped[str | None] = mapped_column(String(256), default=None)
    source_stp: Mapped[str | None] = mapped_column(String(256), default=None)
    dest_stp: Mapped[str | None] = mapped_column(String(256), default=None)
    service_type: Mapped[str | None] = mapped_column(String(256), default=None)


class StoragePool(Base):
    __tablename__ = "storage_pools"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    capacity_gb: Mapped[int] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(64), doc="the node whose agent serves the pool")
    path: Mapped[str | None] = mapped_column(String(256), doc="the pool's directory on that host")


class Reservation(Base):
    """An NSI connection: three state machines and a versioned set of criteria."""

    __tablename__ = "reservations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    description: Mapped[str] = mapped_column(String(256), default="")
    # a: L1s in the tenant's own L2; b: a pod, an L2 segment of the reservation's own; c: routed
    service_model: Mapped[str] = mapped_column(String(1), default="a")
    # model c: {"subnet": the L1s' own subnet, "iaas_address": the router's address on the tenant's L2}
    routing: Mapped[dict | None] = mapped_column(JSON, default=None)
    version: Mapped[int] = mapped_column(Integer)
    committed_version: Mapped[int] = mapped_column(Integer, default=0)
    reservation_state: Mapped[str] = mapped_column(String(24), index=True)
    provision_state: Mapped[str] = mapped_column(String(24), index=True)
    lifecycle_state: Mapped[str] = mapped_column(String(24), index=True)
    data_plane_active: Mapped[bool] = mapped_column(Boolean, default=False)
    # models b and c: the reservation's own segment (its number names it, see contract.names)
    segment_no: Mapped[int | None] = mapped_column(Integer, unique=True)
    segment_key: Mapped[int | None] = mapped_column(BigInteger)
    hold_expires_at: Mapped[float | None] = mapped_column(Float)
    # the committed version's end (None before the first commit): the scheduler finds what has
    # ended, and what ends soon, from the index (lifecycle_state, committed_end) alone
    committed_end: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)

    criteria: Mapped[list[Criteria]] = relationship(
        back_populates="reservation", cascade="all, delete-orphan", order_by="Criteria.version"
    )

    __table_args__ = (Index("ix_reservations_due", "lifecycle_state", "committed_end"),)

    def criteria_at(self, version: int) -> Criteria:
        """The criteria of a version that exists (raises LookupError otherwise)."""
        c = self.criteria_for(version)
        if c is None:
            raise LookupError(f"reservation {self.id} has no version {version}")
        return c

    def criteria_for(self, version: int) -> Criteria | None:
        return next((c for c in self.criteria if c.version == version), None)


class Criteria(Base):
    """One version of a reservation's request: schedule and items."""

    __tablename__ = "criteria"
    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    items: Mapped[list] = mapped_column(JSON)
    reservation: Mapped[Reservation] = relationship(back_populates="criteria")


# what admission reads of each allocation (``calendar.overlapping``), after the columns it selects on
AMOUNTS = ("resource_id", "cpus", "memory_mb", "disk_gb", "mbps", "gb")


class Allocation(Base):
    """A concrete resource held or committed by one child of a reservation over [start, end).

    The calendar is this table: admission sums the allocations that overlap an interval.
    ``duration_s`` bounds the overlap scan: an allocation that overlaps [s, e) starts after
    s - max(duration_s), so an index range on ``start`` finds all of them.
    """

    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(primary_key=True)
    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"))
    version: Mapped[int] = mapped_column(Integer)
    item: Mapped[int] = mapped_column(Integer)
    resource_kind: Mapped[str] = mapped_column(String(8))
    resource_id: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    mbps: Mapped[int] = mapped_column(Integer, default=0)
    gb: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12))  # held | committed | draining
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    # draining: the reservation ended, but its host may still hold the L1 or volume; the capacity
    # stays taken until the host acknowledges this generation of its desired state (the first
    # one without it), then the row goes
    drain_generation: Mapped[int | None] = mapped_column(Integer, default=None)

    __table_args__ = (
        # Admission's two queries (``calendar.overlapping``: the interval's allocations, the draining
        # ones) read every column they need from an index alone: at a million allocations, five
        # times faster than a row lookup per hit. Both covering, so SQLite's planner, without
        # statistics, takes each for its own query.
        Index("ix_alloc_calendar", "resource_kind", "start", "end", "status", "reservation_id", *AMOUNTS),
        Index("ix_alloc_kind_duration", "resource_kind", "duration_s"),
        Index("ix_alloc_resource", "resource_kind", "resource_id", "start"),
        # Lookups by reservation always name the kind and usually the status; with all three as
        # equality columns, SQLite's planner prefers this index even without ANALYZE statistics.
        Index("ix_alloc_reservation", "reservation_id", "resource_kind", "status"),
        Index("ix_alloc_status", "resource_kind", "status", *AMOUNTS),
    )


class Image(Base):
    """An OS image the HaaS admin registered for one kind of L1: where it is on every L0 (``path``:
    an lxc rootfs directory, a kvm disk image) and its content digest (``iris image build``'s)."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    l1_kind: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(4096))
    digest: Mapped[str | None] = mapped_column(String(64), default=None)
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[float] = mapped_column(Float, default=0.0)


class HostSync(Base):
    """One host's desired state as a generation that only grows, and what the host acknowledged."""

    __tablename__ = "host_sync"
    host: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str] = mapped_column(String(64))  # of the op list at ``generation``
    acked: Mapped[int] = mapped_column(Integer, default=0)  # the newest generation the host confirmed
    in_sync: Mapped[bool] = mapped_column(Boolean, default=False)  # its agent found the host matching it
    last_seen: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(String(1024))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try: Mapped[float] = mapped_column(Float, default=0.0)


class Event(Base):
    """One transition or notice of a reservation.

    ``seq`` is the event feed's cursor: numbered when its transaction commits, under a lock held
    only for that (``store.db``), so seq order is commit order on PostgreSQL too. An id is taken
    when the row is inserted, so a transaction that started later could commit a smaller id after
    a reader has passed it; a seq never appears below one already seen."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    type: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    seq: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (Index("ix_events_seq", "seq", unique=True),)


WEBHOOK_URL_MAX = 512  # the column's length; contract.types.WebhookUrl says the same


class Webhook(Base):
    """Where a tenant wants its events POSTed. ``cursor`` is the seq of the last event delivered
    (or, at creation, of the last event before it): delivery resumes after it whatever stopped
    it (a restart, the receiver down), so an event is lost to no one and sent again only when its
    delivery's answer was lost."""

    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(WEBHOOK_URL_MAX))
    secret: Mapped[str] = mapped_column(String(64))  # the HMAC key: it must sign, so it is kept as is
    created_at: Mapped[float] = mapped_column(Float)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failures in a row
    next_try: Mapped[float] = mapped_column(Float, default=0.0)
    last_error: Mapped[str | None] = mapped_column(String(256), default=None)
    delivered_at: Mapped[float | None] = mapped_column(Float, default=None)


__all__ = [
    "Allocation", "Base", "Criteria", "DATA_PLANE_KEY", "Event", "HostSync", "Meta", "bump_data_plane", "bump_inventory", "Gateway", "Image", "Link", "Node",
    "TunnelKey", "give_tunnel_key", "next_number",
    "Reservation", "Site", "StoragePool", "Tenant", "Webhook",
]
