"""The control channel's CA: what each certificate may do (one purpose each), whom it names, and
that the keys are private and a CA is never replaced by accident."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iris_haas.contract.errors import AlreadyExists, InvalidInput, NotFound
from iris_haas.control import pki

pytestmark = pytest.mark.unit


def cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_the_ca_signs_end_certificates_only(tmp_path):
    pki.init_ca(tmp_path)
    ca = cert(tmp_path / "ca.crt")
    assert ca.issuer == ca.subject
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    assert pki.CA_DAYS <= days <= pki.CA_DAYS + 1
    assert mode(tmp_path / "ca.key") == 0o600 and mode(tmp_path / "coordinator.key") == 0o600
    ca.verify_directly_issued_by(ca)


def test_the_coordinator_is_a_client_only(tmp_path):
    pki.init_ca(tmp_path)
    c = cert(tmp_path / "coordinator.crt")
    c.verify_directly_issued_by(cert(tmp_path / "ca.crt"))
    assert list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["iris:coordinator"]
    assert not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_host_is_a_server_named_as_the_coordinator_knows_it(tmp_path):
    pki.init_ca(tmp_path / "ca")
    issued = pki.enroll_host(tmp_path / "ca", "l0-1", tmp_path / "h")
    c = cert(tmp_path / "h" / "host.crt")
    assert c == issued
    c.verify_directly_issued_by(cert(tmp_path / "ca" / "ca.crt"))
    assert (tmp_path / "h" / "ca.crt").read_bytes() == (tmp_path / "ca" / "ca.crt").read_bytes()
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "l0-1"
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["l0-1"]
    assert list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (c.not_valid_after_utc - c.not_valid_before_utc).days in (pki.HOST_DAYS, pki.HOST_DAYS + 1)
    assert mode(tmp_path / "h" / "host.key") == 0o600
    assert mode(tmp_path / "h") == 0o700


def test_enrolling_again_rotates_the_key_and_the_serial(tmp_path):
    pki.init_ca(tmp_path / "ca")
    first = pki.enroll_host(tmp_path / "ca", "l0-1", tmp_path / "h")
    key1 = (tmp_path / "h" / "host.key").read_bytes()
    second = pki.enroll_host(tmp_path / "ca", "l0-1", tmp_path / "h")
    assert second.serial_number != first.serial_number
    assert (tmp_path / "h" / "host.key").read_bytes() != key1
    assert cert(tmp_path / "h" / "host.crt") == second
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["ca.crt", "host.crt", "host.key"]


def test_an_existing_ca_is_kept_unless_replaced_on_purpose(tmp_path):
    pki.init_ca(tmp_path)
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(AlreadyExists, match="already exists"):
        pki.init_ca(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == before
    pki.init_ca(tmp_path, overwrite=True)
    assert (tmp_path / "ca.key").read_bytes() != before


@pytest.mark.parametrize("bad", ["", "../etc", "a b", "-l0", "x" * 65, "l0/1"])
def test_a_host_name_is_the_inventory_s(tmp_path, bad):
    pki.init_ca(tmp_path / "ca")
    with pytest.raises(InvalidInput):
        pki.enroll_host(tmp_path / "ca", bad, tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_enrolling_needs_a_ca(tmp_path):
    with pytest.raises(NotFound, match="iris ca init"):
        pki.enroll_host(tmp_path / "none", "l0-1", tmp_path / "h")
