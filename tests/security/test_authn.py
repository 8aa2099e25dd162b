"""The authenticator: API keys, JWTs, client certificates, OTP; failures throttled and audited."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cvdeploy.security.apikeys import ApiKeys
from cvdeploy.security.authn import BearerAuthenticator, credentials_in_query
from cvdeploy.security.authz import RbacAuthorizer
from cvdeploy.security.db import Database
from cvdeploy.security.errors import AuthFailure, TooManyRequests
from cvdeploy.security.mfa import Mfa
from cvdeploy.security.ratelimit import FailedAuthThrottle, Rate, RateLimiter
from cvdeploy.security.serverkeys import ServerKeys
from cvdeploy.security.tokens import JwtVerifier
from cvdeploy.serve.errors import Forbidden, NotFound, Unauthorized
from cvdeploy.serve.security import Connection, RecordingEventSink


def conn(token: str | None = None, otp: str | None = None, source: str = "10.1.1.1", **kw: Any) -> Connection:
    headers = {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if otp is not None:
        headers["x-cvd-otp"] = otp
    return Connection(headers, (source, 40000), **kw)


@pytest.fixture(scope="module")
def signer() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def setup(
    db: Database, server_keys: ServerKeys, clock, tmp_path: Path, signer: rsa.RSAPrivateKey
) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    keys = ApiKeys(db, clock)
    mfa = Mfa(db, server_keys, clock)
    sink = RecordingEventSink()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signer.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    verifier = JwtVerifier("iss", "aud", tmp_path / "jwks.json")
    throttle = FailedAuthThrottle(free=3, base_s=10, clock=clock)
    authn = BearerAuthenticator(keys, mfa, verifier, throttle, sink, trust_client_certs=True)
    return {"keys": keys, "mfa": mfa, "sink": sink, "signer": signer, "authn": authn}


def auth(s: dict[str, Any], c: Connection) -> Any:
    return asyncio.run(s["authn"].authenticate(c))


def test_no_credentials_is_anonymous_with_its_source(setup: dict[str, Any]) -> None:
    p = auth(setup, conn())
    assert p.is_anonymous and p.attributes["source"] == "10.1.1.1" and not p.roles


def test_api_key_gives_role_scope_and_source(setup: dict[str, Any]) -> None:
    new = setup["keys"].create("ci", "predictor", ["shapes"])
    p = auth(setup, conn(new.token))
    assert (p.id, p.kind, p.roles) == (f"key:{new.key.id}", "api-key", frozenset({"predictor"}))
    assert p.models == frozenset({"shapes"}) and p.mfa is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "authorization scheme 'Basic'"),
        ("Bearer", "authorization scheme 'Bearer'"),
        ("Bearer abc.def", "bearer token is neither an API key nor a JWT"),
        ("Bearer cvd_000000000000_" + "A" * 43, "unknown key or wrong secret"),
    ],
)
def test_bad_authorization_headers(setup: dict[str, Any], header: str, reason: str) -> None:
    with pytest.raises(AuthFailure) as err:
        auth(setup, Connection({"authorization": header}, ("10.1.1.1", 1)))
    assert err.value.status == 401 and err.value.reason == reason
    assert (
        setup["sink"].events[-1].action == "authenticate"
        and setup["sink"].events[-1].details["reason"] == reason
    )


def test_revoked_and_expired_keys(setup: dict[str, Any], clock) -> None:  # type: ignore[no-untyped-def]
    revoked = setup["keys"].create("r", "admin")
    expiring = setup["keys"].create("e", "admin", expires_in=5)
    auth(setup, conn(revoked.token))
    setup["keys"].revoke(revoked.key.id)
    with pytest.raises(AuthFailure, match="revoked"):
        auth(setup, conn(revoked.token))
    clock.advance(6)
    with pytest.raises(AuthFailure, match="expired"):
        auth(setup, conn(expiring.token))


@pytest.mark.parametrize("query", ["api_key=abc", "access_token=x", "token=", "x=1&key=2", "q=cvd_0123456789ab_zz",
                                   "sig=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "OTP=123456"])  # fmt: skip
def test_credentials_in_the_query_string_are_refused(setup: dict[str, Any], query: str) -> None:
    assert credentials_in_query(query)
    new = setup["keys"].create("ci", "viewer")
    with pytest.raises(AuthFailure, match="credentials in the URL"):
        auth(setup, conn(new.token, query=query))
    with pytest.raises(AuthFailure, match="credentials in the URL"):
        auth(setup, conn(query=query))


def test_harmless_query_strings_pass() -> None:
    for q in ("", "format=json", "model=shapes&version=2", "conf=0.5"):
        assert not credentials_in_query(q)


def test_otp_marks_the_principal_and_is_single_use(setup: dict[str, Any], clock) -> None:  # type: ignore[no-untyped-def]
    new = setup["keys"].create("ops", "operator")
    totp = pyotp.TOTP(setup["mfa"].enroll(new.key.id).secret)
    code = totp.at(clock.now)
    p = auth(setup, conn(new.token, otp=code))
    assert p.mfa == "totp"
    with pytest.raises(AuthFailure, match="already used"):
        auth(setup, conn(new.token, otp=code))
    with pytest.raises(AuthFailure, match="invalid one-time code"):
        auth(setup, conn(new.token, otp="000000" if code != "000000" else "111111"))
    reasons = [e.details["reason"] for e in setup["sink"].events]
    assert reasons == ["one-time code replayed", "wrong one-time code"]
    assert code not in repr(setup["sink"].events)


def test_missing_otp_lets_reads_through_and_the_policy_refuses_state_changes(setup: dict[str, Any]) -> None:
    new = setup["keys"].create("ops", "operator")
    p = auth(setup, conn(new.token))
    authz = RbacAuthorizer(events=setup["sink"])
    authz.authorize(p, "read", "model:shapes")
    with pytest.raises(Unauthorized, match="second factor"):
        authz.authorize(p, "load", "model:shapes")


def test_jwt_principals(setup: dict[str, Any]) -> None:
    now = int(time.time())
    good = {"iss": "iss", "aud": "aud", "sub": "bob", "exp": now + 60, "roles": ["operator", "root"],
            "models": ["shapes"], "amr": ["otp"]}  # fmt: skip
    p = auth(setup, conn(jwt.encode(good, setup["signer"], "RS256", headers={"kid": "k1"})))
    assert (p.id, p.kind, p.roles) == ("jwt:bob", "jwt", frozenset({"operator"}))  # unknown roles dropped
    assert p.models == frozenset({"shapes"}) and p.mfa == "jwt-amr"
    RbacAuthorizer().authorize(p, "load", "model:shapes")
    with pytest.raises(NotFound):
        RbacAuthorizer().authorize(p, "load", "model:cars")
    bad = jwt.encode({**good, "exp": now - 600}, setup["signer"], "RS256", headers={"kid": "k1"})
    with pytest.raises(AuthFailure, match="token expired"):
        auth(setup, conn(bad))


def test_jwt_without_configuration_is_refused(db: Database, setup: dict[str, Any]) -> None:
    authn = BearerAuthenticator(ApiKeys(db))
    token = jwt.encode({"sub": "x"}, setup["signer"], "RS256")
    with pytest.raises(AuthFailure, match="JWT authentication is not configured"):
        asyncio.run(authn.authenticate(conn(token)))


def test_client_certificate_names_a_key(setup: dict[str, Any], tmp_path: Path) -> None:
    from cvdeploy.security.certs import dev_certificates

    certs = dev_certificates(tmp_path / "certs", client_name="edge-7")
    tls = {"client_cert_chain": [certs.client_cert.read_text()]}
    with pytest.raises(AuthFailure, match="client certificate not recognised"):
        auth(setup, conn(tls=tls))
    key = setup["keys"].create("edge-7", "predictor", ["shapes"]).key
    p = auth(setup, conn(tls=tls))
    assert (p.kind, p.id, p.models) == ("mtls", f"key:{key.id}", frozenset({"shapes"}))
    untrusting = BearerAuthenticator(setup["keys"])
    assert asyncio.run(untrusting.authenticate(conn(tls=tls))).is_anonymous


def test_repeated_failures_slow_the_source_down(setup: dict[str, Any], clock) -> None:  # type: ignore[no-untyped-def]
    good = setup["keys"].create("ok", "viewer").token
    wrong = good[:-1] + ("A" if good[-1] != "A" else "B")
    for _ in range(3):
        with pytest.raises(AuthFailure):
            auth(setup, conn(wrong, source="6.6.6.6"))
    with pytest.raises(TooManyRequests) as err:
        auth(setup, conn(good, source="6.6.6.6"))  # even a good key waits: the source is being slowed down
    assert int(err.value.headers["Retry-After"]) == 10
    auth(setup, conn(good, source="7.7.7.7"))
    clock.advance(10)
    auth(setup, conn(good, source="6.6.6.6"))


def test_authorizer_rate_limits_and_audits_denials(db: Database) -> None:
    from cvdeploy.security.authn import principal_for_key

    sink = RecordingEventSink()
    key = ApiKeys(db).create("ci", "predictor", ["shapes"]).key
    p = principal_for_key(key, source="5.5.5.5")
    authz = RbacAuthorizer(limiter=RateLimiter(Rate(1, 2), None), events=sink)
    authz.authorize(p, "infer", "model:shapes")
    with pytest.raises(Forbidden):
        authz.authorize(p, "load", "model:shapes")
    with pytest.raises(TooManyRequests):
        authz.authorize(p, "infer", "model:shapes")
    assert [(e.action, e.details["status"], e.details["reason"]) for e in sink.events] == [
        ("load", 403, "forbidden"),
        ("infer", 429, "rate limited"),
    ]
