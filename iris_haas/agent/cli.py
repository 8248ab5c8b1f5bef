"""``iris agent run``: run the per-host agent (:func:`agent`, a typer command).

Also runnable as ``python -m iris_haas.agent.cli --listen IP --tls-dir DIR ...``.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iris_haas.contract.config import ConfigError, check_keys, describe, read_toml
from iris_haas.contract.logs import LogFormat, setup_logging
from iris_haas.contract.ops import DesiredState
from iris_haas.contract.types import DatapathType, IfName
from iris_haas.hostd.policy import DEFAULT_IMAGE_ROOTS, DEFAULT_POOL_ROOTS, Policy
from iris_haas.hostd.reconciler import HostConfig
from iris_haas.linux import proc


class AgentOptions(BaseModel):
    """The agent's options: the flags of ``iris agent run``, and the keys of its ``--config`` file (TOML,
    the same names with underscores). Flags win over the file, the file over these defaults."""

    model_config = ConfigDict(extra="forbid")

    listen: str = "127.0.0.1"
    port: int = Field(default=7780, ge=1, le=65535)
    node: str = ""
    db: str = "unix:/var/run/openvswitch/db.sock"
    datapath_type: DatapathType = DatapathType.SYSTEM
    underlay_mtu: int = Field(default=1500, ge=576, le=9216)
    state_dir: Path = Path("/var/lib/iris/agent")
    tls_dir: Path | None = None
    tls_check_s: float = Field(default=10.0, gt=0, le=3600)
    insecure_http: bool = False
    token_file: Path | None = None
    pidfile: Path | None = None
    desired: Path | None = None
    reconcile_s: float = Field(default=30.0, gt=0, le=86400)
    pool_root: list[str] = Field(default_factory=lambda: list(DEFAULT_POOL_ROOTS))
    image_root: list[str] = Field(default_factory=lambda: list(DEFAULT_IMAGE_ROOTS))
    host_device: list[IfName] = Field(default_factory=list)
    log_format: LogFormat = LogFormat.TEXT

    @classmethod
    def load(cls, config: Path | None = None, **flags: Any) -> AgentOptions:
        """The flags given (not None, not an empty list) over ``config``; a ConfigError names the bad key."""
        values = read_toml(config) if config is not None else {}
        where = str(config) if config is not None else "options"
        check_keys(values, cls.model_fields, where)
        try:
            cls.model_validate(values)
            return cls.model_validate(values | {k: v for k, v in flags.items() if v not in (None, [])})
        except ValidationError as e:
            raise describe(e, where) from None


def agent(
    config: Annotated[Path | None, typer.Option(help="a TOML file of these options (names with underscores: "
                                                "tls_dir = ...); flags win over it")] = None,
    listen: Annotated[str | None, typer.Option(help="address on the control network to listen on (default "
                                               "127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 7780)")] = None,
    node: Annotated[str | None, typer.Option(help="this host's name, as the coordinator knows it (default: its "
                                             "certificate's)")] = None,
    db: Annotated[str | None, typer.Option(help="OVSDB socket (default unix:/var/run/openvswitch/db.sock)")] = None,
    datapath_type: Annotated[DatapathType | None, typer.Option(help="system (kernel, the default) or netdev "
                                                               "(userspace)")] = None,
    underlay_mtu: Annotated[int | None, typer.Option(help="MTU of the tunnels' underlay; L1 MTUs are fitted to it "
                                                     "(default 1500)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="where the desired state is kept (default "
                                                   "/var/lib/iris/agent)")] = None,
    tls_dir: Annotated[Path | None, typer.Option(help="host.key, host.crt and ca.crt (`iris agent enroll`): serve "
                                                 "TLS to the coordinator's certificate only")] = None,
    tls_check_s: Annotated[float | None, typer.Option(help="how often the agent looks for a new host.crt/host.key "
                                                      "(also on SIGHUP; default 10)")] = None,
    insecure_http: Annotated[bool, typer.Option(help="development only: plain HTTP and a bearer token, instead of "
                                                "--tls-dir")] = False,
    token_file: Annotated[Path | None, typer.Option(help="--insecure-http: file holding the bearer token "
                                                    "(or IRIS_AGENT_TOKEN)")] = None,
    pidfile: Annotated[Path | None, typer.Option(help="write our PID here")] = None,
    desired: Annotated[Path | None, typer.Option(
        help="apply this desired state (JSON) at start, e.g. an IaaS gateway's (`iris gateway-config --json`)")] = None,
    once: Annotated[bool, typer.Option(help="apply --desired, print the result and exit (no HTTP server)")] = False,
    reconcile_s: Annotated[float | None, typer.Option(help="how often the agent checks the host against its desired "
                                                      "state and repairs it (default 30)")] = None,
    pool_root: Annotated[list[str] | None, typer.Option(
        help="a directory under which storage pools may be (repeat for several); default /var/lib/iris/pools")] = None,
    image_root: Annotated[list[str] | None, typer.Option(
        help="a directory under which L1 OS images may be (repeat for several); default /var/lib/iris/images")] = None,
    host_device: Annotated[list[str] | None, typer.Option(
        help="a device of this host, not Iris's, that may join an Iris bridge (an IaaS gateway's trunk); repeat")] = None,
    log_format: Annotated[LogFormat | None, typer.Option(help="text (default) or json, one object a line")] = None,
) -> None:
    """Run the agent: HTTPS for the coordinator only; applies and reconciles the host's desired state."""
    import uvicorn

    from iris_haas.agent.server import create_app, freeze_heap, make_agent
    from iris_haas.agent.tls import ServerTls

    try:
        o = AgentOptions.load(config, listen=listen, port=port, node=node, db=db, datapath_type=datapath_type,
                              underlay_mtu=underlay_mtu, state_dir=state_dir, tls_dir=tls_dir, tls_check_s=tls_check_s,
                              insecure_http=insecure_http or None, token_file=token_file, pidfile=pidfile,
                              desired=desired, reconcile_s=reconcile_s, pool_root=pool_root, image_root=image_root,
                              host_device=host_device,
                              log_format=log_format)
    except ConfigError as e:
        raise typer.BadParameter(e.message, param_hint="--config" if config else None) from None
    node, tls_dir, desired, pidfile = o.node, o.tls_dir, o.desired, o.pidfile
    tls, token = None, None
    if not once:  # an agent that serves: mutual TLS, or plain HTTP only when asked for by name
        if tls_dir and o.insecure_http:
            raise typer.BadParameter("--tls-dir or --insecure-http, not both")
        if tls_dir:
            tls = ServerTls(tls_dir)
            if node and node != tls.name:
                raise typer.BadParameter(f"--node {node}, but the certificate in {tls_dir} is {tls.name}'s")
            node = tls.name
        elif o.insecure_http:
            token = o.token_file.read_text().strip() if o.token_file else os.environ.get("IRIS_AGENT_TOKEN", "")
            if not token:
                raise typer.BadParameter("--insecure-http needs a token: --token-file or IRIS_AGENT_TOKEN")
        else:
            raise typer.BadParameter("no --tls-dir (`iris agent enroll` makes one); plain HTTP needs --insecure-http")
    setup_logging(o.log_format)  # the options are good: from here on this process is the agent
    if token:
        logging.getLogger("iris.agent").warning(
            "INSECURE: plain HTTP with a bearer token; anyone on the control network who sees the token is "
            "root on this host. For development only: run with --tls-dir")
    cfg = HostConfig(db=o.db, datapath_type=o.datapath_type, underlay_mtu=o.underlay_mtu)
    policy = Policy(pool_roots=tuple(o.pool_root), host_devices=frozenset(o.host_device),
                    image_roots=tuple(o.image_root))
    ag = make_agent(node or o.listen, cfg, o.state_dir, policy)
    try:
        if once:
            if not desired:
                raise typer.BadParameter("--once needs --desired")
            typer.echo(ag.put(DesiredState.model_validate_json(desired.read_text())).model_dump_json())
            return
        if desired:
            ag.put(DesiredState.model_validate_json(desired.read_text()))
        if pidfile:
            pidfile.write_text(f"{os.getpid()}\n")
        ag.run_reconciler(o.reconcile_s)  # the stored state first: a restarted host is rebuilt unaided
        server_tls = {}
        if tls is not None:
            tls.watch(o.tls_check_s)
            signal.signal(signal.SIGHUP, lambda *_: tls.check())
            server_tls = {"ssl_context_factory": lambda _config, _default: tls.context}
        app = create_app(ag, token)
        freeze_heap()  # before serving: scrapes pay for no full collection of what lives for ever
        uvicorn.run(app, host=o.listen, port=o.port, log_level="warning", access_log=False,
                    log_config=None, **server_tls)
    finally:
        if tls is not None:
            tls.close()
        ag.close()
        if pidfile and proc.read_pid(pidfile) == os.getpid():
            pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    typer.run(agent)
