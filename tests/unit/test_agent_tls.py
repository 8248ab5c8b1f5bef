"""The control channel, against a real agent server (uvicorn on loopback, TLS, the in-memory host):
only the coordinator's certificate drives it, the coordinator talks only to the host it names,
plain HTTP gets no HTTP answer, and a new host certificate is served without a restart."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from cryptography import x509

from iris_haas.agent.client import AgentClient, AgentError, ClientTls
from iris_haas.agent.server import Agent, create_app
from iris_haas.agent.tls import ServerTls
from iris_haas.contract.ops import DesiredState
from iris_haas.control import pki
from iris_haas.hostd.memory import MemoryHost

pytestmark = pytest.mark.unit

STATE = DesiredState.model_validate({"version": 1, "ops": [{"op": "bridge", "name": "irisb-a"}]})


@pytest.fixture
def pkis(tmp_path):
    """Our CA with hosts l0-1 and l0-2 enrolled, and a foreign CA (someone else's)."""
    pki.init_ca(tmp_path / "ca")
    pki.init_ca(tmp_path / "foreign")
    for h in ("l0-1", "l0-2"):
        pki.enroll_host(tmp_path / "ca", h, tmp_path / h)
    return tmp_path


@pytest.fixture
def agent(pkis):
    """l0-1's agent serving on a free loopback port; yields (url, its ServerTls, its host)."""
    tls = ServerTls(pkis / "l0-1")
    host = MemoryHost()
    ag = Agent(tls.name, host, pkis / "state")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ag, None), host="127.0.0.1", port=port, log_level="warning",
                                           ssl_context_factory=lambda _c, _d: tls.context))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and t.is_alive(), "the agent did not start"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{port}", tls, host
    finally:
        server.should_exit = True
        t.join(timeout=10)
        tls.close()


def refused(url, tls, node="l0-1"):
    with AgentClient(url, tls, node=node, timeout=5) as c, pytest.raises(AgentError):
        c.state()


def test_the_coordinator_drives_the_agent(pkis, agent):
    url, _, host = agent
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-1", timeout=5) as c:
        assert c.health()["node"] == "l0-1"
        assert c.put(STATE)["in_sync"]
        assert c.state()["version"] == 1
    assert host.objects  # no bearer token: the certificate was the credential


def test_no_client_certificate_is_refused(pkis, agent):
    url, _, host = agent
    refused(url, ClientTls(pkis / "ca" / "ca.crt"))
    assert not host.objects


def test_a_host_certificate_cannot_drive_another_agent(pkis, agent):
    # l0-2's certificate is signed by the same CA, but for serverAuth only: OpenSSL's purpose check
    # on the server refuses it as a client's
    url, _, host = agent
    refused(url, ClientTls.host(pkis / "l0-2"))
    refused(url, ClientTls.host(pkis / "l0-1"))  # nor the agent's own
    assert not host.objects


def test_a_foreign_ca_s_coordinator_is_refused(pkis, agent):
    url, _, _ = agent
    foreign = ClientTls.coordinator(pkis / "foreign")
    refused(url, ClientTls(pkis / "ca" / "ca.crt", foreign.cert, foreign.key))


def test_the_coordinator_talks_only_to_the_host_it_names(pkis, agent):
    url, _, host = agent
    # the agent at this address is l0-1: a coordinator that means l0-2 does not accept its answer
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-2", timeout=5) as c:
        with pytest.raises(AgentError, match="certificate"):
            c.put(STATE)
    # nor a server whose certificate another CA signed (the coordinator trusts only its own)
    other = ClientTls.coordinator(pkis / "ca")
    refused(url, ClientTls(pkis / "foreign" / "ca.crt", other.cert, other.key))
    assert not host.objects


def test_plain_http_gets_no_http_answer(pkis, agent):
    url, _, host = agent
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /v1/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n")
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert not answer.startswith(b"HTTP")
    with AgentClient(url.replace("https", "http"), token="x", timeout=5) as c, pytest.raises(AgentError):
        c.health()
    # and a client given TLS never falls back to plain HTTP
    with pytest.raises(AgentError, match="plain HTTP"):
        AgentClient(url.replace("https", "http"), ClientTls.coordinator(pkis / "ca"), node="l0-1")


def serial(url, pkis) -> int:
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-1", timeout=5) as c:
        return x509.load_der_x509_certificate(c.peer_certificate()).serial_number


def test_a_rotated_certificate_is_served_without_a_restart(pkis, agent):
    url, tls, _ = agent
    before = serial(url, pkis)
    with AgentClient(url, ClientTls.coordinator(pkis / "ca"), node="l0-1", timeout=5) as kept:
        assert kept.put(STATE)["in_sync"]
        # a pair caught half-written (the new key, the old certificate) is not loaded
        good_key = (pkis / "l0-1" / "host.key").read_bytes()
        pki.enroll_host(pkis / "ca", "l0-1", pkis / "half")
        (pkis / "l0-1" / "host.key").write_bytes((pkis / "half" / "host.key").read_bytes())
        tls.check()
        assert serial(url, pkis) == before
        (pkis / "l0-1" / "host.key").write_bytes(good_key)
        # enrolment again: the watcher loads it, later handshakes present it
        new = pki.enroll_host(pkis / "ca", "l0-1", pkis / "l0-1").serial_number
        tls.watch(0.05)
        deadline = time.monotonic() + 5
        while serial(url, pkis) != new:
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(0.05)
        assert kept.state()["in_sync"]  # the coordinator's open connection went on
    assert tls.name == "l0-1"
