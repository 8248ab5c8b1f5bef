"""The `iris` command: the coordinator (`serve`, `db`), the HaaS admin's inventory, the tenant's reservations.

Exit codes: 0 done; 1 the coordinator refused or could not be reached (or a CA operation failed);
2 a usage error (an option, argument, configuration file or setting that cannot be used);
3 the database's schema is not the one this Iris needs (`iris db upgrade`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from iris_haas import __version__
from iris_haas.api.client import ApiError, Client
from iris_haas.cli.output import AsJson, Cols, Fmt, Out, OutputFormat, cell, console, emit, emit_line, err
from iris_haas.cli.profiles import Profile, load_profile, resolve
from iris_haas.contract.config import ConfigError
from iris_haas.contract.errors import IrisError
from iris_haas.contract.logs import LogFormat, setup_logging
from iris_haas.contract.types import L1Kind, NodeState, ServiceModel
from iris_haas.control.settings import Settings

if TYPE_CHECKING:
    from iris_haas.store.db import Database

EXIT_ERROR, EXIT_USAGE, EXIT_SCHEMA = 1, 2, 3

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
log = logging.getLogger("iris.serve")

Url = Annotated[str | None, typer.Option("--url", envvar="IRIS_API_URL", help="coordinator URL")]
Token = Annotated[str | None, typer.Option("--token", envvar="IRIS_TOKEN", help="API token (admin or tenant)")]
CaFile = Annotated[Path | None, typer.Option("--ca-file", envvar="IRIS_CA_FILE",
                                             help="the CA of an https:// coordinator's certificate")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", envvar="IRIS_PROFILE", help="a \\[profiles.NAME] of "
                                                "the configuration file (IRIS_CONFIG, default "
                                                "~/.config/iris/config.toml): its url, token and ca_file")]

_opts: dict[str, Any] = {}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"iris {__version__}")
        raise typer.Exit()


@app.callback()
def _main(url: Url = None, token: Token = None, ca_file: CaFile = None, profile: ProfileOpt = None,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False):
    _opts["url"], _opts["token"], _opts["ca_file"], _opts["profile"] = url, token, ca_file, profile


def fail(e: Exception, code: int) -> typer.Exit:
    """Print an error as one line (its type and message, never a traceback); the exit to raise."""
    kind, message = getattr(e, "type", type(e).__name__), getattr(e, "message", str(e))
    err.print(f"[red]error[/red] {escape(f'{kind}: {message}')}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def client() -> Client:
    """A client for the coordinator of the flags, variables or profile (see iris_haas.cli.profiles)."""
    profile: Profile | None = None
    if _opts.get("profile"):
        profile, warnings = load_profile(_opts["profile"])
        for w in warnings:
            err.print(f"[yellow]warning[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
    c = resolve(_opts.get("url"), _opts.get("token"), _opts.get("ca_file"), profile)
    try:
        return Client(c.url, c.token, ca_file=c.ca_file)
    except OSError as e:
        raise ConfigError(f"ca_file {c.ca_file}: {e.strerror or e}") from None


def call(fn, *args, **kw):
    """Run one API call; on error print the server's type and message and exit 1 (never a traceback)."""
    try:
        with client() as c:
            return fn(c, *args, **kw)
    except ApiError as e:
        raise fail(e, EXIT_ERROR) from None
    except ConfigError as e:
        raise fail(e, EXIT_USAGE) from None


def table(rows: list[dict], columns: list[str], title: str | None = None, out: Out | None = None,
          one: bool = False) -> None:
    emit(rows, columns, out or Out(), title=title, one=one)


def _settings(config: Path | None, **flags: Any) -> Settings:
    """The coordinator's settings (flags > IRIS_* variables > --config FILE > defaults), or exit 2 naming
    the bad key."""
    try:
        return Settings.load(config, **flags)
    except ConfigError as e:
        raise fail(e, EXIT_USAGE) from None


# ------------------------------------------------------------------ coordinator
ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="IRIS_SERVE_CONFIG", help="the coordinator's "
                                                "configuration file (TOML: the settings' names in lower case, "
                                                "e.g. database_url = ...)")]
DatabaseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL (also IRIS_DATABASE_URL); default: SQLite "
                                                 "under the data dir")]
