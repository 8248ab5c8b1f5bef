"""Settings, validated at start: flags, then environment variables prefixed ``IRIS_``, then the
coordinator's configuration file (``iris serve --config FILE``, TOML, the same keys in lower case),
then the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from iris_haas.contract.config import check_keys, describe, file_model, read_toml
from iris_haas.contract.logs import LogFormat


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
    agent_netns: str | None = Field(default=None, description="reach the agents (and NSI providers) from "
                                    "inside this network namespace (the lab's control network)")
    api_url: str = Field(default="http://127.0.0.1:8642", description="where the CLI finds the coordinator")
    token: str | None = Field(default=None, description="the CLI's API token (admin or tenant)")
    ca_file: Path | None = Field(default=None, description="the CLI trusts this CA for an https:// api_url (default: "
                                 "the system's)")
    full_resync_every: int = Field(default=300, ge=0, description="every this many scheduler passes the leader "
                                   "derives every host's desired state again from the database (0: only at start "
                                   "and on inventory changes); between them only what a change concerns is derived")
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

    nsi_requester_nsa: str = Field(default="urn:ogf:network:iris.example:2026:nsa:iris", max_length=256,
                                   pattern=r"^urn:ogf:network:\S+$", description="Iris's NSA id as an NSI requester "
                                   "(the requesterNSA of every message it sends to a provider)")
    nsi_reply_url: str | None = Field(default=None, max_length=512, description="where NSI providers send their "
                                      "callbacks: this coordinator's /nsi/requester, as the providers reach it "
                                      "(default: api_url + /v1/nsi/requester)")
    nsi_timeout_s: float = Field(default=10.0, gt=0, le=600, description="how long a reservation step waits for an "
                                 "NSI provider's confirmation before it fails the network child")
    host: str = Field(default="127.0.0.1", description="`iris serve`: the address to listen on")
    port: int = Field(default=8642, ge=1, le=65535, description="`iris serve`: the port to listen on")
    tls_cert: Path | None = Field(default=None, description="`iris serve`: serve HTTPS with this certificate (PEM)")
    tls_key: Path | None = Field(default=None, description="`iris serve`: ... and this key")
    log_format: LogFormat = Field(default=LogFormat.TEXT, description="`iris serve`: text, or json (one object a "
                                  "line)")
    migrate: bool = Field(default=False, description="`iris serve`: upgrade an older database schema at start "
                          "instead of refusing to start (`iris db upgrade` does it by hand)")

    @classmethod
    def load(cls, config: Path | None = None, **flags: Any) -> Settings:
        """Flags (the ones given, not None) over the environment over ``config`` over the defaults;
        a ConfigError naming the file or variable and the key when one is wrong."""
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            env = cls()
        except ValidationError as e:
            raise describe(e, "environment", name=lambda k: f"IRIS_{k.upper()}") from None
        from_file: dict[str, Any] = {}
        if config is not None:
            raw = read_toml(config)
            check_keys(raw, cls.model_fields, str(config))
            try:  # the file alone: a bad value is refused even where a variable overrides it
                from_file = file_model(cls).model_validate(raw).model_dump(exclude_unset=True)
            except ValidationError as e:
                raise describe(e, str(config)) from None
        from_env = {k: getattr(env, k) for k in env.model_fields_set}
        try:
            return cls(**(from_file | from_env | given))
        except ValidationError as e:
            raise describe(e, "options") from None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'iris.db').resolve()}"
