"""Authorization matrix: every endpoint without a token, every tenant endpoint with another tenant's
token, every admin endpoint with a tenant's token. Routes are read from the app, so a new endpoint
is covered the day it is added."""

from __future__ import annotations

import re

import pytest

from iris_haas.api.deps import AuthThrottle
from tests.conftest import Api, standard_inventory

# the NSI providers' callbacks carry no Iris token: a confirmation is taken only with the
# correlationId of a request Iris waits on, a notification only from its connection's provider
# (tests/unit/test_nsi_requester.py)
PUBLIC = {"/v1/health", "/v1/nsi/requester"}
# a tenant manages its own webhooks under /tenants/{name}/webhooks; the rest of /tenants is the admin's
ADMIN_ONLY = re.compile(r"^/v1/(nodes|gateways|links|storage-pools|tenants(?!/\{name\}/webhooks)|hosts)|/force-end$")


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
    name = "iaas-alice" if "/sites" in path else "alice" if "/webhooks" in path else "l0-0"
    return path.replace("{rid}", rid).replace("{name}", name).replace("{host}", "l0-0").replace("{wid}", "1")


def test_every_endpoint_needs_a_token(world):
    api, rid = world
    api.app.state.auth_throttle = AuthThrottle(limit=1000)  # one bad token per route, not a guesser
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


def test_another_tenants_webhooks_are_404_and_untouched(world):
    api, _ = world
    hook = api.ok("POST", "/tenants/alice/webhooks", "alice", json={"url": "https://example.com/hook"})
    webhook_routes = [(m, p) for m, p in routes(api) if "/webhooks" in p]
    assert len(webhook_routes) == 3
    for method, path in webhook_routes:
        r = api.client.request(method, fill(path, "").replace("/1", f"/{hook['id']}"), headers=api.tenants["bob"],
                               json={"url": "https://example.com/other"})
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert [w["id"] for w in api.ok("GET", "/tenants/alice/webhooks", "alice")] == [hook["id"]]
    assert api.ok("GET", "/tenants/bob/webhooks", "bob") == []


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


def test_a_token_expires_and_a_rotation_gives_a_fresh_one(world, monkeypatch):
    api, rid = world
    import iris_haas.control.inventory as inventory

    out = api.ok("POST", "/tenants/alice/token", params={"ttl_s": 3600})
    assert out["token_expires_at"] is not None
    bearer = {"Authorization": f"Bearer {out['token']}"}
    assert api.client.get(f"/v1/reservations/{rid}", headers=bearer).status_code == 200
    now = inventory.time.time()
    monkeypatch.setattr(inventory.time, "time", lambda: now + 3601)
    r = api.client.get(f"/v1/reservations/{rid}", headers=bearer)
    assert r.status_code == 401 and "expired" in r.json()["message"]
    fresh = api.ok("POST", "/tenants/alice/token")  # no ttl: valid until rotated
    assert fresh["token_expires_at"] is None
    r = api.client.get(f"/v1/reservations/{rid}", headers={"Authorization": f"Bearer {fresh['token']}"})
    assert r.status_code == 200
    assert api.call("POST", "/tenants/alice/token", params={"ttl_s": 5}).status_code == 422


def test_a_tenant_created_with_a_ttl_shows_when_its_token_ends(api):
    out = api.ok("POST", "/tenants", json={"name": "carol", "token_ttl_s": 600})
    assert out["token_expires_at"] is not None


def test_guessing_tokens_is_throttled_per_address(world):
    api, rid = world
    for _ in range(10):
        assert api.client.get("/v1/reservations", headers={"Authorization": "Bearer guess"}).status_code == 401
    r = api.client.get("/v1/reservations", headers={"Authorization": "Bearer guess"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    # from this address even a good token waits: the guesser learns nothing more
    assert api.client.get("/v1/reservations", headers=api.tenants["alice"]).status_code == 429
    assert api.client.get("/v1/reservations").status_code == 401  # no token is no guess
    other = api.app.state.auth_throttle
    other.check("198.18.7.7")  # another address is not held back


def test_the_throttle_forgets_after_its_window():
    from iris_haas.contract.errors import TooManyRequests

    t = AuthThrottle(limit=2, window_s=0.2)
    t.failed("a")
    t.failed("a")
    with pytest.raises(TooManyRequests):
        t.check("a")
    import time

    time.sleep(0.25)
    t.check("a")
    assert t._failures == {}
