"""What an operator relies on: output formats and columns, --version, profiles and their precedence,
configuration files refused with the bad key named, the database schema's upgrade, JSON logs, and
matplotlib staying optional."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import iris_haas
from iris_haas.api.service import LocalCoordinator, build
from iris_haas.cli.main import app
from iris_haas.cli.profiles import DEFAULT_URL, Profile, resolve
from iris_haas.contract.config import ConfigError
from iris_haas.contract.logs import JsonFormatter
from iris_haas.control.settings import Settings
from iris_haas.store.db import Database, SchemaError, SchemaState

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
EARLIER = "0004"  # an Alembic revision before the newest


@pytest.fixture(autouse=True)
def _root_logger():
    """`iris serve` sets up this process's logging, as a daemon does: put back pytest's afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def iris(*args: str, env: dict | None = None, code: int = 0):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "IRIS_PROFILE": "", "IRIS_API_URL": "",
                                                      "IRIS_TOKEN": "", **(env or {})})
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    with LocalCoordinator(tmp_path_factory.mktemp("coord")) as c:
        yield c


def test_version():
    out = iris("--version").stdout
    assert out == f"iris {iris_haas.__version__}\n"
    with open(ROOT / "pyproject.toml", "rb") as f:  # one version: the package's
        assert iris_haas.__version__ == tomllib.load(f)["project"]["version"]


def test_formats_and_columns(coord):
    admin = ["--url", coord.url, "--token", coord.admin_token]
    # the documented one-liner: the token alone, nothing else on stdout
    token = iris(*admin, "tenant", "add", "fmt-a", "-f", "value", "-c", "token").stdout.strip()
    assert len(token) >= 40 and " " not in token
    with coord.client(token) as c:
        assert c.get("/reservations") == []
    iris(*admin, "site", "add", "fmt-haas")
    iris(*admin, "node", "add", "fmt-l0", "--site", "fmt-haas", "--cpus", "4", "--memory-mb", "8192", "--disk-gb",
         "100", "--l1-kinds", "lxc,netns")
    nodes = json.loads(iris(*admin, "node", "list", "-f", "json").stdout)
    assert [n["name"] for n in nodes] == ["fmt-l0"] and nodes[0]["l1_kinds"] == ["lxc", "netns"]
    assert json.loads(iris(*admin, "node", "list", "--json").stdout) == nodes  # the old spelling
    assert yaml.safe_load(iris(*admin, "node", "list", "-f", "yaml").stdout) == nodes
    # columns in the order asked, any field of the answer, a list as a,b
    assert iris(*admin, "node", "list", "-f", "value", "-c", "l1_kinds", "-c", "name").stdout == "lxc,netns fmt-l0\n"
    one = json.loads(iris(*admin, "node", "show", "fmt-l0", "-f", "json", "-c", "name", "-c", "cpus").stdout)
    assert one == {"name": "fmt-l0", "cpus": 4}
    table = iris(*admin, "node", "list", "-c", "name", "-c", "state").stdout
    assert "fmt-l0" in table and "available" in table and "memory_mb" not in table

    tenant = ["--url", coord.url, "--token", token]
    rid = iris(*tenant, "reserve", "--duration", "10m", "--nodes", "1", "-f", "value", "-c", "id").stdout.strip()
    assert len(rid) == 32
    assert iris(*tenant, "show", rid, "-f", "value", "-c", "reservation_state").stdout == "ReserveHeld\n"
    assert iris(*tenant, "commit", rid, "-f", "value", "-c", "version", "-c", "reservation_state").stdout == (
        "1 ReserveStart\n")
    listed = yaml.safe_load(iris(*tenant, "list", "-f", "yaml").stdout)
    assert [r["id"] for r in listed] == [rid]
    events = iris(*tenant, "events", rid, "-f", "value", "-c", "type").stdout.split()
    assert events[:2] == ["transition", "transition"]
    avail = json.loads(iris(*tenant, "availability", "--duration", "1h", "-f", "json").stdout)
    assert avail["count_fit"] >= 0

    # a column no row has, and a format that does not exist: usage errors naming them
    bad = iris(*admin, "node", "list", "-c", "nmae", code=2)
    assert "'nmae' is not a column" in bad.output and "name" in bad.output
    bad = iris(*admin, "node", "list", "-f", "xml", code=2)
    assert "xml" in bad.output and "table" in bad.output
    # an API error is still one line and exit 1, whatever the format
    bad = iris(*tenant, "commit", rid, "-f", "json", code=1)
    assert "IllegalTransition" in bad.output


