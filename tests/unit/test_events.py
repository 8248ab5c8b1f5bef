"""The event feed: one cursor over every reservation's events, scoped per tenant, in commit order
(on PostgreSQL too), resumable across a coordinator restart; endingSoon; the SSE stream over a real
uvicorn."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from httpx_sse import connect_sse

from iris_haas.api.service import LocalCoordinator, build
from iris_haas.control.settings import Settings
from iris_haas.store.models import Event

COMPUTE = {"duration_s": 3600, "items": [{"kind": "compute", "count": 1}]}


def reserve_and_commit(api, who: str) -> str:
    rid = api.ok("POST", "/reservations", who, json=COMPUTE)["id"]
    api.ok("POST", f"/reservations/{rid}/commit", who)
    return rid


def whole_feed(api, who: str, after: int = 0, limit: int = 1000) -> list[dict]:
    out = []
    while True:
        page = api.ok("GET", "/events", who, params={"after": after, "limit": limit})
        out += page["events"]
        if not page["events"]:
            assert page["next"] == after
            return out
        assert page["next"] == page["events"][-1]["cursor"]
        after = page["next"]


def test_each_tenant_follows_its_own_and_the_admin_all(api):
    a1, b1 = reserve_and_commit(api, "alice"), reserve_and_commit(api, "bob")
    a2 = reserve_and_commit(api, "alice")
    everything = whole_feed(api, "admin")
    cursors = [e["cursor"] for e in everything]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    alice, bob = whole_feed(api, "alice"), whole_feed(api, "bob")
    assert {e["reservation_id"] for e in alice} == {a1, a2}
    assert {e["reservation_id"] for e in bob} == {b1}
    assert alice == [e for e in everything if e["reservation_id"] in (a1, a2)]
    # the same events as each reservation's own list, in the same order
    for rid in (a1, a2):
        own = api.ok("GET", f"/reservations/{rid}/events", "alice")
        assert [e["id"] for e in own] == [e["id"] for e in alice if e["reservation_id"] == rid]
    # one at a time, every event exactly once
    assert whole_feed(api, "alice", limit=1) == alice
    # resuming from the middle gives the rest, and only the rest
    middle = alice[2]["cursor"]
    assert whole_feed(api, "alice", after=middle) == alice[3:]


@pytest.mark.parametrize("params, field", [
    ({"after": -1}, "after"), ({"after": "x"}, "after"), ({"after": 2**63}, "after"),
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "ten"}, "limit"),
])
def test_a_bad_cursor_or_limit_is_a_422_naming_it(api, params, field):
    for path in ("/events", "/events/stream"):
        if path.endswith("stream") and field == "limit":
            continue
        r = api.call("GET", path, "alice", params=params)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [f"query.{field}"]
    r = api.client.get("/v1/events/stream", headers={**api.tenants["alice"], "Last-Event-ID": "abc"})
    assert r.status_code == 422 and "last-event-id" in r.json()["errors"][0]["field"]


def test_cursors_follow_commit_order_not_insert_order(db, api):
    """On PostgreSQL an id is taken at insert: a transaction that inserted first and commits last
    gets the smaller id, after a reader has gone past it. The cursor is numbered at commit."""
    if not db.is_postgresql:
        pytest.skip("SQLite has one writer at a time: no two transactions interleave")
    rid = reserve_and_commit(api, "alice")
    seen = whole_feed(api, "alice")[-1]["cursor"]
    with db.transaction() as first:
        first.add(Event(reservation_id=rid, at=0.0, type="first", detail={}))
        first.flush()
        with db.transaction() as second:
            second.add(Event(reservation_id=rid, at=0.0, type="second", detail={}))
        page = whole_feed(api, "alice", after=seen)
        assert [e["type"] for e in page] == ["second"]
        seen = page[-1]["cursor"]
    late = whole_feed(api, "alice", after=seen)
    assert [e["type"] for e in late] == ["first"]  # not lost behind the reader's cursor
    assert late[0]["id"] < page[0]["id"] and late[0]["cursor"] > page[0]["cursor"]


def test_concurrent_writers_never_deadlock_and_every_event_is_numbered_once(db, api):
    rids = [api.ok("POST", "/reservations", who, json=COMPUTE)["id"] for who in ("alice", "bob") * 3]
    errors = []

    def commit(rid):
        try:
            api.coordinator.commit(None, rid)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=commit, args=(rid,)) for rid in rids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    feed = whole_feed(api, "admin")
    assert [e["cursor"] for e in feed] == list(range(1, len(feed) + 1))
    assert sum(e["detail"].get("event") == "commit_ok" for e in feed) == len(rids)


def test_resume_after_a_coordinator_restart(tmp_path):
    """Two coordinators one after the other on the same SQLite file: the cursor the first gave
    resumes on the second with every later event, exactly once."""
    settings = Settings(data_dir=tmp_path, admin_token="root", database_url=None)

    def started():
        app, engine = build(settings, scheduler=False)
        return TestClient(app, raise_server_exceptions=False), engine

    client, engine = started()
    admin = {"Authorization": "Bearer root"}
    client.post("/v1/sites", json={"name": "haas"}, headers=admin)
    client.post("/v1/nodes", json={"name": "l0-0", "site": "haas", "cpus": 4, "memory_mb": 4096, "disk_gb": 50},
                headers=admin)
    token = client.post("/v1/tenants", json={"name": "acme"}, headers=admin).json()["token"]
    acme = {"Authorization": f"Bearer {token}"}
    rid = client.post("/v1/reservations", json=COMPUTE, headers=acme).json()["id"]
    before = client.get("/v1/events", headers=acme).json()
    assert [e["detail"]["event"] for e in before["events"]] == ["reserve", "reserve_ok"]
    engine.close()
    engine.db.dispose()

    client, engine = started()
    try:
        assert client.post(f"/v1/reservations/{rid}/commit", headers=acme).status_code == 200
        after = client.get("/v1/events", headers=acme, params={"after": before["next"]}).json()
        assert [e["detail"]["event"] for e in after["events"]] == ["commit", "commit_ok"]
        every = client.get("/v1/events", headers=acme).json()["events"]
        assert every == before["events"] + after["events"]
    finally:
        engine.close()
        engine.db.dispose()


def test_ending_soon_once_before_the_end(api, clock):
    coord = api.coordinator
    assert coord.end_warning_s == 600
    rid = reserve_and_commit(api, "alice")
    held = api.ok("POST", "/reservations", "bob", json=COMPUTE)["id"]  # never committed: not warned

    def warnings(who, r):
        return [e for e in api.ok("GET", f"/reservations/{r}/events", who) if e["type"] == "endingSoon"]

    coord.tick()
    clock.advance(3600 - 601)
    coord.tick()
    assert warnings("alice", rid) == []
    clock.advance(2)
    assert coord.tick()["warned"] == 1
    coord.tick()
    (w,) = warnings("alice", rid)
    assert w["detail"]["version"] == 1 and 598 <= w["detail"]["remaining_s"] <= 600
    assert w["detail"]["end"].startswith(api.ok("GET", f"/reservations/{rid}", "alice")["end"][:19])
    clock.advance(600)
    coord.tick()
    assert api.ok("GET", f"/reservations/{rid}", "alice")["lifecycle_state"] == "PassedEndTime"
    assert len(warnings("alice", rid)) == 1
    assert warnings("bob", held) == []


def test_no_warning_when_it_is_turned_off(api, clock):
    api.coordinator.end_warning_s = 0
    rid = reserve_and_commit(api, "alice")
    clock.advance(3599)
    assert api.coordinator.tick()["warned"] == 0
    assert not [e for e in api.ok("GET", f"/reservations/{rid}/events", "alice") if e["type"] == "endingSoon"]


# ------------------------------------------------------------------ the stream, over real HTTP
@pytest.fixture
def served(tmp_path):
    with LocalCoordinator(tmp_path, events_heartbeat_s=0.3, events_stream_s=30.0) as c:
        admin = c.client(c.admin_token)
        admin.post("/sites", {"name": "haas"})
        admin.post("/nodes", {"name": "l0-0", "site": "haas", "cpus": 8, "memory_mb": 8192, "disk_gb": 100})
        tokens = {n: admin.post("/tenants", {"name": n})["token"] for n in ("alice", "bob")}
        yield c, {n: c.client(t) for n, t in tokens.items()}, tokens


def sse(url: str, token: str, n: int, *, headers=None, params=None, timeout=10.0) -> list[tuple[str, dict]]:
    """The first ``n`` events of a stream, as (id, data)."""
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}", **(headers or {})},
                      timeout=timeout) as http:
        with connect_sse(http, "GET", "/v1/events/stream", params=params) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for ev in source.iter_sse():
                if not ev.data:  # a heartbeat
                    continue
                out.append((ev.id, json.loads(ev.data)))
                if len(out) == n:
                    return out
    return out


def test_the_stream_sends_every_event_as_it_is_written(served):
    c, clients, tokens = served
    alice = clients["alice"]
    rid = alice.post("/reservations", COMPUTE)["id"]
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(sse(c.url, tokens["alice"], 6)))
    reader.start()
    time.sleep(0.5)  # the stream is waiting now, holding no transaction:
    t0 = time.monotonic()
    clients["bob"].post("/reservations", COMPUTE)  # writers are not held back (SQLite: one writer at a time)
    alice.post(f"/reservations/{rid}/commit")
    assert time.monotonic() - t0 < 5
    alice.post(f"/reservations/{rid}/terminate")
    reader.join(timeout=20)
    assert not reader.is_alive()
    feed = alice.get("/events")["events"]
    assert [d for _, d in got] == feed[:6]
    assert [i for i, _ in got] == [str(e["cursor"]) for e in feed[:6]]
    assert {d["reservation_id"] for _, d in got} == {rid}  # none of bob's


def test_last_event_id_resumes_and_idle_streams_beat(served):
    c, clients, tokens = served
    alice = clients["alice"]
    rid = alice.post("/reservations", COMPUTE)["id"]
    alice.post(f"/reservations/{rid}/commit")
    first = sse(c.url, tokens["alice"], 2)
    rest = sse(c.url, tokens["alice"], 2, headers={"Last-Event-ID": first[-1][0]}, params={"after": 0})
    assert [d["detail"]["event"] for _, d in first + rest] == ["reserve", "reserve_ok", "commit", "commit_ok"]
    # bob has no events: his stream is only heartbeats (SSE comments) while it waits
    lines = []
    with httpx.stream("GET", f"{c.url}/v1/events/stream", headers={"Authorization": f"Bearer {tokens['bob']}"},
                      timeout=10) as r:
        deadline = time.monotonic() + 1.5
        for line in r.iter_lines():
            lines.append(line)
            if time.monotonic() > deadline:
                break
    assert sum(line.startswith(":") for line in lines) >= 2
    assert not any(line.startswith("data:") for line in lines)


def test_streams_per_tenant_are_bounded(served):
    c, clients, tokens = served
    from iris_haas.api.routes.events import MAX_STREAMS

    streams = []
    try:
        for _ in range(MAX_STREAMS):
            client = httpx.Client(base_url=c.url, headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=10)
            response = client.send(client.build_request("GET", "/v1/events/stream"), stream=True)
            assert response.status_code == 200
            streams.append((client, response))
        r = httpx.get(f"{c.url}/v1/events/stream", headers={"Authorization": f"Bearer {tokens['bob']}"})
        assert r.status_code == 429 and r.json()["type"] == "TooManyRequests"
        # another tenant is not held back by bob's streams
        with httpx.stream("GET", f"{c.url}/v1/events/stream", headers={"Authorization": f"Bearer {tokens['alice']}"},
                          timeout=5) as s:
            assert s.status_code == 200
        client, response = streams.pop()
        response.close()
        client.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # its slot comes back once the server sees it gone
            with httpx.stream("GET", f"{c.url}/v1/events/stream",
                              headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=5) as s:
                if s.status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the closed stream's slot never came back")
    finally:
        for client, response in streams:
            response.close()
            client.close()
