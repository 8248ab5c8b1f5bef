"""The `iris` CLI against a real coordinator over HTTP (uvicorn on loopback)."""

from __future__ import annotations

import json
import re
import time

import pytest
import typer
from typer.testing import CliRunner

from iris_haas.api.service import LocalCoordinator
from iris_haas.cli.main import app
from iris_haas.demo.control import run


@pytest.fixture
def server(tmp_path):
    with LocalCoordinator(tmp_path) as c:
        yield c, (tmp_path / "admin-token").read_text().strip()


def iris(url, token, *args, ok=True):
    result = CliRunner().invoke(app, ["--url", url, "--token", token, *args], env={"COLUMNS": "200"})
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def test_admin_and_tenant_workflow(server):
    coord, admin = server
    url = coord.url
    iris(url, admin, "site", "add", "haas")
    for i in range(2):
        iris(url, admin, "node", "add", f"l0-{i}", "--site", "haas", "--cpus", "4", "--memory-mb", "8192",
             "--disk-gb", "100")
    out = iris(url, admin, "tenant", "add", "acme").output
    token = re.search(r"IRIS_TOKEN=(\S+)", out).group(1)
    iris(url, token, "site", "add", "acme-dc", "--gateway-underlay", "198.18.5.1", "--vlans", "100-199")
    iris(url, admin, "link", "add", "inet", "--site-a", "haas", "--site-b", "acme-dc", "--capacity-mbps", "1000")
    assert "l0-1" in iris(url, admin, "node", "list").output

    out = iris(url, token, "reserve", "--duration", "10m", "--nodes", "2", "--cpus", "2", "--bandwidth", "100").output
    rid = re.search(r"reservation ([0-9a-f]{32})", out).group(1)
    assert "ReserveHeld" in out
    assert "ReserveStart" in iris(url, token, "commit", rid).output
    assert "Provisioned" in iris(url, token, "provision", rid).output
    assert "l0-" in iris(url, token, "show", rid).output
    assert rid[:8] in iris(url, token, "list").output
    assert "reserve_ok" in iris(url, token, "events", rid).output
    avail = iris(url, token, "availability", "--duration", "1h", "--nodes", "2", "--cpus", "2").output
    assert "count_fit" in avail
    out = iris(url, token, "modify", rid, "--version", "2", "--bandwidth", "200").output
    assert "ReserveHeld" in out
    iris(url, token, "commit", rid)
    assert "Terminated" in iris(url, token, "terminate", rid).output

    # errors: a clear line, exit 1, no traceback
    bad = iris(url, token, "commit", rid, ok=False)
    assert bad.exit_code == 1 and "IllegalTransition" in bad.output and "Traceback" not in bad.output
    bad = iris(url, token, "node", "list", ok=False)
    assert bad.exit_code == 1 and "Forbidden" in bad.output
    bad = iris(url, token, "reserve", "--duration", "10m", "--nodes", "9", "--cpus", "4", ok=False)
    assert bad.exit_code == 1 and "ReserveFailed" in bad.output
    bad = iris(url, token, "reserve", "--duration", "soon", "--nodes", "1", ok=False)
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    # the service models and addresses from the command line
    out = iris(url, token, "reserve", "--duration", "10m", "--nodes", "1", "--address", "10.77.0.51/24",
               "--service-model", "c", "--routed-subnet", "10.77.0.0/24", "--router-address", "10.0.101.250/24",
               "--json").output
    body = json.loads(out[out.index("{"):])
    assert body["service_model"] == "c" and body["items"][0]["addresses"] == ["10.77.0.51/24"]
    bad = iris(url, token, "reserve", "--duration", "10m", "--nodes", "1", "--service-model", "c", ok=False)
    assert bad.exit_code == 1 and "routing" in bad.output and "Traceback" not in bad.output


def test_help_texts_keep_their_brackets():
    """rich reads ``[...]`` in a help text as markup and drops it unless it is escaped."""
    def walk(cmd, path):
        yield cmd, path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    checked = 0
    for cmd, path in walk(typer.main.get_command(app), []):
        for p in cmd.params:
            for token in re.findall(r"\\?\[[^\]\s]+\]", getattr(p, "help", None) or ""):
                out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
                assert token.lstrip("\\") in out, (path, p.name, token)
                checked += 1
    assert checked  # --profile's [profiles.NAME] at least


def test_unreachable_coordinator_is_a_clear_error():
    bad = iris("http://127.0.0.1:9", "x", "list", ok=False)
    assert bad.exit_code == 1 and "cannot reach the coordinator" in bad.output


def test_control_plane_demo(tmp_path, monkeypatch):
    from rich.console import Console

    monkeypatch.chdir(tmp_path)
    assert run(Console(width=120), out=tmp_path) == 0
    assert (tmp_path / "report.json").exists()


