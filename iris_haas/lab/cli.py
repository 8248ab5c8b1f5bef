"""``iris lab up | down | status`` and ``iris gateway-config``.

``app`` is a typer app to mount as ``iris lab``; :func:`gateway_config` is a command to register
at the top level. Also runnable as ``python -m iris_haas.lab.cli up``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from iris_haas.contract.types import DatapathType
from iris_haas.lab import realizer

app = typer.Typer(help="The two-DC lab: real OVS, real links, in network namespaces.", no_args_is_help=True)

TopoOpt = Annotated[Path | None, typer.Option("--topology", "-t", help="topology file (TOML); default: the built-in one")]
NameOpt = Annotated[str | None, typer.Option("--name", "-n", help="lab name (overrides the file's)")]


def _lab(topology: Path | None, name: str | None, l0s: int | None = None) -> realizer.Lab:
    if topology is None and name:
        running = realizer.from_run(name)
        if running is not None:
            return running
    return realizer.load(topology, name=name, l0_count=l0s)


@app.command()
def up(topology: TopoOpt = None, name: NameOpt = None,
       l0s: Annotated[int | None, typer.Option(help="number of L0 nodes")] = None) -> None:
    """Build the lab described by the topology file (idempotent)."""
    lab = realizer.load(topology, name=name, l0_count=l0s)
    times = realizer.up(lab)
    typer.echo(json.dumps({"lab": lab.name, "up_s": round(times["total"], 2)}))


@app.command()
def down(name: Annotated[str, typer.Option("--name", "-n", help="lab name")] = "",
         topology: TopoOpt = None) -> None:
    """Remove everything the lab created, and nothing else."""
    lab_name = name or realizer.load(topology).name
    typer.echo(json.dumps({"lab": lab_name, **realizer.down(lab_name)}))


@app.command()
def status(topology: TopoOpt = None, name: NameOpt = None) -> None:
    """Show what exists of the lab and whether it matches the topology file (exit 1 if not)."""
    lab = _lab(topology, name)
    s = realizer.status(lab)
    typer.echo(json.dumps(s, indent=2))
    if not s["matches"]:
        raise typer.Exit(1)


def gateway_config(
    tenant: Annotated[str, typer.Option(help="tenant name")],
    haas_gateway: Annotated[str, typer.Option(help="the HaaS gateway's public address")],
    key: Annotated[int, typer.Option(help="the tenant's GRE key")],
    trunk_port: Annotated[str, typer.Option(help="the IaaS gateway's NIC towards its DC (trunk)")] = "eth1",
    wan_port: Annotated[str | None, typer.Option(help="the IaaS gateway's NIC towards the internet")] = None,
    bridge: Annotated[str, typer.Option(help="bridge name on the IaaS gateway")] = "br-int",
    rate_mbit: Annotated[float | None, typer.Option(help="limit IaaS -> HaaS traffic (Mbit/s)")] = None,
    datapath_type: Annotated[DatapathType, typer.Option(help="system (kernel) or netdev (userspace)")] = (
        DatapathType.SYSTEM),
    circuit_vlan: Annotated[int | None, typer.Option(
        min=1, max=4094, help="run the trunk inside this NSI circuit (the VLAN in the reservation's resources, nsi.vlan; "
        "needs --wan-port, a port of an OVS bridge)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the op list for `iris agent run --desired`")] = False,
) -> None:
    """Print the IaaS gateway's configuration (paper figure 5): commands, or ops for an agent."""
    from iris_haas.hostd.gateway import GatewaySpec, iaas_gateway_ops, iaas_gateway_script

    g = GatewaySpec(tenant=tenant, haas_gateway_ip=haas_gateway, key=key, trunk_port=trunk_port, wan_port=wan_port,
                    bridge=bridge, rate_mbit=rate_mbit, datapath_type=datapath_type, circuit_vlan=circuit_vlan)
    if circuit_vlan is not None and not wan_port:
        raise typer.BadParameter("a trunk inside an NSI circuit needs the WAN NIC", param_hint="--wan-port")
    if as_json:
        typer.echo(iaas_gateway_ops(g).model_dump_json(indent=2))
    else:
        typer.echo(iaas_gateway_script(g), nl=False)


app.command("gateway-config")(gateway_config)

if __name__ == "__main__":
    app()