def _config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_profiles_and_precedence(coord, tmp_path):
    good, bad = coord.admin_token, "not-a-token"
    cfg = _config(tmp_path, f'[profiles.lab]\nurl = "{coord.url}"\ntoken = "{good}"\n'
                            f'[profiles.stale]\nurl = "{coord.url}"\ntoken = "{bad}"\n')
    env = {"IRIS_CONFIG": str(cfg)}
    assert "sites" in iris("--profile", "lab", "site", "list", env=env).stdout
    assert "sites" in iris("site", "list", env=env | {"IRIS_PROFILE": "lab"}).stdout
    # the profile's token is wrong: the environment's wins over it, and a flag over the environment
    assert "Unauthorized" in iris("--profile", "stale", "site", "list", env=env, code=1).output
    iris("--profile", "stale", "site", "list", env=env | {"IRIS_TOKEN": good})
    iris("--profile", "lab", "--token", good, "site", "list", env=env | {"IRIS_TOKEN": bad})
    assert "Unauthorized" in iris("--profile", "lab", "site", "list", env=env | {"IRIS_TOKEN": bad}, code=1).output
    # without a profile, no file is read: the defaults
    assert resolve(None, None, None, None).url == DEFAULT_URL
    assert resolve("http://a:1", None, None, Profile(url="http://b:2", token="t")) == resolve(
        "http://a:1", "t", None, None)

    # what cannot be used: exit 2, naming it
    out = iris("--profile", "prod", "site", "list", env=env, code=2).output
    assert "no [profiles.prod]" in out and "lab, stale" in out
    out = iris("--profile", "lab", "site", "list", env={"IRIS_CONFIG": str(tmp_path / "none.toml")}, code=2).output
    assert "none.toml" in out
    _config(tmp_path, '[profiles.lab]\nurl = "ftp://x"\n')
    assert "profiles.lab.url" in iris("--profile", "lab", "list", env=env, code=2).output
    _config(tmp_path, '[profiles.lab]\ntokn = "x"\n')
    assert "'profiles.lab.tokn'" in iris("--profile", "lab", "list", env=env, code=2).output
    _config(tmp_path, '[profiles.lab\n')
    assert "not valid TOML" in iris("--profile", "lab", "list", env=env, code=2).output
    # a relative ca_file is the file's neighbour; a file others can read is named in a warning
    _config(tmp_path, f'[profiles.lab]\nurl = "{coord.url}"\ntoken = "{good}"\nca_file = "missing-ca.crt"\n', 0o644)
    out = iris("--profile", "lab", "list", env=env, code=2).output
    assert str(tmp_path / "missing-ca.crt") in out and "chmod 600" in out


