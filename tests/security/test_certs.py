"""Dev certificates: a real TLS handshake on loopback, mutual TLS, and TLS 1.2 as the floor."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cvdeploy.errors import ConfigError
from cvdeploy.security.authn import _client_cert_cn, tls_extension
from cvdeploy.security.certs import DevCertificates, client_context, dev_certificates, server_context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return dev_certificates(tmp_path_factory.mktemp("certs"), client_name="edge-1")


def serve_once(ctx: ssl.SSLContext) -> tuple[int, dict[str, object], threading.Thread]:
    """A TLS echo server for one connection; returns its port, what it saw, and its thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def run() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                seen["ext"] = tls_extension(tls)
                seen["version"] = tls.version()
                tls.sendall(tls.recv(100))
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = exc
        finally:
            listener.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], seen, t


def talk(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(b"ping")
        return tls.recv(100)


def test_files_and_certificate_contents(certs: DevCertificates) -> None:
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    client = x509.load_pem_x509_certificate(certs.client_cert.read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge-1"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(ConfigError, match="already exists"):
        dev_certificates(certs.ca_cert.parent)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_handshake_verifies_the_server(certs: DevCertificates, host: str) -> None:
    port, seen, t = serve_once(server_context(certs.server_cert, certs.server_key))
    assert talk(port, client_context(certs.ca_cert), host) == b"ping"
    t.join(10)
    assert seen["version"] in ("TLSv1.2", "TLSv1.3")


def test_mutual_tls_identifies_the_client_and_refuses_a_client_without_certificate(
    certs: DevCertificates,
) -> None:
    ctx = server_context(certs.server_cert, certs.server_key, certs.ca_cert)
    port, seen, t = serve_once(ctx)
    assert talk(port, client_context(certs.ca_cert, certs.client_cert, certs.client_key)) == b"ping"
    t.join(10)
    subject = dict(x[0] for x in seen["peer"]["subject"])  # type: ignore[index]
    assert subject["commonName"] == "edge-1"
    assert _client_cert_cn(seen["ext"]) == "edge-1"  # what the authenticator maps to a key  # type: ignore[arg-type]

    port, seen, t = serve_once(ctx)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        got = talk(port, client_context(certs.ca_cert))  # no client certificate
        if not got:  # TLS 1.3 reports the refusal on the first read, as a closed connection
            raise ConnectionError("closed")
    t.join(10)
    assert isinstance(seen.get("error"), ssl.SSLError)


def test_tls_1_1_is_refused(certs: DevCertificates) -> None:
    ctx = server_context(certs.server_cert, certs.server_key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    port, seen, t = serve_once(ctx)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(certs.ca_cert)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        talk(port, old)
    t.join(10)
    assert "version" not in seen


def test_a_certificate_from_another_ca_is_not_trusted(certs: DevCertificates, tmp_path: Path) -> None:
    other = dev_certificates(tmp_path / "other")
    port, _, t = serve_once(server_context(other.server_cert, other.server_key))
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(port, client_context(certs.ca_cert))
    t.join(10)


def test_unusable_certificate_files_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("nonsense")
    with pytest.raises(ConfigError, match="--tls-cert"):
        server_context(tmp_path / "c.pem", tmp_path / "k.pem")