def test_tenant_tokens_with_a_lifetime_and_rotation(server):
    coord, admin = server
    out = iris(coord.url, admin, "tenant", "add", "acme", "--token-ttl", "2h").output
    old = re.search(r"IRIS_TOKEN=(\S+)", out).group(1)
    assert re.search(r"20\d\d-\d\d-\d\d", out), out  # when the token ends
    assert iris(coord.url, old, "list").exit_code == 0
    out = iris(coord.url, admin, "tenant", "rotate-token", "acme").output
    new = next(t for t in re.findall(r"[A-Za-z0-9_-]{40,}", out) if t != old)
    assert iris(coord.url, new, "list").exit_code == 0
    assert iris(coord.url, old, "list", ok=False).exit_code == 1
    assert iris(coord.url, admin, "tenant", "add", "b", "--token-ttl", "soon", ok=False).exit_code == 2


def test_the_cli_reaches_an_https_coordinator_with_its_ca(tmp_path):
    from iris_haas.control import pki

    pki.init_ca(tmp_path / "ca")
    pki.enroll_host(tmp_path / "ca", "localhost", tmp_path / "api")
    tls = (tmp_path / "api" / "host.crt", tmp_path / "api" / "host.key")
    with LocalCoordinator(tmp_path / "data", tls=tls) as coord:
        assert coord.url.startswith("https://localhost:")
        out = iris(coord.url, coord.admin_token, "--ca-file", str(tmp_path / "ca" / "ca.crt"), "site", "list")
        assert "sites" in out.output
        # the system's CAs do not know this certificate: refused, not trusted blindly
        bad = iris(coord.url, coord.admin_token, "site", "list", ok=False)
        assert bad.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in bad.output


def test_ca_init_and_agent_enroll(tmp_path):
    run_ = CliRunner().invoke
    ca = str(tmp_path / "ca")
    assert run_(app, ["ca", "init", "--dir", ca]).exit_code == 0
    again = run_(app, ["ca", "init", "--dir", ca], env={"COLUMNS": "200"})
    assert again.exit_code == 1 and "already exists" in again.output
    out = tmp_path / "l0-1-tls"
    r = run_(app, ["agent", "enroll", "l0-1", "--ca-dir", ca, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "host.crt", "host.key"]
    bad = run_(app, ["agent", "enroll", "../l0-1", "--ca-dir", ca, "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "InvalidInput" in bad.output


def test_an_agent_does_not_start_without_tls_unless_told(tmp_path):
    from iris_haas.control import pki

    run_ = CliRunner().invoke
    state = ["--state-dir", str(tmp_path / "state")]
    r = run_(app, ["agent", "run", *state], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "--insecure-http" in r.output
    r = run_(app, ["agent", "run", "--insecure-http", *state], env={"COLUMNS": "200", "IRIS_AGENT_TOKEN": ""})
    assert r.exit_code == 2 and "token" in r.output
    pki.init_ca(tmp_path / "ca")
    pki.enroll_host(tmp_path / "ca", "l0-1", tmp_path / "tls")
    r = run_(app, ["agent", "run", "--tls-dir", str(tmp_path / "tls"), "--node", "l0-2", *state],
             env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "l0-1" in r.output  # a host runs under the name its certificate gives


def test_events_after_a_cursor_and_followed(server):
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    coord, admin = server
    url = coord.url
    iris(url, admin, "site", "add", "haas")
    iris(url, admin, "node", "add", "l0-0", "--site", "haas", "--cpus", "4", "--memory-mb", "8192", "--disk-gb", "100")
    token = re.search(r"IRIS_TOKEN=(\S+)", iris(url, admin, "tenant", "add", "acme").output).group(1)
    rid = re.search(r"reservation ([0-9a-f]{32})", iris(url, token, "reserve", "--duration", "1h", "--nodes",
                                                          "1").output).group(1)
    feed = json.loads(iris(url, token, "events", "--json").output)
    assert [e["detail"]["event"] for e in feed] == ["reserve", "reserve_ok"]
    assert "reserve_ok" in iris(url, token, "events").output
    assert iris(url, token, "events", "--after", str(feed[-1]["cursor"]), "--json").output.strip() == "[]"

    follower = subprocess.Popen(
        [sys.executable, "-c", "from iris_haas.cli.main import app; app()", "--url", url, "--token", token,
         "events", "--follow", "--after", str(feed[0]["cursor"])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[2],
        env={**os.environ, "COLUMNS": "300"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        iris(url, token, "commit", rid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("commit_ok" in line for line in lines):
            time.sleep(0.1)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=5)
    events = [line.split()[0] for line in lines if line.strip() and line.split()[0].isdigit()]
    assert events == [str(feed[1]["cursor"]), str(feed[1]["cursor"] + 1), str(feed[1]["cursor"] + 2)], lines
    assert "reserve_ok" in lines[0] and "commit_ok" in lines[2] and rid in lines[2]
