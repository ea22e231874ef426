"""A throwaway PKI for a broker spawned by the harness: a CA, a server certificate, a client one.

A lab broker comes with its own certificates (named in the rig); the virtual rig and the
harness's own tests have none, so they get a fresh CA per session. Private keys are written
with mode 0600 and never logged.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 7
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
DEVICE_NAME = "hil device"  # the common name of a virtual rig's device certificate


@dataclass(frozen=True)
class Issued:
    """A certificate with its key, both as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA that can issue server and client certificates."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, name: str = "hil test CA") -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        stem = _stem(name)
        return cls(
            _write_cert(directory / f"{stem}.pem", cert), _write_key(directory / f"{stem}.key", key)
        )

    def issue(
        self, directory: Path, name: str, *, hosts: tuple[str, ...] = (), client: bool = False
    ) -> Issued:
        """A certificate for a server reachable as `hosts`, or (client=True) for a client."""
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            _builder(subject, ca_cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        stem = _stem(name)
        return Issued(
            _write_cert(directory / f"{stem}.pem", cert), _write_key(directory / f"{stem}.key", key)
        )


@dataclass(frozen=True)
class BrokerPki:
    """What a TLS broker and its clients need: the CA, the server's pair, a client pair, and
    for a virtual rig the device's own pair (so the broker's side can tell the two apart)."""

    ca: Path
    server: Issued
    client: Issued | None
    device: Issued | None = None

    @classmethod
    def create(cls, directory: Path, client: bool = False, device: bool = False) -> BrokerPki:
        authority = Authority.create(directory)
        server = authority.issue(directory, "hil broker", hosts=LOOPBACK_NAMES)
        issued = authority.issue(directory, "hil client", client=True) if client else None
        own = authority.issue(directory, DEVICE_NAME, client=True) if device else None
        return cls(authority.cert, server, issued, own)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _stem(name: str) -> str:
    return name.replace(" ", "-")


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path
