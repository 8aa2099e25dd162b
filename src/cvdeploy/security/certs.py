"""Development certificates (via ``cryptography``): a private CA, a server and a client certificate.

    DIR/ca.pem  ca.key           the CA (keep ca.key private; trust ca.pem in clients)
    DIR/server.pem  server.key   for localhost, 127.0.0.1 and ::1 (--tls-cert / --tls-key)
    DIR/client.pem  client.key   CN = the client name, for mutual TLS (--tls-client-ca DIR/ca.pem)

For tests and a first local setup only — production certificates come from your PKI or ACME. Keys
are ECDSA P-256, written with mode 0600; the certificates are valid for ``days`` days.

:func:`server_context` / :func:`client_context` build ``ssl`` contexts with TLS 1.2 as the floor.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError

__all__ = ["DevCertificates", "client_context", "dev_certificates", "server_context"]


@dataclass(frozen=True)
class DevCertificates:
    """Where :func:`dev_certificates` wrote each file."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_name: str

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def dev_certificates(
    out: str | Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
    client_name: str = "cvdeploy-client",
    days: int = 30,
    overwrite: bool = False,
) -> DevCertificates:
    """Write a dev CA, a server certificate for ``hosts`` and a client certificate into ``out``."""
    require("cryptography", "certificates")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(out)
    files = DevCertificates(
        d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
        client_name,
    )  # fmt: skip
    existing = [p for p in (files.ca_cert, files.ca_key, files.server_cert, files.server_key) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{existing[0]} already exists; choose another -o folder or remove the old certificates"
        )
    d.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cvdeploy dev"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # fmt: skip

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("cvdeploy dev CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    server_key, server = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_key, client = leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    pem = serialization.Encoding.PEM
    _write_key(files.ca_key, ca_key)
    files.ca_cert.write_bytes(ca.public_bytes(pem))
    _write_key(files.server_key, server_key)
    files.server_cert.write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    _write_key(files.client_key, client_key)
    files.client_cert.write_bytes(client.public_bytes(pem))
    return files


def server_context(cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> ssl.SSLContext:
    """A server TLS context: TLS ≥ 1.2; with ``client_ca``, a verified client certificate is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use the TLS certificate/key ({exc}); check --tls-cert, --tls-key, --tls-client-ca"
        ) from None
    return ctx


def client_context(
    ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """A client TLS context trusting ``ca`` (and presenting ``cert``/``key`` for mutual TLS)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
