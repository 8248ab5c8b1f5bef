"""Wiring: settings -> database -> coordinator -> API app. Used by `iris serve`, the demo and tests."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from iris_haas.api.app import create_app
from iris_haas.config import Settings
from iris_haas.coordinator.engine import Coordinator
from iris_haas.managers.dataplane import AgentDataPlane, DataPlane
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
    if dataplane is None and settings.agent_token:
        dataplane = AgentDataPlane(settings.agent_token, netns=settings.agent_netns)
    db = Database(settings.resolved_database_url())
    db.migrate()
    coordinator = Coordinator(db, hold_timeout_s=settings.hold_timeout_s, dataplane=dataplane)
    app = create_app(coordinator, admin_token(settings),
                     scheduler_interval=settings.scheduler_interval_s if scheduler else None)
    return app, coordinator
