"""Secure serving, every rule through a real uvicorn server over real TLS (certificates from ``certs dev``).

One server (SQLite, JWT configured) is shared by the module: API keys (no, wrong, malformed, revoked,
expired), scopes (404 exactly like a missing model, scoped indexes), roles and escalation (401 vs
403), MFA (missing, wrong, replayed OTP; failures audited), JWTs (alg none, expired, wrong audience
or issuer, another key, HS256 signed with the public key), credentials in the query string, health
probes, the audit trail of a request (counted once) — and at the end, that no key, token, TOTP secret
or OTP reached a log line or the database file. The same flow runs once on PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import jwt as pyjwt
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cvdeploy.serve.errors import unknown_model

from .servers import NAME, Captured, Certs, SecureServer, bearer, capture_logs, dev_certs, start

ISS, AUD = "https://idp.example", "cvdeploy-test"


@pytest.fixture(scope="module")
def jpeg(photos: list[np.ndarray]) -> bytes:
    ok, buf = cv2.imencode(".jpg", photos[0])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def signers() -> dict[str, rsa.RSAPrivateKey]:
    return {k: rsa.generate_private_key(public_exponent=65537, key_size=2048) for k in ("idp", "other")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return dev_certs(tmp_path_factory.mktemp("certs") / "dev")


@pytest.fixture(scope="module")
def logs(certs: Certs) -> Iterator[Captured]:
    """Every server log line from here on (after the CLI of ``certs dev`` has set its own log levels)."""
    yield from capture_logs()


@pytest.fixture(scope="module")
def server(
    tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory, signers: dict[str, Any], certs: Certs,
    logs: Captured,
) -> Iterator[SecureServer]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("secure")
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(signers["idp"].public_key()))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "idp-1", "use": "sig"}]}))
    s = start(
        [tiny_bundle_path], tmp / "cvdeploy.db", tmp / "secrets", certs, jwt=(ISS, AUD, tmp / "jwks.json")
    )
    yield s
    s.stop()


def detect(c: Any, jpeg: bytes, model: str = NAME, **kw: Any) -> Any:
    return c.post(f"/v1/models/{model}/detect", content=jpeg, headers={"Content-Type": "image/jpeg", **kw})


def test_health_probes_are_open_and_reveal_nothing_else(server: SecureServer) -> None:
    with server.client() as c:
        assert server.url.startswith("https://127.0.0.1:")
        for path, doc in (("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True})):
            r = c.get(path)
            assert (r.status_code, r.json()) == (200, doc)
            # a probe never looks at credentials: a bad one does not fail it (or count as a failed login)
            assert c.get(path, headers=bearer("cvd_000000000000_" + "A" * 43)).status_code == 200
        assert c.get("/ping").status_code == 200
        for method, path in (("GET", "/v2"), ("GET", f"/v2/models/{NAME}"), ("POST", "/v2/repository/index"),
                             ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", f"/v2/models/{NAME}/ready")):  # fmt: skip
            r = c.request(method, path)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer") and NAME not in r.text


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("none", 401, "authentication required"),
        ("wrong secret", 401, "invalid API key"),
        ("malformed", 401, "invalid bearer token"),
        ("basic auth", 401, "use 'Authorization: Bearer"),
        ("revoked", 401, "API key revoked"),
        ("expired", 401, "API key expired"),
        ("valid", 200, None),
    ],
)
def test_api_keys(server: SecureServer, jpeg: bytes, case: str, status: int, message: str | None) -> None:
    key_id, token = server.key("predictor")
    headers = bearer(token)
    if case == "none":
        headers = {}
    elif case == "wrong secret":
        headers = bearer(token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB"))
    elif case == "malformed":
        headers = bearer("not-a-key")
    elif case == "basic auth":
        headers = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
    elif case == "revoked":
        with server.client() as c:
            assert detect(c, jpeg, **headers).status_code == 200
        server.setup.keys.revoke(key_id)  # takes effect on the very next request
    elif case == "expired":  # a key whose expiry has passed (the server reads the database on every request)
        with server.setup.db.transaction(write=True) as tx:
            tx.execute("UPDATE api_keys SET expires = ? WHERE id = ?", (time.time() - 1, key_id))
    with server.client() as c:
        r = detect(c, jpeg, **headers)
    assert r.status_code == status, r.text
    if message is not None:
        assert message in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    else:
        assert r.json()["model"] == NAME


def test_a_scoped_key_cannot_tell_other_models_from_missing_ones(server: SecureServer, jpeg: bytes) -> None:
    _, elsewhere = server.key("predictor", ["cars"])
    _, here = server.key("predictor", [NAME])
    _, everything = server.key("viewer")
    with server.client() as c:
        out_of_scope = detect(c, jpeg, **bearer(elsewhere))
        missing = detect(c, jpeg, model="cars", **bearer(elsewhere))
        assert out_of_scope.status_code == missing.status_code == 404
        assert out_of_scope.json()["error"] == unknown_model(NAME) and missing.json()[
            "error"
        ] == unknown_model("cars")
        assert out_of_scope.json()["error"].replace(NAME, "cars") == missing.json()["error"]
        for path in (f"/v2/models/{NAME}", f"/v2/models/{NAME}/config", f"/v2/models/{NAME}/stats"):
            assert c.get(path, headers=bearer(elsewhere)).json() == {"error": unknown_model(NAME)}
        # indexes and listings show only what is in scope
        assert c.post("/v2/repository/index", headers=bearer(elsewhere)).json() == []
        assert c.get("/v1/models", headers=bearer(elsewhere)).json()["models"] == []
        assert c.get("/v2/models/stats", headers=bearer(elsewhere)).json() == {"model_stats": []}
        assert [x["name"] for x in c.post("/v2/repository/index", headers=bearer(here)).json()] == [NAME]
        assert detect(c, jpeg, **bearer(here)).status_code == 200
        # an unscoped caller's "unknown model" lists no model either
        r = c.get("/v2/models/cars", headers=bearer(everything))
        assert r.status_code == 404 and NAME not in r.text


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        ("viewer", "GET", f"/v2/models/{NAME}", 200),
        ("viewer", "GET", f"/v2/models/{NAME}/config", 200),
        ("viewer", "POST", "/v2/repository/index", 200),
        ("viewer", "POST", f"/v1/models/{NAME}/detect", 403),
        ("viewer", "GET", "/metrics", 403),
        ("predictor", "POST", f"/v2/repository/models/{NAME}/load", 403),
        ("predictor", "POST", f"/v2/repository/models/{NAME}/rollback", 403),
        ("predictor", "GET", "/metrics", 403),
        ("operator", "GET", "/metrics", 403),
        ("operator", "POST", f"/v1/models/{NAME}/detect", 200),
        ("admin", "GET", "/metrics", 200),
    ],
)
def test_roles(server: SecureServer, jpeg: bytes, role: str, method: str, path: str, status: int) -> None:
    _, token = server.key(role)
    body: dict[str, Any] = {"content": jpeg, "headers": {**bearer(token), "Content-Type": "image/jpeg"}}
    if "repository/models" in path:
        body = {"json": {}, "headers": bearer(token)}
    elif method == "GET" or path.endswith("index"):
        body = {"headers": bearer(token)}
    with server.client() as c:
        r = c.request(method, path, **body)
    assert r.status_code == status, r.text
    if status == 403:
        assert f"({role}) may not" in r.json()["error"]


def test_role_escalation_attempts_are_refused(server: SecureServer, signers: dict[str, Any]) -> None:
    _, predictor = server.key("predictor")
    now = int(time.time())
    inflated = pyjwt.encode({"iss": ISS, "aud": AUD, "sub": "mallory", "exp": now + 60, "roles": ["root", "superuser"]},
                            signers["idp"], "RS256", headers={"kid": "idp-1"})  # fmt: skip
    with server.client() as c:
        # headers a client might hope a server trusts
        r = c.get("/metrics", headers={**bearer(predictor), "X-Role": "admin", "X-Forwarded-User": "admin"})
        assert r.status_code == 403
        # a valid JWT naming roles that do not exist has no role at all
        assert c.get("/v2", headers=bearer(inflated)).status_code == 403
        # an OTP does not lift a role
        assert c.get("/metrics", headers=bearer(predictor, "123456")).status_code == 401


def test_mfa_for_state_changes(server: SecureServer) -> None:
    key_id, operator = server.key("operator", name="ops")
    totp = server.totp(key_id)
    load = f"/v2/repository/models/{NAME}/load"
    with server.client() as c:
        r = c.post(load, json={}, headers=bearer(operator))
        assert r.status_code == 401 and "X-CVD-OTP" in r.json()["error"]
        wrong = "000000" if totp.now() != "000000" else "111111"
        r = c.post(load, json={}, headers=bearer(operator, wrong))
        assert r.status_code == 401 and r.json()["error"] == "invalid one-time code"
        code = totp.now()
        server.secrets.append(code)
        r = c.post(load, json={}, headers=bearer(operator, code))
        assert r.status_code == 200, r.text
        r = c.post(load, json={}, headers=bearer(operator, code))
        assert r.status_code == 401 and "already used" in r.json()["error"]
        # reads need no second factor, and a code is only ever taken with a key
        assert c.get(f"/v2/models/{NAME}", headers=bearer(operator)).status_code == 200
        assert c.get(f"/v2/models/{NAME}", headers={"X-CVD-OTP": totp.now()}).status_code == 401
    rows = [
        r
        for r in server.audit()
        if key_id in r["principal"] or r["details"].get("reason", "").endswith("code")
    ]
    summary = [(r["action"], r["outcome"], r["details"].get("reason")) for r in rows]
    assert ("load", "failure", "second factor missing") in summary
    assert ("authenticate", "failure", "wrong one-time code") in summary
    assert ("authenticate", "failure", "one-time code replayed") in summary
    assert ("load", "success", None) in summary


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("valid", None),
        ("alg none", "JWT algorithm 'none' refused"),
        ("expired", "JWT expired"),
        ("wrong audience", "JWT audience mismatch"),
        ("wrong issuer", "JWT issuer mismatch"),
        ("another key", "JWT signature invalid"),
        ("HS256 with the public key", "JWT algorithm 'HS256' refused"),
        ("not yet valid", "JWT nbf/iat in the future"),
    ],
)
def test_jwt(
    server: SecureServer, signers: dict[str, Any], jpeg: bytes, case: str, reason: str | None
) -> None:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": f"alice-{case}", "exp": now + 120, "roles": ["predictor"],
              "models": [NAME]}  # fmt: skip
    key, alg = signers["idp"], "RS256"
    if case == "expired":
        claims["exp"] = now - 600
    elif case == "wrong audience":
        claims["aud"] = "someone-else"
    elif case == "wrong issuer":
        claims["iss"] = "https://evil.example"
    elif case == "another key":
        key = signers["other"]
    elif case == "not yet valid":
        claims["nbf"] = now + 600
    if case == "alg none":
        token = (
            f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."
        )
    elif case == "HS256 with the public key":
        pem = (
            signers["idp"]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "idp-1"}).encode())
        signing_input = f"{head}.{_b64(json.dumps(claims).encode())}"
        token = f"{signing_input}.{_b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    else:
        token = pyjwt.encode(claims, key, alg, headers={"kid": "idp-1"})
    server.secrets.append(token.split(".")[2] or token)
    with server.client() as c:
        r = detect(c, jpeg, **bearer(token))
    if reason is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    rows = [x for x in server.audit(50) if x["action"] == "authenticate"]
    assert rows[-1]["details"]["reason"] == reason


@pytest.mark.parametrize("where", ["query only", "query and header"])
def test_credentials_in_the_query_string_are_refused(server: SecureServer, jpeg: bytes, where: str) -> None:
    _, token = server.key("predictor")
    headers = bearer(token) if where == "query and header" else {}
    with server.client() as c:
        r = c.post(f"/v1/models/{NAME}/detect", params={"api_key": token}, content=jpeg,
                   headers={"Content-Type": "image/jpeg", **headers})  # fmt: skip
        assert r.status_code == 401 and "credentials in the URL" in r.json()["error"]
        r = c.get(f"/v2/models/{NAME}", params={"access_token": "x"}, headers=bearer(token))
        assert r.status_code == 401


def test_one_request_is_authorized_and_audited_once(server: SecureServer, jpeg: bytes) -> None:
    key_id, token = server.key("predictor", [NAME])
    with server.client() as c:
        ok = detect(c, jpeg, **{**bearer(token), "X-Request-ID": "audit-ok"})
        bad = detect(c, b"\xff\xd8 not really a jpeg", **{**bearer(token), "X-Request-ID": "audit-bad"})
        denied = c.post("/v2/repository/index", headers={**bearer(token), "X-Request-ID": "audit-read"})
    assert ok.status_code == 200 and bad.status_code in (400, 415) and denied.status_code == 200
    rows = [r for r in server.audit() if r["principal"] == f"key:{key_id}"]
    assert [(r["action"], r["resource"], r["outcome"], r["request_id"]) for r in rows] == [
        ("infer", f"model:{NAME}", "success", "audit-ok"),
        ("infer", f"model:{NAME}", "failure", "audit-bad"),
    ]
    n = len(ok.json()["detections"])
    assert rows[0]["details"] == {"images": 1, "version": 1, "results": n}
    assert rows[1]["details"]["status"] == bad.status_code and set(rows[1]["details"]) <= {
        "images",
        "version",
        "status",
    }


def test_the_audit_log_holds_every_kind_of_event_and_verifies(server: SecureServer) -> None:
    rows = server.audit(2000)
    assert {"authenticate", "infer", "load", "keys.create", "keys.revoke", "mfa.enroll"} <= {
        r["action"] for r in rows
    }
    assert any(r["outcome"] == "failure" and r["details"].get("status") == 404 for r in rows)
    assert server.setup.audit.verify().ok


def test_no_key_token_or_code_reaches_a_log_or_the_database(server: SecureServer, logs: Captured) -> None:
    """Runs last in this module: every secret handed out above, looked for everywhere it must not be."""
    assert server.setup.sink.flush(30)
    assert server.secrets and any("cvdeploy.serve.access" in line for line in logs.lines), (
        "nothing to look at"
    )
    db_path = server.setup.db.path
    assert db_path is not None
    stored = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))  # with -wal, -shm
    assert b"keys.create" in stored or b"api_keys" in stored
    audit_text = json.dumps(server.setup.audit.tail(10_000))
    for secret in server.secrets:
        if re.fullmatch(r"[0-9]{6}", secret):  # an OTP: look for it as a value, not inside hex hashes
            assert not re.search(rf"(?<![0-9a-f]){secret}(?![0-9a-f])", logs.text + audit_text), secret
            continue
        assert secret not in logs.text, "a secret reached the log"
        assert secret.encode() not in stored, "a secret reached the database file"