DataDir = Annotated[str | None, typer.Option(help="the SQLite file, the admin token (also IRIS_DATA_DIR; default "
                                             "./var)")]


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on (default 8642)")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve HTTPS with this certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="... and this key")] = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="upgrade an older database schema first (default: "
                                          "refuse to start on one; see `iris db upgrade`)")] = False,
    log_format: Annotated[LogFormat | None, typer.Option(help="text (default) or json, one object a line")] = None,
):
    """Run the resource coordinator: REST API, reservation engine and scheduler."""
    import uvicorn
    from sqlalchemy.exc import DBAPIError

    from iris_haas.api.service import build
    from iris_haas.store.db import SchemaError

    settings = _settings(config, host=host, port=port, database_url=database_url, data_dir=data_dir,
                         tls_cert=tls_cert, tls_key=tls_key, migrate=migrate or None, log_format=log_format)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise fail(ConfigError("tls_cert and tls_key go together (--tls-cert, --tls-key)"), EXIT_USAGE)
    setup_logging(settings.log_format)
    try:
        api, _ = build(settings)
    except SchemaError as e:
        raise fail(e, EXIT_SCHEMA) from None
    except DBAPIError as e:
        raise fail(_unreachable(settings, e), EXIT_ERROR) from None
    scheme = "https" if settings.tls_cert else "http"
    log.info("Iris coordinator %s on %s://%s:%s/v1 (OpenAPI: /v1/docs); database %s", __version__, scheme,
             settings.host, settings.port, settings.resolved_database_url().split("@")[-1])
    if not settings.admin_token:
        log.info("admin token in %s/admin-token", settings.data_dir)
    if settings.agent_tls_dir:
        log.info("agents reached over mutual TLS (coordinator certificate in %s)", settings.agent_tls_dir)
    elif settings.agent_token:
        log.warning("INSECURE: IRIS_AGENT_TOKEN without IRIS_AGENT_TLS_DIR: desired state goes to agents run "
                    "with --insecure-http, in plain HTTP (development only)")
    else:
        log.warning("IRIS_AGENT_TLS_DIR is not set: desired state is kept in memory and sent to no agent "
                    "(a trial coordinator, no data plane)")
    uvicorn.run(api, host=settings.host, port=settings.port, log_level="warning", log_config=None,
                ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key)


# ------------------------------------------------------------------ the database's schema (admin, on the coordinator)
db_app = typer.Typer(help="The coordinator's database schema: where it stands, and its upgrade.", no_args_is_help=True)
app.add_typer(db_app, name="db")


class DatabaseUnavailable(IrisError):
    """The database cannot be reached or refused us: nothing was done."""

    status, type = 503, "ServiceUnavailable"


def _unreachable(settings: Settings, e: Exception) -> DatabaseUnavailable:
    cause = str(getattr(e, "orig", e)).strip().splitlines()[0]
    where = settings.resolved_database_url().split("@")[-1]  # never the password
    return DatabaseUnavailable(f"cannot use the database {where}: {cause}")


@contextmanager
def _database(config: Path | None, database_url: str | None, data_dir: str | None) -> Iterator[Database]:
    """The coordinator's database, as its settings say; exit 1 with one line if it cannot be used."""
    from sqlalchemy.exc import DBAPIError

    from iris_haas.store.db import Database

    settings = _settings(config, database_url=database_url, data_dir=data_dir)
    db = Database(settings.resolved_database_url())
    try:
        yield db
    except DBAPIError as e:
        raise fail(_unreachable(settings, e), EXIT_ERROR) from None
    finally:
        db.dispose()


def _schema_row(s) -> dict:
    return {"revision": s.current, "head": s.head, "state": s.state, "status": s.describe()}


@db_app.command("current")
def db_current(config: ConfigOpt = None, database_url: DatabaseUrl = None, data_dir: DataDir = None,
               fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """Show the database's schema revision beside this Iris's newest (state: empty, current, behind, ahead,
    foreign)."""
    with _database(config, database_url, data_dir) as db:
        s = db.schema()
    table([_schema_row(s)], ["revision", "head", "state", "status"], title="database schema",
          out=Out.of(fmt, column, as_json), one=True)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, database_url: DatabaseUrl = None, data_dir: DataDir = None,
               to: Annotated[str, typer.Option(help="an Alembic revision to stop at (default: the newest)")] = "head"):
    """Upgrade the database's schema (Alembic; back the database up first). Idempotent."""
    from alembic.util import CommandError

    from iris_haas.store.db import SchemaState

    with _database(config, database_url, data_dir) as db:
        before = db.schema()
        if before.state in (SchemaState.AHEAD, SchemaState.FOREIGN):
            raise fail(ConfigError(f"database schema {before.describe()}"), EXIT_SCHEMA)
        try:
            db.migrate(to)
        except CommandError as e:
            raise fail(ConfigError(f"--to {to}: {e}"), EXIT_USAGE) from None
        after = db.schema()
    if before.current == after.current:
        console.print(f"database schema already at {after.current}")
    else:
        console.print(f"database schema upgraded from {before.current or 'nothing'} to {after.current}")


# ------------------------------------------------------------------ the agents' CA (admin, on the coordinator)
ca_app = typer.Typer(help="The CA of the control channel: the coordinator's and the hosts' certificates.",
                     no_args_is_help=True)
