"""Tenants' webhooks against a real HTTP receiver and a real coordinator (uvicorn on loopback):
every event of the tenant arrives, signed, none of another tenant's; a receiver that was down,
and a coordinator that restarted meanwhile, get the missed events later."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.control import webhooks
from iris_haas.control.webhooks import Webhooks

COMPUTE = {"duration_s": 3600, "items": [{"kind": "compute", "count": 1}]}


class Receiver:
    """An HTTP server that records each POST (path, headers, body); it can go down and come
    back on the same port."""

    def __init__(self, port: int = 0):
        self.got: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.got.append((self.path, dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.handler = Handler
        self.port = port
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> Receiver:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def at(self, path: str) -> list[tuple[dict, dict]]:
        with self.lock:
            return [(h, json.loads(b)) for p, h, b in self.got if p == path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def wait_for(predicate, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def setup(c: LocalCoordinator) -> dict:
    admin = c.client(c.admin_token)
    admin.post("/sites", {"name": "haas"})
    admin.post("/nodes", {"name": "l0-0", "site": "haas", "cpus": 8, "memory_mb": 8192, "disk_gb": 100})
    return {n: admin.post("/tenants", {"name": n})["token"] for n in ("alice", "bob")}


def verify(secret: str, headers: dict, body: dict, raw: bytes | None = None) -> bool:
    raw = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Iris-Signature"], expected)


def test_every_event_of_its_tenant_arrives_signed_even_after_downtime_and_a_restart(tmp_path):
    receiver = Receiver().up()
    with LocalCoordinator(tmp_path, webhook_allow_private=True) as c:
        tokens = setup(c)
        alice, bob = c.client(tokens["alice"]), c.client(tokens["bob"])
        hook = alice.post("/tenants/alice/webhooks", {"url": receiver.url("/alice")})
        bob.post("/tenants/bob/webhooks", {"url": receiver.url("/bob")})
        assert len(hook["secret"]) == 64 and hook["cursor"] == 0
        assert "secret" not in alice.get("/tenants/alice/webhooks")[0]  # shown once

        a = alice.post("/reservations", COMPUTE)["id"]
        alice.post(f"/reservations/{a}/commit")
        b = bob.post("/reservations", COMPUTE)["id"]
        feed = alice.get("/events")["events"]
        wait_for(lambda: len(receiver.at("/alice")) >= len(feed), what="alice's events")
        wait_for(lambda: len(receiver.at("/bob")) >= 2, what="bob's events")
        got = receiver.at("/alice")
        assert [body for _, body in got] == feed  # every one, in order, as the feed shows it
        assert all(h["X-Iris-Event-Id"] == str(body["cursor"]) for h, body in got)
        with receiver.lock:
            raw = [(h, body) for p, h, body in receiver.got if p == "/alice"]
        assert all(verify(hook["secret"], h, {}, body) for h, body in raw)  # over the bytes sent
        assert not verify("another secret", raw[0][0], {}, raw[0][1])
        assert {body["reservation_id"] for _, body in got} == {a}
        assert {body["reservation_id"] for _, body in receiver.at("/bob")} == {b}
        assert alice.get("/tenants/alice/webhooks")[0]["cursor"] == feed[-1]["cursor"]

        # the receiver goes down: what happens meanwhile waits, with backoff
        receiver.down()
        alice.post(f"/reservations/{a}/provision")
        wait_for(lambda: alice.get("/tenants/alice/webhooks")[0]["attempts"] >= 1, what="a failed delivery")
        state = alice.get("/tenants/alice/webhooks")[0]
        assert state["last_error"] and state["next_try"] and state["cursor"] == feed[-1]["cursor"]
    # ... and the coordinator restarts before it comes back
    with LocalCoordinator(tmp_path, webhook_allow_private=True) as c:
        alice = c.client(tokens["alice"])
        alice.post(f"/reservations/{a}/terminate")
        receiver.up()
        feed = alice.get("/events")["events"]
        wait_for(lambda: len(receiver.at("/alice")) >= len(feed), timeout=30, what="the missed events")
        time.sleep(0.5)
        got = [body for _, body in receiver.at("/alice")]
        assert got == feed  # each once, none lost, in order
        assert alice.get("/tenants/alice/webhooks")[0]["attempts"] == 0
    receiver.down()


def test_webhooks_are_each_tenants_own(tmp_path):
    with LocalCoordinator(tmp_path) as c:
        tokens = setup(c)
        alice, bob, admin = c.client(tokens["alice"]), c.client(tokens["bob"]), c.client(c.admin_token)
        hook = alice.post("/tenants/alice/webhooks", {"url": "https://hooks.example.com/iris?k=1"})
        for call in (lambda: bob.get("/tenants/alice/webhooks"),
                     lambda: bob.post("/tenants/alice/webhooks", {"url": "http://example.com/"}),
                     lambda: bob.delete(f"/tenants/alice/webhooks/{hook['id']}"),
                     lambda: bob.delete(f"/tenants/bob/webhooks/{hook['id']}")):
            with pytest.raises(ApiError) as e:
                call()
            assert e.value.status == 404
        assert [w["id"] for w in admin.get("/tenants/alice/webhooks")] == [hook["id"]]
        for url, why in (("ftp://example.com/", "scheme"), ("http://example.com:0/", "port"),
                         ("http://" + "a" * 600 + ".com/", "length"), ("http://user@example.com/", "user info"),
                         ("http://example.com/#x", "fragment")):
            with pytest.raises(ApiError) as e:
                alice.post("/tenants/alice/webhooks", {"url": url})
            assert e.value.status == 422 and e.value.body["errors"][0]["field"] == "url", why
        for _ in range(webhooks.MAX_PER_TENANT - 1):
            alice.post("/tenants/alice/webhooks", {"url": "http://example.com/"})
        with pytest.raises(ApiError) as e:
            alice.post("/tenants/alice/webhooks", {"url": "http://example.com/"})
        assert e.value.status == 409
        admin.delete(f"/tenants/alice/webhooks/{hook['id']}")
        assert hook["id"] not in [w["id"] for w in alice.get("/tenants/alice/webhooks")]


def test_a_receiver_on_a_private_address_is_refused_unless_allowed(api):
    """A tenant may not make the coordinator POST to loopback, the control network or an agent."""
    receiver = Receiver().up()
    try:
        hooks = Webhooks(api.coordinator.db)
        hook, _ = hooks.create("alice", None, receiver.url("/x"))
        api.ok("POST", "/reservations", "alice", json=COMPUTE)
        assert hooks.due() == [(hook.id, hook.tenant_id)]
        assert hooks.deliver(hook.id) == 0
        (row,) = hooks.list("alice", None)
        assert "not public" in row.last_error and row.attempts == 1 and row.cursor == hook.cursor
        assert receiver.got == []
        assert hooks.due() == []  # waiting for its retry time
        allowed = Webhooks(api.coordinator.db, allow_private=True)
        with api.coordinator.db.transaction() as s:
            s.get(type(row), row.id).next_try = 0.0
        assert allowed.deliver(hook.id) == 2  # reserve, reserve_ok
        assert len(receiver.got) == 2
    finally:
        receiver.down()


def test_backoff_doubles_up_to_its_bound(api, monkeypatch):
    now = [1000.0]
    hooks = Webhooks(api.coordinator.db, clock=lambda: now[0])
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook, _ = hooks.create("alice", None, f"http://127.0.0.1:{port}/")
    api.ok("POST", "/reservations", "alice", json=COMPUTE)
    allowed = Webhooks(api.coordinator.db, allow_private=True, clock=lambda: now[0])
    waits = []
    for _ in range(12):
        allowed.deliver(hook.id)
        (row,) = allowed.list("alice", None)
        waits.append(row.next_try - now[0])
        now[0] = row.next_try
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert waits[-1] == webhooks.MAX_BACKOFF_S and max(waits) == webhooks.MAX_BACKOFF_S
    assert "ConnectError" in row.last_error
