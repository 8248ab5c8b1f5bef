"""Bad input is a 422 naming the field, conflicts are 409s, never a 500, never a half-applied change."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_haas.store.models import Base


@pytest.mark.parametrize("body,field", [
    ({"duration_s": 60, "items": [{"kind": "compute", "count": 0}]}, "items.0.compute.count"),
    ({"duration_s": 60, "items": [{"kind": "gpu", "count": 1}]}, "items.0"),
    ({"duration_s": 60, "items": [{"kind": "compute", "count": 1, "l1_kind": "xen"}]}, "items.0.compute.l1_kind"),
    ({"duration_s": 60, "items": [{"kind": "compute", "count": 1, "colour": "red"}]}, "items.0.compute.colour"),
    ({"duration_s": 60, "items": []}, "items"),
    ({"items": [{"kind": "storage", "size_gb": 1}]}, ""),  # neither end nor duration: the body itself
    ({"start": "2030-01-01T10:00:00Z", "end": "2030-01-01T09:00:00Z",
      "items": [{"kind": "storage", "size_gb": 1}]}, ""),
    ({"start": "yesterday", "duration_s": 60, "items": [{"kind": "storage", "size_gb": 1}]}, "start"),
])
def test_bad_reservation_is_422_with_field(api, body, field):
    r = api.call("POST", "/reservations", "alice", json=body)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["type"] == "InvalidInput" and out["message"]
    # the named field exactly ("" is the body as a whole), and no other
    assert [e["field"] for e in out["errors"]] == [field], out


def test_reservation_in_the_past_is_422(api):
    r = api.call("POST", "/reservations", "alice", json={
        "start": "2001-01-01T00:00:00Z", "end": "2001-01-01T01:00:00Z", "items": [{"kind": "storage", "size_gb": 1}]})
    assert r.status_code == 422 and r.json()["field"] == "end"


def test_no_half_applied_reserve(api):
    # the compute item would fit; the network item names a site the tenant does not have
    r = api.call("POST", "/reservations", "alice", json={"duration_s": 60, "items": [
        {"kind": "compute", "count": 1}, {"kind": "network", "bandwidth_mbps": 10, "tenant_site": "nowhere"}]})
    assert r.status_code == 422 and r.json()["field"] == "tenant_site"
    assert api.ok("GET", "/reservations", "alice") == []


@pytest.mark.parametrize("body,field", [
    ({"name": "x", "gateway_underlay": "not-an-ip"}, "gateway_underlay"),
    ({"name": "x", "gateway_underlay": "198.18.9.1", "vlans": "5000"}, "vlans"),
    ({"name": "x", "gateway_underlay": "198.18.9.1", "vlans": "a-b"}, "vlans"),
    ({"name": "x", "gateway_underlay": "198.18.9.1", "vlans": "200-299", "mgmt_vlan": 101}, "mgmt_vlan"),
    ({"name": "x", "gateway_underlay": "198.18.9.1", "service_model": "d"}, "service_model"),
    ({"name": "bad name!", "gateway_underlay": "198.18.9.1"}, "name"),
    ({"name": "x"}, "gateway_underlay"),
])
def test_bad_site_is_422_with_field(api, body, field):
    r = api.call("POST", "/sites", "alice", json=body)
    assert r.status_code == 422, r.text
    out = r.json()
    fields = [out.get("field", "")] + [e["field"] for e in out.get("errors", [])]
    assert any(field in f for f in fields), out
    assert "x" not in {s["name"] for s in api.ok("GET", "/sites", "alice")}


def test_inventory_errors(api):
    assert api.call("POST", "/nodes", json={"name": "l0-0", "site": "haas", "cpus": 1, "memory_mb": 64,
                                            "disk_gb": 1}).json()["type"] == "AlreadyExists"
    r = api.call("POST", "/nodes", json={"name": "n9", "site": "mars", "cpus": 1, "memory_mb": 64, "disk_gb": 1})
    assert r.status_code == 422 and r.json()["field"] == "site"
    r = api.call("POST", "/links", json={"name": "loop", "site_a": "haas", "site_b": "haas", "capacity_mbps": 1})
    assert r.status_code == 422
    assert api.call("GET", "/nodes/nope").status_code == 404
    assert api.call("PATCH", "/nodes/l0-0", json={"state": "broken"}).status_code == 422
    res = api.ok("POST", "/reservations", "alice", json={"duration_s": 60, "items": [
        {"kind": "compute", "count": 4, "cpus": 8}]})
    r = api.call("DELETE", "/nodes/l0-0")
    assert r.status_code == 409 and r.json()["type"] == "InUse"
    assert api.call("DELETE", "/sites/haas").status_code == 409
    assert api.call("DELETE", "/tenants/alice").status_code == 409
    api.ok("POST", f"/reservations/{res['id']}/terminate", "alice")
    assert api.call("DELETE", "/nodes/l0-0").status_code == 204
    assert api.call("GET", "/nodes/l0-0").status_code == 404


def test_unknown_path_and_method_are_json(api):
    r = api.call("GET", "/nothing-here")
    assert r.status_code == 404 and r.json()["type"] == "NotFound"
    r = api.call("PUT", "/reservations")
    assert r.status_code == 405 and r.json()["type"] == "MethodNotAllowed"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**7) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
item = st.fixed_dictionaries({"kind": st.sampled_from(["compute", "network", "storage", "x"])},
                             optional={"count": json_values, "cpus": json_values, "bandwidth_mbps": json_values,
                                       "size_gb": json_values, "l1_kind": json_values})
bodies = st.fixed_dictionaries({}, optional={
    "items": st.lists(item, max_size=3) | json_values, "duration_s": json_values, "start": json_values,
    "end": json_values, "site": json_values, "description": json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_random_bodies_never_500(api, body):
    r = api.call("POST", "/reservations", "alice", json=body)
    assert r.status_code in (201, 409, 422), (body, r.status_code, r.text)
    assert set(r.json()) >= ({"id"} if r.status_code == 201 else {"type", "message"})


def test_migrations_match_the_models(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


@pytest.mark.parametrize("address", ['fe80::1%"', "fe80::1%eth0", "2001:db8::1", "198.18.1.300", "1.2.3.4\"; rm"])
def test_a_gateway_address_the_data_plane_cannot_carry_is_422_and_nothing_stored(api, address):
    r = api.call("POST", "/sites", "alice", json={"name": "x9", "gateway_underlay": address})
    assert r.status_code == 422 and "gateway_underlay" in r.text, r.text
    assert "x9" not in [s["name"] for s in api.ok("GET", "/sites", "alice")]


@pytest.mark.parametrize("body,field", [
    ({"start": "9999-12-31T00:00:00Z", "duration_s": 3600}, "start"),
    ({"end": "9999-12-31T00:00:00Z"}, "end"),
])
def test_a_reservation_beyond_the_horizon_is_422_and_nothing_stored(api, body, field):
    r = api.call("POST", "/reservations", "alice", json={**body, "items": [{"kind": "storage", "size_gb": 1}]})
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert api.ok("GET", "/reservations", "alice") == []
    assert api.call("GET", "/reservations", "admin").status_code == 200


LONG = "n" * 65  # one more than every name column holds


@pytest.mark.parametrize("item,field", [
    ({"kind": "compute", "count": 1, "cpus": 257}, "items.0.compute.cpus"),  # more than an L1 op can carry
    ({"kind": "compute", "count": 1, "memory_mb": (1 << 20) + 1}, "items.0.compute.memory_mb"),
    ({"kind": "compute", "count": 1, "disk_gb": 2**40}, "items.0.compute.disk_gb"),
    ({"kind": "compute", "count": 1, "ssh_key": "ssh-ed25519 AAAA k\nssh-rsa BBBB evil"}, "items.0.compute.ssh_key"),
    ({"kind": "network", "bandwidth_mbps": 100_001}, "items.0.network.bandwidth_mbps"),
    ({"kind": "network", "bandwidth_mbps": 10, "tenant_site": LONG}, "items.0.network.tenant_site"),
    ({"kind": "storage", "size_gb": 2**31}, "items.0.storage.size_gb"),
])
def test_an_oversized_flavor_is_422_naming_the_field_and_nothing_stored(api, item, field):
    r = api.call("POST", "/reservations", "alice", json={"duration_s": 60, "items": [item]})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field], r.text
    assert api.ok("GET", "/reservations", "alice") == []


@pytest.mark.parametrize("path,who,body,field", [
    ("/tenants", "admin", {"name": LONG}, "name"),
    ("/sites", "alice", {"name": LONG, "gateway_underlay": "198.18.9.1"}, "name"),
    ("/nodes", "admin", {"name": LONG, "site": "haas", "cpus": 1, "memory_mb": 64, "disk_gb": 1}, "name"),
    ("/nodes", "admin", {"name": "n9", "site": LONG, "cpus": 1, "memory_mb": 64, "disk_gb": 1}, "site"),
    ("/nodes", "admin", {"name": "n9", "site": "haas", "cpus": 1, "memory_mb": 64, "disk_gb": 1,
                         "agent_url": "http://198.18.0.9:1/\n"}, "agent_url"),
    ("/storage-pools", "admin", {"name": "p9", "site": "haas", "capacity_gb": 1, "host": "l0-0",
                                 "path": "/srv/iris/../../etc"}, "path"),
    ("/storage-pools", "admin", {"name": "p9", "site": "haas", "capacity_gb": 1, "host": LONG}, "host"),
    ("/links", "admin", {"name": "l9", "site_a": "haas", "site_b": LONG, "capacity_mbps": 1}, "site_b"),
    ("/reservations", "alice", {"duration_s": 60, "site": LONG, "items": [{"kind": "storage", "size_gb": 1}]},
     "site"),
    ("/reservations", "alice", {"duration_s": 60, "description": "d" * 257,
                                "items": [{"kind": "storage", "size_gb": 1}]}, "description"),
])
def test_a_long_or_unsafe_string_is_422_naming_the_field_and_nothing_stored(api, path, who, body, field):
    before = api.ok("GET", path, who)
    r = api.call("POST", path, who, json=body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field], r.text
    assert api.ok("GET", path, who) == before


def test_availability_bounds_match_the_reservation_bounds(api):
    r = api.call("GET", "/availability", "alice", params={"duration_s": 60, "cpus": 257})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.cpus", r.text
    # the largest flavor is a valid question; no node here has 256 cpus, which is a 409, not a 422
    r = api.call("GET", "/availability", "alice", params={"duration_s": 60, "cpus": 256})
    assert r.status_code == 409, r.text
