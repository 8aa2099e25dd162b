"""Secure serving, the transport and the limits, through real uvicorn servers over real TLS.

Plain HTTP to the TLS port, TLS 1.1 refused (against a control that speaks it), mutual TLS (no
client certificate, a certificate that names no key, one that does), per-principal and per-source
rate limits (429 with Retry-After; one request takes one token however often it is authorized;
health probes never limited), the slowdown after failed authentications, and the whole flow on
PostgreSQL.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from cvdeploy.security.certs import client_context
from cvdeploy.security.ratelimit import FailedAuthThrottle, Rate

from .servers import NAME, Certs, SecureServer, bearer, dev_certs, start


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return dev_certs(tmp_path_factory.mktemp("certs") / "dev")


@pytest.fixture(scope="module")
def jpeg(photos: list[np.ndarray]) -> bytes:
    ok, buf = cv2.imencode(".jpg", photos[1])
    assert ok
    return buf.tobytes()


def detect(c: httpx.Client, jpeg: bytes, **headers: str) -> httpx.Response:
    return c.post(
        f"/v1/models/{NAME}/detect", content=jpeg, headers={"Content-Type": "image/jpeg", **headers}
    )


@pytest.fixture(scope="module")
def server(
    tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory, certs: Certs
) -> Iterator[SecureServer]:
    tmp = tmp_path_factory.mktemp("tls")
    s = start([tiny_bundle_path], tmp / "cvdeploy.db", tmp / "secrets", certs)
    yield s
    s.stop()


def test_plain_http_to_the_tls_port_gets_no_http_answer(server: SecureServer) -> None:
    with socket.create_connection(("127.0.0.1", server.handle.port), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/")
    with httpx.Client(timeout=10) as plain, pytest.raises(httpx.TransportError):
        plain.get(server.url.replace("https://", "http://") + "/v2/health/live")
    with server.client() as c:  # the same port over TLS answers
        assert c.get("/v2/health/live").status_code == 200


def _tls11_client(ca: Path) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at the default security level
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.version())


def test_tls_1_1_is_refused_and_1_2_accepted(server: SecureServer, certs: Certs) -> None:
    # control: a server that allows TLS 1.1 shows this client really speaks it here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(certs.server_pem, certs.server_key)
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            permissive.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        control = _handshake(listener.getsockname()[1], _tls11_client(certs.ca_pem))
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 at all ({exc}); nothing to refuse")
    finally:
        t.join(10)
        listener.close()
    assert control == "TLSv1.1"
    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # an alert, or the connection just closed
        _handshake(server.handle.port, _tls11_client(certs.ca_pem))
    tls12 = client_context(certs.ca_pem)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(server.handle.port, tls12) == "TLSv1.2"
    assert _handshake(server.handle.port, client_context(certs.ca_pem)) == "TLSv1.3"


def test_mutual_tls(tiny_bundle_path: Path, tmp_path: Path, certs: Certs, jpeg: bytes) -> None:
    s = start([tiny_bundle_path], tmp_path / "m.db", tmp_path / "secrets", certs, mtls=True)
    try:
        with s.client() as c, pytest.raises(httpx.TransportError):  # no client certificate: no connection
            c.get("/v2/health/live")
        with s.client(cert=True) as c:
            assert c.get("/v2/health/live").status_code == 200
            r = detect(c, jpeg)
            assert r.status_code == 401 and r.json()["error"] == "client certificate not recognised"
            key_id, _ = s.key("predictor", [NAME], name="cvdeploy-client")  # the dev client certificate's CN
            assert detect(c, jpeg).status_code == 200  # the certificate stands for that key
            assert c.get("/metrics").status_code == 403  # ... and its role
            s.setup.keys.revoke(key_id)
            assert detect(c, jpeg).status_code == 401
        rows = s.audit()
        infer = [r for r in rows if r["action"] == "infer"]
        assert [(r["principal"], r["outcome"]) for r in infer] == [(f"key:{key_id}", "success")]
        failures = [r["details"]["reason"] for r in rows if r["action"] == "authenticate"]
        assert failures == ["no active API key named 'cvdeploy-client' for the certificate"] * 2
    finally:
        s.stop()


def test_rate_limits_per_principal_and_source(tiny_bundle_path: Path, tmp_path: Path, certs: Certs,
                                              jpeg: bytes) -> None:  # fmt: skip
    # slow refills, so nothing comes back during the test: principal burst 2, source burst 5
    s = start([tiny_bundle_path], tmp_path / "r.db", tmp_path / "secrets", certs,
              per_principal=Rate(0.01, 2), per_source=Rate(0.01, 5))  # fmt: skip
    try:
        tokens = [s.key("predictor")[1] for _ in range(5)]
        with s.client() as c:
            # each request is authorized twice (before its body is read, then by the service): one token
            assert [detect(c, jpeg, **bearer(tokens[0])).status_code for _ in range(3)] == [200, 200, 429]
            r = detect(c, jpeg, **bearer(tokens[0]))
            assert r.status_code == 429 and "principal" in r.json()["error"]
            assert int(r.headers["retry-after"]) >= 1
            # the source has given 2 tokens (the refused requests gave theirs back): 3 more keys pass, the next not
            assert [detect(c, jpeg, **bearer(t)).status_code for t in tokens[1:4]] == [200, 200, 200]
            r = detect(c, jpeg, **bearer(tokens[4]))
            assert r.status_code == 429 and "source address" in r.json()["error"]
            # health probes are never limited
            assert {c.get("/v2/health/ready").status_code for _ in range(20)} == {200}
        rows = s.audit()
        assert sum(r["action"] == "infer" and r["outcome"] == "success" for r in rows) == 5
        limited = [r for r in rows if r["details"].get("reason") == "rate limited"]
        assert len(limited) == 3 and {r["details"]["status"] for r in limited} == {429}
    finally:
        s.stop()


def test_failed_authentications_slow_the_source_down(tiny_bundle_path: Path, tmp_path: Path,
                                                     certs: Certs) -> None:  # fmt: skip
    s = start([tiny_bundle_path], tmp_path / "f.db", tmp_path / "secrets", certs,
              throttle=FailedAuthThrottle(free=3, base_s=30))  # fmt: skip
    try:
        _, good = s.key("viewer")
        bad = "cvd_000000000000_" + "A" * 43
        with s.client() as c:
            assert [c.get("/v2", headers=bearer(bad)).status_code for _ in range(3)] == [401] * 3
            r = c.get("/v2", headers=bearer(good))  # even the right key waits now: nothing is even looked at
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 30
            assert c.get("/v2/health/live").status_code == 200  # an orchestrator behind the same address
    finally:
        s.stop()


def test_the_flow_on_postgresql(tiny_bundle_path: Path, tmp_path: Path, certs: Certs, postgres_url: str,
                                jpeg: bytes) -> None:  # fmt: skip
    s = start([tiny_bundle_path], postgres_url, tmp_path / "secrets", certs)
    try:
        key_id, operator = s.key("operator")
        totp = s.totp(key_id)
        _, scoped = s.key("predictor", ["cars"])
        with s.client() as c:
            assert detect(c, jpeg, **bearer(operator)).status_code == 200
            assert detect(c, jpeg, **bearer(scoped)).status_code == 404
            load = f"/v2/repository/models/{NAME}/load"
            assert c.post(load, json={}, headers=bearer(operator)).status_code == 401
            code = totp.now()
            assert c.post(load, json={}, headers=bearer(operator, code)).status_code == 200
            assert c.post(load, json={}, headers=bearer(operator, code)).status_code == 401  # replayed
            s.setup.keys.revoke(key_id)
            assert detect(c, jpeg, **bearer(operator)).status_code == 401
        rows = s.audit()
        actions = [(r["action"], r["outcome"]) for r in rows if r["principal"] != "system"]
        assert actions[:4] == [("keys.create", "success"), ("mfa.enroll", "success"), ("keys.create", "success"),
                               ("infer", "success")]  # fmt: skip
        assert ("infer", "success") in actions and ("load", "success") in actions
        assert ("authenticate", "failure") in actions and ("keys.revoke", "success") in actions
        assert s.setup.audit.verify().ok
        assert s.setup.db.dialect == "postgresql"
    finally:
        s.stop()
