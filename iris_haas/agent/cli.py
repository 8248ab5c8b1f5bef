"""``iris agent run``: run the per-host agent (:func:`agent`, a typer command).

Also runnable as ``python -m iris_haas.agent.cli --listen IP --tls-dir DIR ...``.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from iris_haas.contract.ops import DesiredState
from iris_haas.hostd.policy import DEFAULT_POOL_ROOTS, Policy
from iris_haas.hostd.reconciler import HostConfig
from iris_haas.linux import proc


def agent(
    listen: Annotated[str, typer.Option(help="address on the control network to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 7780,
    node: Annotated[str, typer.Option(help="this host's name, as the coordinator knows it")] = "",
    db: Annotated[str, typer.Option(help="OVSDB socket")] = "unix:/var/run/openvswitch/db.sock",
    datapath_type: Annotated[str, typer.Option(help="system (kernel) or netdev (userspace)")] = "system",
    underlay_mtu: Annotated[int, typer.Option(help="MTU of the tunnels' underlay; L1 MTUs are fitted to it")] = 1500,
    state_dir: Annotated[Path, typer.Option(help="where the desired state is kept")] = Path("/var/lib/iris/agent"),
    tls_dir: Annotated[Path | None, typer.Option(help="host.key, host.crt and ca.crt (`iris agent enroll`): serve "
                                                 "TLS to the coordinator's certificate only")] = None,
    tls_check_s: Annotated[float, typer.Option(help="how often the agent looks for a new host.crt/host.key "
                                               "(also on SIGHUP)")] = 10.0,
    insecure_http: Annotated[bool, typer.Option(help="development only: plain HTTP and a bearer token, instead of "
                                                "--tls-dir")] = False,
    token_file: Annotated[Path | None, typer.Option(help="--insecure-http: file holding the bearer token "
                                                    "(or IRIS_AGENT_TOKEN)")] = None,
    pidfile: Annotated[Path | None, typer.Option(help="write our PID here")] = None,
    desired: Annotated[Path | None, typer.Option(
        help="apply this desired state (JSON) at start, e.g. an IaaS gateway's (`iris gateway-config --json`)")] = None,
    once: Annotated[bool, typer.Option(help="apply --desired, print the result and exit (no HTTP server)")] = False,
    reconcile_s: Annotated[float, typer.Option(help="how often the agent checks the host against its desired state "
                                               "and repairs it")] = 30.0,
    pool_root: Annotated[list[str] | None, typer.Option(
        help="a directory under which storage pools may be (repeat for several); default /var/lib/iris/pools")] = None,
    host_device: Annotated[list[str] | None, typer.Option(
        help="a device of this host, not Iris's, that may join an Iris bridge (an IaaS gateway's trunk); repeat")] = None,
) -> None:
    """Run the agent: HTTPS for the coordinator only; applies and reconciles the host's desired state."""
    import uvicorn

    from iris_haas.agent.server import create_app, freeze_heap, make_agent
    from iris_haas.agent.tls import ServerTls

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tls, token = None, None
    if not once:  # an agent that serves: mutual TLS, or plain HTTP only when asked for by name
        if tls_dir and insecure_http:
            raise typer.BadParameter("--tls-dir or --insecure-http, not both")
        if tls_dir:
            tls = ServerTls(tls_dir)
            if node and node != tls.name:
                raise typer.BadParameter(f"--node {node}, but the certificate in {tls_dir} is {tls.name}'s")
            node = tls.name
        elif insecure_http:
            token = token_file.read_text().strip() if token_file else os.environ.get("IRIS_AGENT_TOKEN", "")
            if not token:
                raise typer.BadParameter("--insecure-http needs a token: --token-file or IRIS_AGENT_TOKEN")
            logging.getLogger("iris.agent").warning(
                "INSECURE: plain HTTP with a bearer token; anyone on the control network who sees the token is "
                "root on this host. For development only: run with --tls-dir")
        else:
            raise typer.BadParameter("no --tls-dir (`iris agent enroll` makes one); plain HTTP needs --insecure-http")
    cfg = HostConfig(db=db, datapath_type=datapath_type, underlay_mtu=underlay_mtu)
    policy = Policy(pool_roots=tuple(pool_root) if pool_root else DEFAULT_POOL_ROOTS,
                    host_devices=frozenset(host_device or ()))
    ag = make_agent(node or listen, cfg, state_dir, policy)
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
        ag.run_reconciler(reconcile_s)  # the stored state first: a restarted host is rebuilt unaided
        server_tls = {}
        if tls is not None:
            tls.watch(tls_check_s)
            signal.signal(signal.SIGHUP, lambda *_: tls.check())
            server_tls = {"ssl_context_factory": lambda _config, _default: tls.context}
        app = create_app(ag, token)
        freeze_heap()  # before serving: scrapes pay for no full collection of what lives for ever
        uvicorn.run(app, host=listen, port=port, log_level="warning", access_log=False, **server_tls)
    finally:
        if tls is not None:
            tls.close()
        ag.close()
        if pidfile and proc.read_pid(pidfile) == os.getpid():
            pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    typer.run(agent)