def test_the_coordinators_settings_file(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("IRIS_"):
            monkeypatch.delenv(k)
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\nport = 9000\nhold_timeout_s = 30\nlog_format = "json"\n')
    s = Settings.load(cfg)
    assert (s.port, s.hold_timeout_s, s.log_format, s.data_dir) == (9000, 30.0, "json", tmp_path)
    monkeypatch.setenv("IRIS_PORT", "9100")
    assert Settings.load(cfg).port == 9100  # the environment over the file
    assert Settings.load(cfg, port=9200).port == 9200  # a flag over both
    for text, named in [("prot = 1\n", "unknown key 'prot' (did you mean 'port'?)"),
                        ("port = 70000\n", "port: Input should be less than or equal to 65535"),
                        ('log_format = "xml"\n', "log_format"),
                        ("hold_timeout_s = 0\n", "hold_timeout_s"),
                        ("port = \n", "not valid TOML")]:
        cfg.write_text(text)
        with pytest.raises(ConfigError) as e:
            Settings.load(cfg)
        assert str(cfg) in e.value.message and named in e.value.message
        # `iris serve` stops there: exit 2, one line, nothing started
        out = iris("serve", "--config", str(cfg), code=2).output
        assert named in out
    monkeypatch.setenv("IRIS_PORT", "eighty")
    with pytest.raises(ConfigError, match="environment: IRIS_PORT"):
        Settings.load(None)


def test_the_agents_config_file(tmp_path):
    cfg = tmp_path / "agent.toml"
    for text, named in [("tls_dri = '/etc/iris/tls'\n", "unknown key 'tls_dri' (did you mean 'tls_dir'?)"),
                        ("datapath_type = 'kernel'\n", "datapath_type"),
                        ("port = 0\n", "port"),
                        ("host_device = ['eth1', 'a-name-far-too-long']\n", "host_device.1")]:
        cfg.write_text(text)
        out = iris("agent", "run", "--config", str(cfg), code=2).output
        assert named in " ".join(out.replace("│", " ").split()), out
    from iris_haas.agent.cli import AgentOptions

    cfg.write_text(f"state_dir = '{tmp_path}/state'\ndatapath_type = 'netdev'\nport = 7781\n"
                   "host_device = ['eth1']\nlog_format = 'json'\n")
    o = AgentOptions.load(cfg, port=7790, pool_root=None, host_device=[])
    assert (o.port, o.datapath_type, o.host_device, o.state_dir) == (7790, "netdev", ["eth1"], tmp_path / "state")
    assert o.pool_root == ["/var/lib/iris/pools"] and o.log_format == "json"
    # a good file, but no TLS: the agent still refuses to serve
    out = iris("agent", "run", "--config", str(cfg), code=2).output
    assert "--insecure-http" in out


def _old(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path, database_url=None, admin_token=None, agent_tls_dir=None, agent_token=None)
    db = Database(s.resolved_database_url())
    db.migrate(EARLIER)
    db.dispose()
    return s


def test_db_current_and_upgrade_on_a_fresh_and_an_old_file(tmp_path):
    fresh = ["--data-dir", str(tmp_path / "fresh")]
    row = json.loads(iris("db", "current", *fresh, "-f", "json").stdout)
    assert (row["revision"], row["state"]) == (None, "empty")
    head = row["head"]
    assert iris("db", "upgrade", *fresh).stdout.strip() == f"database schema upgraded from nothing to {head}"
    assert iris("db", "current", *fresh, "-f", "value", "-c", "revision", "-c", "state").stdout == f"{head} current\n"
    assert "already at" in iris("db", "upgrade", *fresh).stdout

    _old(tmp_path / "old")
    old = ["--data-dir", str(tmp_path / "old")]
    assert iris("db", "current", *old, "-f", "value", "-c", "revision", "-c", "state").stdout == f"{EARLIER} behind\n"
    assert f"from {EARLIER} to {head}" in iris("db", "upgrade", *old).stdout
    assert iris("db", "current", *old, "-f", "value", "-c", "state").stdout == "current\n"
    assert "no-such-rev" in iris("db", "upgrade", *old, "--to", "no-such-rev", code=2).output


def test_a_database_that_cannot_be_reached_is_one_line(tmp_path):
    url = f"postgresql+psycopg://iris:s3cret@/iris?host={tmp_path}"  # no server listens there
    for command in (["db", "current"], ["db", "upgrade"], ["serve", "--data-dir", str(tmp_path)]):
        out = iris(*command, "--database-url", url, code=1).output
        assert "ServiceUnavailable: cannot use the database" in out and "s3cret" not in out


def test_serve_refuses_an_old_schema_unless_told(tmp_path):
    s = _old(tmp_path)
    with pytest.raises(SchemaError) as e:
        build(s)
    assert EARLIER in e.value.message and "iris db upgrade" in e.value.message
    db = Database(s.resolved_database_url())
    assert db.schema().state == SchemaState.BEHIND  # refused before anything was written
    db.dispose()
    out = iris("serve", "--data-dir", str(tmp_path), code=3).output
    assert "SchemaError" in out and "--migrate" in out
    _, coordinator = build(s.model_copy(update={"migrate": True}), scheduler=False)
    assert coordinator.db.schema().state == SchemaState.CURRENT
    coordinator.close()
    coordinator.db.dispose()


def test_a_schema_from_a_newer_iris_is_refused_even_with_migrate(tmp_path):
    from sqlalchemy import text

    s = _old(tmp_path)
    db = Database(s.resolved_database_url())
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    assert db.schema().state == SchemaState.AHEAD
    db.dispose()
    with pytest.raises(SchemaError, match="a newer Iris"):
        build(s.model_copy(update={"migrate": True}))
    assert "newer Iris" in iris("db", "upgrade", "--data-dir", str(tmp_path), code=3).output


def test_json_logs_are_one_object_a_line():
    rec = logging.LogRecord("iris.agent", logging.WARNING, __file__, 1, "host %s behind", ("l0-1",), None)
    rec.host = "l0-1"
    try:
        raise ValueError("boom")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line.replace("\\n", "")
    out = json.loads(line)
    assert (out["level"], out["logger"], out["message"], out["host"]) == ("WARNING", "iris.agent", "host l0-1 behind",
                                                                         "l0-1")
    assert out["time"].endswith("+00:00") and "ValueError: boom" in out["exception"]


def test_matplotlib_is_optional(tmp_path, monkeypatch):
    # neither an agent nor the CLI imports it
    code = ("import sys, iris_haas.agent.cli, iris_haas.agent.server, iris_haas.cli.main; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
    # the demo's chart without it: a clear line, no chart, no error
    from rich.console import Console

    from iris_haas.demo.lab import _charts

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    console = Console(record=True, width=200)
    report = {"measured": {"rtt_ms": {"IaaS-IaaS": 0.5}, "goodput_mbps": {"IaaS-IaaS": 900}}, "paper": {}}
    assert _charts(report, tmp_path, console) == []
    assert "pip install 'iris-haas[report]'" in console.export_text()
    assert not (tmp_path / "demo-network.png").exists()


def test_the_example_configuration_files_are_valid(monkeypatch):
    from iris_haas.agent.cli import AgentOptions

    for k in list(os.environ):
        if k.startswith("IRIS_"):
            monkeypatch.delenv(k)
    s = Settings.load(ROOT / "deploy" / "coordinator.toml")
    assert s.database_url.startswith("postgresql+psycopg://") and s.log_format == "json" and not s.migrate
    a = AgentOptions.load(ROOT / "deploy" / "agent.toml")
    assert a.datapath_type == "system" and a.tls_dir is not None


def test_the_systemd_units(tmp_path):
    units = {name: (ROOT / "deploy" / name).read_text() for name in ("iris-coordinator.service", "iris-agent.service")}
    coordinator, agent = units["iris-coordinator.service"], units["iris-agent.service"]
    # the coordinator: no privilege; the agent: root, in the host's own mount namespace, leaving its L1s at stop
    for line in ("User=iris", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "ProtectSystem=strict",
                 "PrivateTmp=yes", "ReadWritePaths=/var/lib/iris/coordinator", "--config /etc/iris/coordinator.toml"):
        assert line in coordinator, line
    assert "User=root" in agent and "KillMode=process" in agent and "--config /etc/iris/agent.toml" in agent
    for option in ("ProtectSystem", "PrivateTmp", "ProtectHome", "ReadWritePaths", "PrivateDevices", "SystemCallFilter"):
        assert f"\n{option}=" not in agent, option
    if shutil.which("systemd-analyze") is None or not Path("/lib/systemd/system/sysinit.target").exists():
        pytest.skip("no systemd here to verify the units with")
    # verified under a root of their own: the host's units, and an executable where each Exec*= expects one
    root = tmp_path / "root"
    for command in {m for text in units.values() for m in re.findall(r"^Exec\w+=(/\S+)", text, re.M)}:
        exe = root / command.lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_operations_md_names_every_key():
    from iris_haas.agent.cli import AgentOptions

    text = (ROOT / "docs" / "operations.md").read_text()
    missing = [k for k in [*Settings.model_fields, *AgentOptions.model_fields] if f"`{k}`" not in text]
    assert not missing, f"docs/operations.md does not describe {missing}"


@pytest.mark.postgresql
def test_coordinators_started_together_on_an_empty_postgresql_database_migrate_it_once(postgres):
    import threading

    name = f"iris_empty_{os.getpid()}"
    admin = Database(postgres.url("postgres"))
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    dbs = [Database(postgres.url(name)) for _ in range(3)]
    try:
        assert dbs[0].schema().state == SchemaState.EMPTY
        errors: list[BaseException] = []

        def start(db: Database) -> None:
            try:
                db.prepare()
            except BaseException as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=start, args=(db,)) for db in dbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [] and all(db.schema().state == SchemaState.CURRENT for db in dbs)
        # an older schema on PostgreSQL is refused the same way
        from sqlalchemy import text

        with dbs[0].engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": EARLIER})
        with pytest.raises(SchemaError, match="iris db upgrade"):
            dbs[1].prepare()
    finally:
        for db in dbs:
            db.dispose()
