"""A throwaway certificate authority and member certificates for TLS tests and benchmarks."""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[str, str]:
    with open(path + ".key", "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(path + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path + ".pem", path + ".key"


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_ca(directory: str, name: str = "rtml-test-ca") -> tuple[str, object]:
    """A CA in ``directory``; returns (its certificate's path, its key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(name, key, name, key, ca=True)
    pem, _ = _write(os.path.join(directory, name), key, cert)
    return pem, (name, key)


def make_member(directory: str, name: str, ca: tuple[str, object]) -> tuple[str, str]:
    """A member certificate signed by ``ca`` (from ``make_ca``); returns (cert, key) paths."""
    ca_name, ca_key = ca  # type: ignore[misc]
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(os.path.join(directory, name), key, _cert(name, key, ca_name, ca_key, False))


def make_self_signed(directory: str, name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(os.path.join(directory, name), key, _cert(name, key, name, key, False))
