"""JWT: RS256/ES256 against a JWKS file; iss/aud/exp/nbf; alg none and HS/RS confusion refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cvdeploy.errors import ConfigError
from cvdeploy.security.errors import AuthFailure
from cvdeploy.security.tokens import JwtVerifier

ISS, AUD = "https://idp.example", "cvdeploy"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": alg})
    return jwk


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture
def jwks(tmp_path: Path, keys: dict[str, Any]) -> Path:
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [public_jwk(keys["rsa"], "r1"), public_jwk(keys["ec"], "e1")]}))
    return p


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 300, "iat": now, "roles": ["predictor"]}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Any, alg: str = "RS256", kid: str = "r1", **over: Any) -> str:
    return jwt.encode(claims(**over), key, algorithm=alg, headers={"kid": kid})


def test_valid_rs256_and_es256_tokens(jwks: Path, keys: dict[str, Any]) -> None:
    v = JwtVerifier(ISS, AUD, jwks)
    c = v.verify(token(keys["rsa"], models=["shapes"], amr=["pwd", "mfa"]))
    assert (c.sub, c.roles, c.models, c.mfa) == ("alice", ("predictor",), ("shapes",), True)
    c = v.verify(token(keys["ec"], "ES256", "e1", roles=["viewer", "unknown"]))
    assert (c.roles, c.models, c.mfa) == (("viewer", "unknown"), None, False)


def test_alg_none_is_refused(jwks: Path) -> None:
    unsigned = (
        f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims()).encode())}."
    )
    with pytest.raises(AuthFailure) as err:
        JwtVerifier(ISS, AUD, jwks).verify(unsigned)
    assert err.value.reason == "JWT algorithm 'none' refused"


def test_hs256_signed_with_the_public_key_is_refused(jwks: Path, keys: dict[str, Any]) -> None:
    """The classic confusion: an HMAC 'signature' keyed with the RSA public key PEM."""
    pem = (
        keys["rsa"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for alg, header_alg in (("HS256", "HS256"), ("HS256", "RS256")):  # honest header, and one that lies
        head = b64(json.dumps({"alg": header_alg, "typ": "JWT", "kid": "r1"}).encode())
        body = b64(json.dumps(claims()).encode())
        sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
        with pytest.raises(AuthFailure) as err:
            JwtVerifier(ISS, AUD, jwks).verify(f"{head}.{body}.{sig}")
        want = "JWT algorithm 'HS256' refused" if header_alg == "HS256" else "JWT signature invalid"
        assert err.value.reason == want, alg


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "JWT expired"),
        ({"nbf": int(time.time()) + 3600}, "JWT nbf/iat in the future"),
        ({"aud": "someone-else"}, "JWT audience mismatch"),
        ({"iss": "https://evil.example"}, "JWT issuer mismatch"),
        ({"exp": None}, "JWT lacks the 'exp' claim"),
        ({"sub": None}, "JWT lacks the 'sub' claim"),
        ({"roles": "admin"}, "JWT roles is not a list of strings"),
        ({"models": "shapes"}, "JWT models is not a list of strings"),
    ],
)
def test_claim_checks(jwks: Path, keys: dict[str, Any], over: dict[str, Any], reason: str) -> None:
    with pytest.raises(AuthFailure) as err:
        JwtVerifier(ISS, AUD, jwks, leeway=5).verify(token(keys["rsa"], **over))
    assert err.value.reason == reason


def test_signed_by_another_key_or_unknown_kid_or_wrong_key_type(jwks: Path, keys: dict[str, Any]) -> None:
    v = JwtVerifier(ISS, AUD, jwks)
    with pytest.raises(AuthFailure, match="invalid token") as err:
        v.verify(token(keys["other"]))  # claims the kid of the trusted key
    assert err.value.reason == "JWT signature invalid"
    with pytest.raises(AuthFailure) as err:
        v.verify(token(keys["other"], kid="r9"))
    assert err.value.reason == "no RSA key with kid 'r9' in the JWKS"
    with pytest.raises(AuthFailure) as err:
        v.verify(token(keys["ec"], "ES256", kid="r1"))  # an EC signature pointed at the RSA key
    assert err.value.reason == "no EC key with kid 'r1' in the JWKS"


def test_jwks_is_reread_when_it_changes(tmp_path: Path, keys: dict[str, Any]) -> None:
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [public_jwk(keys["rsa"], "r1")]}))
    v = JwtVerifier(ISS, AUD, p)
    with pytest.raises(AuthFailure):
        v.verify(token(keys["other"], kid="r2"))
    p.write_text(json.dumps({"keys": [public_jwk(keys["rsa"], "r1"), public_jwk(keys["other"], "r2")]}))
    import os

    os.utime(p, (time.time() + 5, time.time() + 5))
    assert v.verify(token(keys["other"], kid="r2")).sub == "alice"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "kty 'oct'"),
        ({"keys": []}, "at least one key"),
        ("not json", "not a JSON key set"),
    ],
)
def test_bad_jwks_files(tmp_path: Path, doc: Any, match: str) -> None:
    p = tmp_path / "jwks.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ConfigError, match=match):
        JwtVerifier(ISS, AUD, p)


def test_a_private_key_in_the_jwks_is_refused(tmp_path: Path, keys: dict[str, Any]) -> None:
    full = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["rsa"]))
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [full]}))
    with pytest.raises(ConfigError, match="private key"):
        JwtVerifier(ISS, AUD, p)
