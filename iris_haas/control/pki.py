"""A small CA for the control channel: who may drive an agent, and which host answers.

An agent is root on its host, so the channel to it is mutual TLS with certificates of one CA
that the HaaS operator keeps (``iris ca init``):

* the **coordinator** has a client certificate (ExtendedKeyUsage clientAuth only, SAN URI
  ``iris:coordinator``): the only certificate an agent accepts from a client;
* each **host** has a server certificate (serverAuth only) naming it, CN and SAN DNS, by the
  name the coordinator knows it by (``iris agent enroll HOST``): the coordinator checks that
  name on every connection, so a host's reports come from that host, whatever IP answers.

Neither kind can stand in for the other: TLS checks the purpose of the peer's certificate at
both ends, so a host's certificate (stolen by a tenant who broke out on that host) cannot drive
another agent, and the coordinator's cannot serve as a host. The CA signs end certificates
only (pathlen 0). Enrolling a host again is rotation: a new key and a new serial; the agent
picks the new files up without a restart.

Keys are EC P-256, written 0600; every file is replaced atomically (a reader sees the old file
or the new one, never half of one).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import TypeAdapter, ValidationError

from iris_haas.contract import names
from iris_haas.contract.errors import AlreadyExists, InvalidInput, NotFound
from iris_haas.contract.types import Name

CA_KEY = "ca.key"
CA_DAYS = 3650  # the CA: ten years
HOST_DAYS = 365  # a host's and the coordinator's certificate: a year, then enrol again
SKEW = dt.timedelta(minutes=5)  # valid from a little before now: a host's clock may lag the CA's

_NAME = TypeAdapter(Name)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` at once, created with ``mode`` (never wider for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _subject(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Iris"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
           cn: str, san: x509.GeneralName, purpose: x509.ObjectIdentifier) -> x509.Certificate:
    """An end certificate for one purpose only (a client or a server, never both)."""
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (_builder(_subject(cn), ca_cert.subject, key, HOST_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(ca_key, hashes.SHA256()))


def init_ca(ca_dir: str | Path, *, overwrite: bool = False) -> x509.Certificate:
    """Make the CA (``ca.key``, ``ca.crt``) and the coordinator's client certificate
    (``coordinator.key``, ``coordinator.crt``) in ``ca_dir``. An existing CA is kept unless
    ``overwrite``: a new CA orphans every host's certificate."""
    d = Path(ca_dir)
    if not overwrite and ((d / CA_KEY).exists() or (d / names.CA_CERT).exists()):
        raise AlreadyExists(f"a CA already exists in {d}; replacing it orphans every host's certificate "
                            "(overwrite it explicitly if that is what you want)")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _key()
    subject = _subject("Iris control CA")
    cert = (_builder(subject, subject, key, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(d / CA_KEY, key)
    _write_cert(d / names.CA_CERT, cert)
    coord_key = _key()
    _write_key(d / names.COORDINATOR_KEY, coord_key)
    _write_cert(d / names.COORDINATOR_CERT,
                _issue(key, cert, coord_key, "iris coordinator", x509.UniformResourceIdentifier(names.COORDINATOR_URI),
                       ExtendedKeyUsageOID.CLIENT_AUTH))
    return cert


def _load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((ca_dir / names.CA_CERT).read_bytes())
    except FileNotFoundError:
        raise NotFound(f"no CA in {ca_dir}: make one with `iris ca init`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{ca_dir / CA_KEY} is not an EC key")
    return key, cert


def enroll_host(ca_dir: str | Path, host: str, out_dir: str | Path) -> x509.Certificate:
    """A fresh key and server certificate for ``host`` (its name in the coordinator's inventory),
    written with the CA certificate into ``out_dir``: the three files its agent's ``--tls-dir``
    holds. Enrolling a host again is rotation: a new key, a new serial."""
    try:
        host = _NAME.validate_python(host)
    except ValidationError:
        raise InvalidInput(f"{host!r} is not a host name (letters, digits, '.', '_', '-'; at most 64)",
                           field="host") from None
    ca_dir = Path(ca_dir)
    ca_key, ca_cert = _load_ca(ca_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _key()
    cert = _issue(ca_key, ca_cert, key, host, x509.DNSName(host), ExtendedKeyUsageOID.SERVER_AUTH)
    # the key first: an agent that reads the pair between the two writes finds them mismatched
    # and keeps serving the old pair until its next look
    _write_key(out / names.HOST_KEY, key)
    _write_cert(out / names.HOST_CERT, cert)
    _write_cert(out / names.CA_CERT, ca_cert)
    return cert