app.add_typer(ca_app, name="ca")
CaDir = Annotated[Path | None, typer.Option("--dir", envvar="IRIS_CA_DIR", help="the CA's directory; default "
                                            "<data dir>/ca")]


def _ca_dir(given: Path | None) -> Path:
    return given or Path(_settings(None).data_dir) / "ca"


def _pki(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except IrisError as e:
        raise fail(e, EXIT_ERROR) from None


@ca_app.command("init")
def ca_init(ca_dir: CaDir = None,
            force: Annotated[bool, typer.Option(help="replace an existing CA (every host must be enrolled again)")] = False):
    """Make the CA and the coordinator's client certificate (the coordinator's IRIS_AGENT_TLS_DIR)."""
    from iris_haas.control import pki

    d = _ca_dir(ca_dir)
    _pki(pki.init_ca, d, overwrite=force)
    console.print(f"CA and coordinator certificate in {d}; run the coordinator with IRIS_AGENT_TLS_DIR={d}")


def agent_enroll(
    host: Annotated[str, typer.Argument(help="the host's name, as registered (a node's or a gateway's)")],
    out: Annotated[Path | None, typer.Option(help="where its three files go; default ./HOST-tls")] = None,
    ca_dir: Annotated[Path | None, typer.Option("--ca-dir", envvar="IRIS_CA_DIR", help="the CA's directory; default "
                                                "<data dir>/ca")] = None,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None,
):
    """Issue a host its key and certificate (again: rotation); its agent runs with --tls-dir on them."""
    from iris_haas.control import pki

    d = out or Path(f"{host}-tls")
    cert = _pki(pki.enroll_host, _ca_dir(ca_dir), host, d)
    o = Out.of(fmt, column)
    if o.table:
        console.print(f"{host}: certificate {cert.serial_number:x} until {cert.not_valid_after_utc:%Y-%m-%d} in "
                      f"{d}; copy host.key, host.crt and ca.crt to the host and run `iris agent run --tls-dir DIR`")
        return
    table([{"host": host, "serial": f"{cert.serial_number:x}", "not_after": cert.not_valid_after_utc.isoformat(),
            "dir": str(d)}], ["host", "serial", "not_after", "dir"], out=o, one=True)


# ------------------------------------------------------------------ inventory (admin)
def _inventory(name: str, path: str, columns: list[str], help_: str) -> typer.Typer:
    sub = typer.Typer(help=help_, no_args_is_help=True)

    @sub.command("list")
    def list_(fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
        table(call(lambda c: c.get(f"/{path}")), columns, title=path, out=Out.of(fmt, column, as_json))

    @sub.command("show")
    def show_(item: str, fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
        table([call(lambda c: c.get(f"/{path}/{item}"))], columns, out=Out.of(fmt, column, as_json), one=True)

    @sub.command("rm")
    def rm_(item: str):
        call(lambda c: c.delete(f"/{path}/{item}"))
        console.print(f"removed {name} {item}")

    app.add_typer(sub, name=name)
    return sub


site_app = _inventory("site", "sites", ["id", "name", "kind", "gateway_underlay", "vlans", "mgmt_vlan", "service_model"],
                      "Sites: the HaaS data center (admin) or your IaaS data center (tenant).")
node_app = _inventory("node", "nodes", ["id", "name", "site_id", "cpus", "memory_mb", "disk_gb", "l1_kinds", "state"],
                      "L0 nodes of the HaaS data center (admin).")
gw_app = _inventory("gateway", "gateways", ["id", "name", "site_id", "underlay_address", "agent_url"],
                    "Gateways ending the inter-DC tunnels (admin).")
link_app = _inventory("link", "links", ["id", "name", "kind", "site_a_id", "site_b_id", "capacity_mbps", "nsi_provider"],
                      "Inter-DC links and their capacity (admin).")
pool_app = _inventory("pool", "storage-pools", ["id", "name", "site_id", "capacity_gb"], "Storage pools (admin).")
tenant_app = _inventory("tenant", "tenants", ["id", "name"], "Tenants: IaaS operators (admin).")
IMAGE_COLUMNS = ["id", "name", "l1_kind", "path", "digest", "description"]
image_app = _inventory("image", "images", IMAGE_COLUMNS, "OS images an L1 boots (admin adds and removes; tenants "
                       "list them and name one in --image).")


def _created(kind: str, body: dict, columns: list[str], path: str, out: Out) -> dict:
    got = call(lambda c: c.post(f"/{path}", body))
    table([got], columns, title=f"{kind} added", out=out, one=True)
    return got


@site_app.command("add")
def site_add(
    name: str,
    gateway_underlay: Annotated[str | None, typer.Option(help="tenant: your gateway's underlay address")] = None,
    vlans: Annotated[str, typer.Option(help="tenant: VLAN IDs your IaaS uses")] = "1-4094",
    mgmt_vlan: Annotated[int, typer.Option(help="tenant: management VLAN (native on each L1's NIC)")] = 101,
    service_model: Annotated[ServiceModel, typer.Option(help="tenant: a (node in your L2), b (pod) or c (routed)")] = (
        ServiceModel.NODE),
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Admin: register a HaaS site (name only). Tenant: register your IaaS site (with --gateway-underlay)."""
    body: dict[str, Any] = {"name": name}
    if gateway_underlay:
        body |= {"gateway_underlay": gateway_underlay, "vlans": vlans, "mgmt_vlan": mgmt_vlan,
                 "service_model": service_model}
    _created("site", body, ["id", "name", "kind", "gateway_underlay", "vlans", "mgmt_vlan", "service_model"], "sites",
             Out.of(fmt, column, as_json))


@node_app.command("add")
def node_add(
    name: str,
    site: Annotated[str, typer.Option()],
    cpus: Annotated[int, typer.Option()],
    memory_mb: Annotated[int, typer.Option()],
    disk_gb: Annotated[int, typer.Option()],
    l1_kinds: Annotated[str, typer.Option(help="comma-separated: lxc,kvm,netns")] = "lxc,kvm,netns",
    underlay_address: Annotated[str | None, typer.Option(help="its address on the HaaS data fabric: the tenants' "
                                                         "tunnels end here (without it, no L1 of it is wired)")] = None,
    agent_url: Annotated[str | None, typer.Option(help="its agent, https://ADDRESS:PORT on the control network")] = None,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Register an L0 node."""
    try:
        kinds = [L1Kind(k) for k in l1_kinds.split(",") if k]
    except ValueError:
        raise typer.BadParameter(f"{l1_kinds!r}: L1 kinds are {', '.join(L1Kind)}", param_hint="--l1-kinds") from None
    _created("node", {"name": name, "site": site, "cpus": cpus, "memory_mb": memory_mb, "disk_gb": disk_gb,
                      "l1_kinds": kinds, "underlay_address": underlay_address, "agent_url": agent_url},
             ["id", "name", "site_id", "cpus", "memory_mb", "disk_gb", "l1_kinds", "state"], "nodes",
             Out.of(fmt, column, as_json))


@node_app.command("set-state")
def node_set_state(name: str, state: Annotated[NodeState, typer.Argument(help="available, maintenance or down")],
                   fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """Set a node's state; `down` ends (Failed) the reservations that have an L1 on it."""
    got = call(lambda c: c.patch(f"/nodes/{name}", {"state": state}))
    o = Out.of(fmt, column, as_json)
    if o.table and not o.columns:
        console.print(f"node {got['name']} is {got['state']}")
    else:
        table([got], ["name", "state"], out=o, one=True)


@gw_app.command("add")
def gateway_add(
    name: str,
    site: Annotated[str, typer.Option()],
    underlay_address: Annotated[str, typer.Option(help="public address: the inter-DC tunnels end here")],
    fabric_address: Annotated[str | None, typer.Option(help="its address on the HaaS data fabric (the L0s' "
                                                       "tunnels end here)")] = None,
    uplink: Annotated[str, typer.Option(help="its interface towards the internet (per-tenant limits apply "
                                        "here)")] = "eth0",
    agent_url: Annotated[str | None, typer.Option(help="its agent, https://ADDRESS:PORT")] = None,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Register a gateway."""
    _created("gateway", {"name": name, "site": site, "underlay_address": underlay_address,
                         "fabric_address": fabric_address, "uplink": uplink, "agent_url": agent_url},
             ["id", "name", "site_id", "underlay_address"], "gateways", Out.of(fmt, column, as_json))


@image_app.command("add")
def image_add(
    name: str,
    path: Annotated[str, typer.Option(help="where the image is on every L0 (lxc: a rootfs directory; under the "
                                      "agents' image roots)")],
    l1_kind: Annotated[L1Kind, typer.Option(help="the L1 kind it boots: lxc or kvm")] = L1Kind.LXC,
    digest: Annotated[str | None, typer.Option(help="its content digest (iris image build prints it)")] = None,
    description: Annotated[str, typer.Option()] = "",
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Register an OS image that compute items may name."""
    body: dict[str, Any] = {"name": name, "l1_kind": l1_kind, "path": path, "description": description}
    if digest:
        body["digest"] = digest
    _created("image", body, IMAGE_COLUMNS, "images", Out.of(fmt, column, as_json))


@image_app.command("build")
def image_build(
    data_dir: DataDir = None,
    into: Annotated[Path | None, typer.Option(help="the image cache (default DATA_DIR/images); images are "
                                              "DIGEST/rootfs there")] = None,
    suite: Annotated[str, typer.Option(help="the Debian suite")] = "bookworm",
    mirror: Annotated[str | None, typer.Option(help="the Debian mirror; default: this machine's apt mirror for "
                                               "the suite")] = None,
    package: Annotated[list[str] | None, typer.Option(help="a further package (repeat)")] = None,
    iaas_stack: Annotated[bool, typer.Option(help="add openvswitch-switch and qemu-system-x86 (large)")] = False,
    kind: Annotated[L1Kind, typer.Option(help="lxc: a rootfs directory; kvm: that rootfs as an ext4 disk")] = (
        L1Kind.LXC),
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Build an OS image on this machine (root, debootstrap): Debian with openssh-server and
    iproute2, cached by content (the same inputs are built once). Register it with `iris image add`."""
    from iris_haas.hostd import images

    pkgs = [*images.PACKAGES, *(images.IAAS_STACK if iaas_stack else ()), *(package or [])]
    spec = images.inputs(kind=kind.value, suite=suite, packages=pkgs, mirror=mirror or images.apt_mirror(suite))
    root = into or Path(data_dir or _settings(None).data_dir) / "images"
    count = {"got": 0}

    def progress(line: str) -> None:
        if line.startswith("I: Retrieving "):
            count["got"] += 1
        if line.startswith(("I: Retrieving ", "I: Extracting ", "I: Unpacking ", "I: Configuring ")) and (
                not line.startswith(("I: Retrieving ", "I: Extracting ")) or count["got"] % 20 == 0):
            err.print(f"[dim]{escape(line[3:])}[/dim]", highlight=False, soft_wrap=True)
        elif line.startswith(("W:", "E:", "I: Making")) or "Base system installed" in line:
            err.print(escape(line), highlight=False, soft_wrap=True)

    t0 = datetime.now(UTC)
    if not images.cached(root, spec):
        err.print(f"image {images.digest(spec)[:12]}: debootstrap {suite} from {spec['mirror']} with "
                  f"{', '.join(spec['packages'])}", highlight=False, soft_wrap=True)
    try:
        rootfs, built = images.build(root, spec, progress)
    except (IrisError, OSError) as e:
        raise fail(e, EXIT_ERROR) from None
    row = {"path": str(rootfs), "digest": images.digest(spec), "built": built,
           "seconds": round((datetime.now(UTC) - t0).total_seconds(), 1), "packages": spec["packages"]}
    table([row], ["path", "digest", "built", "seconds"], title="image", out=Out.of(fmt, column, as_json), one=True)


@link_app.command("add")
def link_add(name: str, site_a: Annotated[str, typer.Option()], site_b: Annotated[str, typer.Option()],
             capacity_mbps: Annotated[int, typer.Option()],
             nsi_provider: Annotated[str | None, typer.Option(help="an NSI link: the provider's SOAP endpoint")] = None,
             nsi_provider_nsa: Annotated[str | None, typer.Option(help="its NSA id (urn:ogf:network:...)")] = None,
             source_stp: Annotated[str | None, typer.Option(help="the STP at site-a, with ?vlan=A-B")] = None,
             dest_stp: Annotated[str | None, typer.Option(help="the STP at site-b, with ?vlan=A-B")] = None,
             service_type: Annotated[str | None, typer.Option(help="the provider's service type (default "
                                                                   "EVTS.A-GOLE)")] = None,
             fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """Register an inter-DC link: bandwidth Iris books, or (with --nsi-provider) a circuit an NSI
    CS 2.0 provider reserves for each reservation between the two STPs."""
    body: dict = {"name": name, "site_a": site_a, "site_b": site_b, "capacity_mbps": capacity_mbps}
    if nsi_provider is not None:
        body |= {"kind": "nsi", "nsi_provider": nsi_provider, "nsi_provider_nsa": nsi_provider_nsa,
                 "source_stp": source_stp, "dest_stp": dest_stp}
        if service_type is not None:
            body["service_type"] = service_type
    _created("link", body, ["id", "name", "kind", "site_a_id", "site_b_id", "capacity_mbps", "source_stp", "dest_stp"],
             "links", Out.of(fmt, column, as_json))


@pool_app.command("add")
def pool_add(
    name: str,
    site: Annotated[str, typer.Option()],
    capacity_gb: Annotated[int, typer.Option()],
    host: Annotated[str | None, typer.Option(help="the L0 whose agent serves the pool (without it, no volume "
                                             "of it is created)")] = None,
    path: Annotated[str | None, typer.Option(help="the pool's directory on that host (under the agent's "
                                             "--pool-root)")] = None,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Register a storage pool."""
    _created("pool", {"name": name, "site": site, "capacity_gb": capacity_gb, "host": host, "path": path},
             ["id", "name", "site_id", "capacity_gb", "host", "path"], "storage-pools", Out.of(fmt, column, as_json))


TokenTtl = Annotated[str | None, typer.Option("--token-ttl", help="the token expires after this long (90d, 12h); "
                                             "default: valid until rotated")]


@tenant_app.command("add")
def tenant_add(name: str, token_ttl: TokenTtl = None,
               tunnel_key: Annotated[int | None, typer.Option(help="GRE key of the tenant's overlay and trunk, the "
                                                               "one its IaaS gateway uses; default: assigned")] = None,
               fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """Create a tenant and print its API token (shown once: `-f value -c token` prints only the token)."""
    body = ({"name": name} | ({"token_ttl_s": _seconds(token_ttl)} if token_ttl else {})
            | ({"tunnel_key": tunnel_key} if tunnel_key is not None else {}))
    o = Out.of(fmt, column, as_json)
    got = _created("tenant", body, ["id", "name", "tunnel_key", "token", "token_expires_at"], "tenants", o)
    if o.table:
        console.print(f"give the tenant its token: IRIS_TOKEN={got['token']}")


@tenant_app.command("rotate-token")
def tenant_rotate_token(name: str, token_ttl: TokenTtl = None,
                        fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """Issue the tenant a new token (printed once); the old one stops working at once."""
    params = {"ttl_s": _seconds(token_ttl)} if token_ttl else None
    got = call(lambda c: c.post(f"/tenants/{name}/token", None, params=params))
    table([got], ["id", "name", "token", "token_expires_at"], title="token rotated", out=Out.of(fmt, column, as_json),
          one=True)


# ------------------------------------------------------------------ reservations (tenant)
RES_COLUMNS = ["id", "version", "reservation_state", "provision_state", "lifecycle_state", "data_plane_active",
               "start", "end"]


def show_reservation(r: dict, out: Out) -> None:
    if not out.table or out.columns:
        table([r], RES_COLUMNS, out=out, one=True)
        return
    console.print(f"reservation [bold]{r['id']}[/bold]", soft_wrap=True)
    t = Table(show_header=False)
    for k in ["description", "version", "committed_version", "reservation_state", "provision_state",
              "lifecycle_state", "data_plane_active", "start", "end", "hold_expires_at"]:
        t.add_row(k, cell(r.get(k)))
    console.print(t)
    items = Table(title="items")
    for c in ["#", "kind", "what"]:
        items.add_column(c)
    for i, it in enumerate(r["items"]):
        what = ", ".join(f"{k}={v}" for k, v in it.items() if k != "kind" and v is not None)
        items.add_row(str(i), it["kind"], what)
    console.print(items)
    if r.get("resources"):
        res = Table(title="resources")
        for c in ["item", "manager", "status", "version", "where"]:
            res.add_column(c)
        for a in r["resources"]:
            where = ", ".join(f"{k}={a[k]}" for k in ("node", "l1", "l1_kind", "link", "pool", "volume") if k in a)
            res.add_row(str(a["item"]), a["manager"], a["status"], str(a["version"]), where)
        console.print(res)


def _when(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("+"):
        from datetime import timedelta

        return (datetime.now(UTC) + timedelta(seconds=_seconds(value[1:]))).isoformat()
    return value


def _seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 90, 90s, 10m, 2h or 1d") from None


@app.command()
def reserve(
    duration: Annotated[str | None, typer.Option(help="length, e.g. 10m, 2h (or give --end)")] = None,
    start: Annotated[str | None, typer.Option(help="ISO 8601 or +10m; default now")] = None,
    end: Annotated[str | None, typer.Option(help="ISO 8601 or +2h")] = None,
    nodes: Annotated[int, typer.Option(help="number of L1 nodes (0 for none)")] = 0,
    kind: Annotated[L1Kind, typer.Option(help="L1 kind: lxc, kvm or netns")] = L1Kind.LXC,
    cpus: Annotated[int, typer.Option()] = 1,
    memory_mb: Annotated[int, typer.Option()] = 1024,
    disk_gb: Annotated[int, typer.Option()] = 10,
    bandwidth: Annotated[int, typer.Option(help="Mb/s between your site and the HaaS site (0 for none)")] = 0,
    storage_gb: Annotated[int, typer.Option(help="a volume of this size (0 for none)")] = 0,
    site: Annotated[str | None, typer.Option(help="the HaaS site, if there are several")] = None,
    address: Annotated[list[str] | None, typer.Option(help="an L1's management address (CIDR), once per L1; "
                                                          "none: DHCP from your side")] = None,
    ssh_key_file: Annotated[Path | None, typer.Option(help="your public SSH key, put into each L1")] = None,
    image: Annotated[str | None, typer.Option(help="the L1s' OS image (iris image list); default: a small "
                                              "built-in one without SSH")] = None,
    export_address: Annotated[str | None, typer.Option(help="the volume's NFS server address (CIDR) in your subnet")] = None,
    keep: Annotated[bool, typer.Option(help="keep the volume's data at release")] = False,
    service_model: Annotated[ServiceModel | None, typer.Option(help="a (your L2), b (a pod) or c (routed); "
                                                         "default: your site's")] = None,
    routed_subnet: Annotated[str | None, typer.Option(help="model c: the L1s' subnet, e.g. 10.77.0.0/24")] = None,
    router_address: Annotated[str | None, typer.Option(help="model c: the router's address (CIDR) on your "
                                                          "management network")] = None,
    description: Annotated[str, typer.Option()] = "",
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Reserve compute, bandwidth and storage for an interval (held until commit, abort or the hold timeout)."""
    items: list[dict] = []
    if nodes:
        compute: dict[str, Any] = {"kind": "compute", "count": nodes, "l1_kind": kind, "cpus": cpus,
                                   "memory_mb": memory_mb, "disk_gb": disk_gb, "addresses": address or []}
        if image:
            compute["image"] = image
        if ssh_key_file:
            try:
                compute["ssh_key"] = ssh_key_file.read_text().strip()
            except OSError as e:
                raise typer.BadParameter(f"cannot read {ssh_key_file}: {e.strerror}") from None
        items.append(compute)
    if bandwidth:
        items.append({"kind": "network", "bandwidth_mbps": bandwidth})
    if storage_gb:
        items.append({"kind": "storage", "size_gb": storage_gb, "export_address": export_address, "keep": keep})
    if not items:
        raise typer.BadParameter("ask for something: --nodes, --bandwidth or --storage-gb")
    body: dict[str, Any] = {"items": items, "description": description, "start": _when(start), "end": _when(end),
                            "site": site, "service_model": service_model}
    if routed_subnet or router_address:
        body["routing"] = {"subnet": routed_subnet, "iaas_address": router_address}
    if duration:
        body["duration_s"] = _seconds(duration)
    show_reservation(call(lambda c: c.post("/reservations", body)), Out.of(fmt, column, as_json))


WORKING = {
    "provision": "provisioning: every agent creates and wires its L1s, volumes and tunnels",
    "release": "releasing: the agents take the data plane down",
    "terminate": "terminating: the agents remove everything",
}


def _message(name: str, doc: str):
    def command(reservation_id: str, fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
        with err.status(WORKING.get(name, name)):
            got = call(lambda c: c.post(f"/reservations/{reservation_id}/{name}"))
        show_reservation(got, Out.of(fmt, column, as_json))

    command.__doc__ = doc
    app.command(name)(command)


_message("commit", "Commit the held version of a reservation.")
_message("abort", "Abort the held version of a reservation.")
_message("provision", "Provision: activate the data plane (from the start time on).")
_message("release", "Release the data plane; the reservation stays.")
_message("terminate", "Terminate a reservation and free everything.")


@app.command()
def modify(
    reservation_id: str,
    version: Annotated[int, typer.Option(help="the new version (higher than the current)")],
    end: Annotated[str | None, typer.Option(help="new end, ISO 8601 or +2h")] = None,
    nodes: Annotated[int | None, typer.Option(help="new number of L1 nodes")] = None,
    bandwidth: Annotated[int | None, typer.Option(help="new bandwidth, Mb/s")] = None,
    storage_gb: Annotated[int | None, typer.Option(help="new volume size")] = None,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Modify a committed reservation (held as a new version until commit)."""
    body = {"version": version, "end": _when(end), "count": nodes, "bandwidth_mbps": bandwidth, "size_gb": storage_gb}
    show_reservation(call(lambda c: c.post(f"/reservations/{reservation_id}/modify",
                                           {k: v for k, v in body.items() if v is not None})),
                     Out.of(fmt, column, as_json))


@app.command()
def show(reservation_id: str, fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """Show a reservation, its items and the resources it holds."""
    show_reservation(call(lambda c: c.get(f"/reservations/{reservation_id}")), Out.of(fmt, column, as_json))


@app.command("list")
def list_(fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False):
    """List reservations (a tenant sees its own; the admin sees all)."""
    table(call(lambda c: c.get("/reservations")), RES_COLUMNS, title="reservations", out=Out.of(fmt, column, as_json))


def _what(r: dict, out: Out) -> dict:
    """The event with a one-line summary, ``what``, for a person (json and yaml print the API's event)."""
    if out.fmt in (OutputFormat.JSON, OutputFormat.YAML) and "what" not in out.columns:
        return r
    d = r["detail"]
    r["what"] = (f"{d['machine']}: {d['from']} -> {d['to']} ({d['event']})" if r["type"] == "transition"
                 else ", ".join(f"{k}={v}" for k, v in d.items()))
    return r


@app.command()
def events(
    reservation_id: Annotated[str | None, typer.Argument(help="one reservation's events; default: all you may see")] = None,
    after: Annotated[int, typer.Option(help="only events after this cursor (the first column)")] = 0,
    follow: Annotated[bool, typer.Option(help="go on printing new events as they come (Ctrl-C stops); -f json "
                                         "prints one object a line")] = False,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """Events: transitions, reserveTimeout, errorEvent, dataPlaneStateChange, endingSoon. A tenant
    sees its own reservations', the admin everyone's; --follow streams them (resuming by cursor)."""
    out = Out.of(fmt, column, as_json)
    if reservation_id is not None:
        rows = [_what(r, out) for r in call(lambda c: c.get(f"/reservations/{reservation_id}/events"))]
        table(rows, ["at", "type", "what"], title=f"events of {reservation_id}", out=out)
        return
    columns = ["cursor", "at", "reservation_id", "type", "what"]
    if not follow:
        rows = [_what(r, out) for r in call(lambda c: c.get("/events", params={"after": after, "limit": 1000})["events"])]
        table(rows, columns, title="events", out=out)
        return

    def stream(c: Client) -> None:
        for r in c.follow(after):
            emit_line(_what(r, out), columns, out)

    try:
        call(stream)
    except KeyboardInterrupt:
        pass


@app.command()
def availability(
    duration: Annotated[str, typer.Option(help="how long, e.g. 2h")],
    nodes: Annotated[int, typer.Option()] = 1,
    kind: Annotated[L1Kind, typer.Option(help="L1 kind: lxc, kvm or netns")] = L1Kind.LXC,
    cpus: Annotated[int, typer.Option()] = 1,
    memory_mb: Annotated[int, typer.Option()] = 1024,
    disk_gb: Annotated[int, typer.Option()] = 10,
    bandwidth: Annotated[int, typer.Option()] = 0,
    storage_gb: Annotated[int, typer.Option()] = 0,
    not_before: Annotated[str | None, typer.Option(help="ISO 8601 or +1h")] = None,
    fmt: Fmt = OutputFormat.TABLE, column: Cols = None, as_json: AsJson = False,
):
    """When, and how much: the earliest window in which the request fits."""
    params = {"duration_s": _seconds(duration), "count": nodes, "l1_kind": kind, "cpus": cpus,
              "memory_mb": memory_mb, "disk_gb": disk_gb, "bandwidth_mbps": bandwidth, "size_gb": storage_gb}
    if not_before:
        params["not_before"] = _when(not_before)
    out = call(lambda c: c.get("/availability", params=params))
    table([out], ["start", "end", "count_fit", "bandwidth_free_mbps", "storage_free_gb"], title="earliest window",
          out=Out.of(fmt, column, as_json), one=True)


def _register_optional() -> None:
    """Sub-commands of the data-plane parts, when present."""
    try:
        from iris_haas.lab.cli import app as lab_app

        app.add_typer(lab_app, name="lab", help="The two-DC lab: up, down, status.")
    except ImportError:
        pass
    try:
        from iris_haas.agent.cli import agent

        agent_app = typer.Typer(help="The per-host agent: run it; enrol a host.", no_args_is_help=True)
        agent_app.command("run")(agent)
        agent_app.command("enroll")(agent_enroll)
        app.add_typer(agent_app, name="agent")
    except ImportError:
        pass
    try:
        from iris_haas.lab.cli import gateway_config

        app.command("gateway-config")(gateway_config)
    except ImportError:
        pass


@app.command()
def demo(
    control_plane_only: Annotated[bool, typer.Option(help="only the coordinator's scenario (no lab, no root)")] = False,
    quick: Annotated[bool, typer.Option(help="shorter measurements")] = False,
    out: Annotated[str, typer.Option(help="where report.json and the charts go")] = ".",
):
    """Run Iris's main job end to end: SQLite and the two-DC lab (as root); report.json and charts."""
    import os

    if control_plane_only:
        from iris_haas.demo.control import run

        raise typer.Exit(run(console, out=Path(out)))
    if os.geteuid() != 0:
        err.print("[red]error[/red] the demo builds the two-DC lab (namespaces, Open vSwitch): run it as root, "
                  "or use --control-plane-only")
        raise typer.Exit(2)
    from iris_haas.demo.lab import run as run_lab

    raise typer.Exit(run_lab(console, out=Path(out), quick=quick))


_register_optional()
