"""Authorization matrix: every endpoint without a token, every tenant endpoint with another tenant's
token, every admin endpoint with a tenant's token. Routes are read from the app, so a new endpoint
is covered the day it is added."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Api, standard_inventory

PUBLIC = {"/v1/health"}
ADMIN_ONLY = re.compile(r"^/v1/(nodes|gateways|links|storage-pools|tenants|hosts)|/force-end$")


@pytest.fixture
def world(coordinator):
    api = Api(coordinator)
    standard_inventory(api)
    r = api.ok("POST", "/reservations", "alice", json={"duration_s": 3600, "items": [
        {"kind": "compute", "count": 1}, {"kind": "network", "bandwidth_mbps": 10}]})
    return api, r["id"]


def routes(api):
    for path, methods in api.app.openapi()["paths"].items():
        if path not in PUBLIC:
            for method in methods:
                yield method.upper(), path


def fill(path: str, rid: str) -> str:
    return (path.replace("{rid}", rid).replace("{name}", "iaas-alice" if "/sites" in path else "l0-0")
            .replace("{host}", "l0-0"))


def test_every_endpoint_needs_a_token(world):
    api, rid = world
    seen = 0
    for method, path in routes(api):
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            r = api.client.request(method, fill(path, rid), headers=headers, json={})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.json()["type"] == "Unauthorized"
        seen += 1
    assert seen >= 25


def test_admin_endpoints_refuse_tenants(world):
    api, rid = world
    admin_routes = [(m, p) for m, p in routes(api) if ADMIN_ONLY.search(p)]
    assert len(admin_routes) >= 15
    for method, path in admin_routes:
        r = api.client.request(method, fill(path, rid), headers=api.tenants["alice"], json={})
        assert r.status_code == 403, (method, path, r.status_code, r.text)


def test_another_tenants_reservation_is_404_and_untouched(world):
    api, rid = world
    before = api.ok("GET", f"/reservations/{rid}", "alice")
    tenant_routes = [(m, p) for m, p in routes(api) if "{rid}" in p and not ADMIN_ONLY.search(p)]
    assert {p.rsplit("/", 1)[-1] for _, p in tenant_routes} >= {
        "{rid}", "commit", "abort", "provision", "release", "terminate", "modify", "events"}
    for method, path in tenant_routes:
        body = {"version": 2, "count": 2} if path.endswith("modify") else None
        r = api.client.request(method, fill(path, rid), headers=api.tenants["bob"], json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["type"] == "NotFound"
    assert api.ok("GET", f"/reservations/{rid}", "alice") == before
    assert [e for e in api.ok("GET", f"/reservations/{rid}/events", "alice")] == \
        api.ok("GET", f"/reservations/{rid}/events", "admin")


def test_lists_show_only_ones_own(world):
    api, rid = world
    assert [r["id"] for r in api.ok("GET", "/reservations", "alice")] == [rid]
    assert api.ok("GET", "/reservations", "bob") == []
    assert {s["name"] for s in api.ok("GET", "/sites", "bob")} == {"iaas-bob"}
    assert api.call("GET", "/sites/iaas-alice", "bob").status_code == 404
    assert api.call("DELETE", "/sites/iaas-alice", "bob").status_code == 404
    assert api.call("DELETE", "/sites/haas", "bob").status_code == 404
    assert len(api.ok("GET", "/reservations", "admin")) == 1


def test_admin_sees_and_acts_on_all(world):
    api, rid = world
    assert api.ok("POST", f"/reservations/{rid}/commit", "admin")["reservation_state"] == "ReserveStart"
    # but reserving is a tenant's act
    r = api.call("POST", "/reservations", "admin", json={"duration_s": 60, "items": [{"kind": "compute", "count": 1}]})
    assert r.status_code == 403


def test_rotated_token_replaces_the_old(world):
    api, rid = world
    old = api.tenants["alice"]
    new = api.ok("POST", "/tenants/alice/token")["token"]
    assert api.client.get(f"/v1/reservations/{rid}", headers=old).status_code == 401
    assert api.client.get(f"/v1/reservations/{rid}", headers={"Authorization": f"Bearer {new}"}).status_code == 200
