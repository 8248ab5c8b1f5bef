"""Settings, validated at start (environment variables prefixed ``IRIS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IRIS_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="where the SQLite file and the admin token live")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite under data_dir")
    admin_token: str | None = Field(default=None, description="admin API token; default: generated into data_dir")
    hold_timeout_s: float = Field(default=60.0, gt=0, description="NSI hold timer: ReserveHeld -> ReserveTimeout")
    scheduler_interval_s: float = Field(default=1.0, gt=0, description="how often the leader runs hold timers, "
                                        "start and end times and the reconciler")
    poll_interval_s: float = Field(default=5.0, gt=0, le=3600, description="how often the leader asks each host "
                                   "what it holds (a host rebuilt or changed by hand is found within this)")
    push_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="how long an API call waits for the "
                                  "hosts it changed; a slower host is left to the reconciler")
    provision_timeout_s: float = Field(default=180.0, gt=0, le=3600, description="how long provision waits for "
                                       "every host of the reservation to confirm before it fails")
    agent_tls_dir: Path | None = Field(default=None, description="ca.crt, coordinator.crt and coordinator.key: "
                                       "the agents are reached over mutual TLS; without it (or agent_token) desired "
                                       "state stays in the coordinator (in-memory data plane, for trials)")
    agent_token: str | None = Field(default=None, description="development only: the token of agents run with "
                                    "--insecure-http (plain HTTP); ignored when agent_tls_dir is set")
    agent_netns: str | None = Field(default=None, description="reach the agents from inside this network "
                                    "namespace (the lab's control network)")
    api_url: str = Field(default="http://127.0.0.1:8642", description="where the CLI finds the coordinator")
    token: str | None = Field(default=None, description="the CLI's API token (admin or tenant)")
    ca_file: Path | None = Field(default=None, description="the CLI trusts this CA for an https:// api_url (default: "
                                 "the system's)")
    end_warning_s: float = Field(default=600.0, ge=0, le=86400, description="an endingSoon event this long before "
                                 "each reservation's end (0: none)")
    events_heartbeat_s: float = Field(default=15.0, gt=0, le=3600, description="how often an idle event stream "
                                      "sends a heartbeat (an SSE comment)")
    events_stream_s: float = Field(default=300.0, gt=0, le=86400, description="how long one event stream lasts "
                                   "before its client reconnects (with Last-Event-ID; its token is checked again)")
    webhook_allow_private: bool = Field(default=False, description="let webhooks reach addresses that are not "
                                        "public (loopback, private networks, the control network): trials only")
    metrics_public: bool = Field(default=False, description="serve /metrics without a token (else it takes the "
                                 "admin token): only where no one but the Prometheus server reaches the port")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'iris.db').resolve()}"
