"""Wiring: settings -> database -> coordinator -> API app. Used by `iris serve`, the demo and tests."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from pathlib import Path

import uvicorn

from iris_haas.agent.client import ClientTls
from iris_haas.api.app import create_app
from iris_haas.api.client import Client
from iris_haas.control.engine import Coordinator
from iris_haas.control.settings import Settings
from iris_haas.control.sync import AgentDataPlane, DataPlane
from iris_haas.nsi.requester import Requester
from iris_haas.store.db import Database


def admin_token(settings: Settings) -> str:
    """The configured admin token, or the one kept in ``data_dir/admin-token`` (created 0600 once)."""
    if settings.admin_token:
        return settings.admin_token
    path = Path(settings.data_dir) / "admin-token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def build(settings: Settings, dataplane: DataPlane | None = None, *, scheduler: bool = True):
    if dataplane is None and settings.agent_tls_dir:
        dataplane = AgentDataPlane(ClientTls.coordinator(settings.agent_tls_dir), netns=settings.agent_netns)
    elif dataplane is None and settings.agent_token:
        dataplane = AgentDataPlane(token=settings.agent_token, netns=settings.agent_netns)
    db = Database(settings.resolved_database_url())
    try:  # a new database gets the schema; an older one only when told (settings.migrate)
        db.prepare(upgrade=settings.migrate)
    except BaseException:
        db.dispose()
        raise
    requester = Requester(settings.nsi_requester_nsa, settings.nsi_reply_url or f"{settings.api_url}/v1/nsi/requester",
                          timeout_s=settings.nsi_timeout_s, netns=settings.agent_netns)
    coordinator = Coordinator(db, hold_timeout_s=settings.hold_timeout_s, dataplane=dataplane,
                              push_timeout_s=settings.push_timeout_s, provision_timeout_s=settings.provision_timeout_s,
                              poll_interval_s=settings.poll_interval_s, end_warning_s=settings.end_warning_s,
                              nsi=requester, full_resync_every=settings.full_resync_every)
    app = create_app(coordinator, admin_token(settings),
                     scheduler_interval=settings.scheduler_interval_s if scheduler else None,
                     heartbeat_s=settings.events_heartbeat_s, stream_lasts_s=settings.events_stream_s,
                     webhook_allow_private=settings.webhook_allow_private, metrics_public=settings.metrics_public)
    return app, coordinator


def _bound(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name it, and without it
    # every answer on a kept-alive connection waited ~40 ms (Nagle's algorithm against the
    # client's delayed ACK: uvicorn writes an answer's headers and its body apart)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    return s


def free_port() -> int:
    """A loopback TCP port free now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCoordinator:
    """An `iris serve` in a thread of this process, on a free loopback port."""

    def __init__(self, data_dir: Path, hold_timeout_s: float = 60.0, dataplane=None,
                 tls: tuple[Path, Path] | None = None, sockets: list[socket.socket] | None = None, **settings):
        """``tls``: (certificate, key) to serve HTTPS with; its certificate must name ``localhost``.
        ``sockets``: bound sockets it serves on as well (one in the lab's control network, where
        the NSI providers send their callbacks: give ``nsi_reply_url`` there too)."""
        self.port = free_port()
        self.sockets = [_bound("127.0.0.1", self.port), *(sockets or [])]
        self.settings = Settings(**{"data_dir": data_dir, "hold_timeout_s": hold_timeout_s, "scheduler_interval_s": 0.2,
                                    "admin_token": None, "database_url": None, **settings})
        self.app, self.engine = build(self.settings, dataplane)
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        cert, key = tls or (None, None)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    ssl_certfile=cert, ssl_keyfile=key))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": self.sockets}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the coordinator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        for s in self.sockets:
            s.close()
        self.engine.close()
        self.engine.db.dispose()

    def client(self, token: str, timeout: float = 120.0) -> Client:
        return Client(self.url, token, timeout=timeout)

    @property
    def admin_token(self) -> str:
        return (Path(self.settings.data_dir) / "admin-token").read_text().strip()
