"""JWT bearer tokens (via PyJWT): RS256/ES256 only, verified against a JWKS file.

Checked on every token: the algorithm is RS256 or ES256 and matches the key's type (an ``alg: none``
token or an HS256 token "signed" with the public key is refused before any verification is tried,
and PyJWT is only ever handed the one asymmetric algorithm); the signature against the JWKS key named
by ``kid`` (or the only key of the right type); ``iss`` and ``aud`` equal the configured values;
``exp`` is present and not past, ``nbf`` (when present) not in the future, with ``leeway`` seconds of
clock skew. Claims: ``sub`` (who), ``roles`` (list of role names; unknown names are ignored), optional
``models`` (list: the scope) and optional ``amr`` (RFC 8176: ``mfa``/``otp`` there counts as the
second factor, given by the identity provider).

The JWKS file is re-read when it changes on disk, so keys rotate without a restart. Symmetric keys
(``kty: oct``) in it are refused when it is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError
from cvdeploy.security.errors import AuthFailure

__all__ = ["ALGORITHMS", "Claims", "JwtVerifier", "looks_like_jwt"]

#: The only algorithms accepted, with the JWK key type each needs.
ALGORITHMS: dict[str, str] = {"RS256": "RSA", "ES256": "EC"}
MFA_AMR = frozenset({"mfa", "otp"})


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its holder."""

    sub: str
    roles: tuple[str, ...]
    models: tuple[str, ...] | None
    mfa: bool


class JwtVerifier:
    """Verifies tokens of one issuer and audience against the public keys in a JWKS file."""

    def __init__(self, issuer: str, audience: str, jwks: str | Path, leeway: float = 30.0) -> None:
        require("jwt", "JWT authentication")
        if not issuer or not audience:
            raise ConfigError("JWT authentication needs both --jwt-issuer and --jwt-audience")
        self.issuer = issuer
        self.audience = audience
        self.path = Path(jwks)
        self.leeway = leeway
        self._mtime: float | None = None
        self._keys: list[tuple[str | None, str, Any]] = []  # (kid, kty, PyJWK)
        self._load()

    def _load(self) -> None:
        import jwt

        try:
            stat = os.stat(self.path)
        except OSError:
            raise ConfigError(f"--jwt-jwks {self.path}: no such file") from None
        if self._mtime == stat.st_mtime:
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--jwt-jwks {self.path}: not a JSON key set ({exc})") from None
        entries = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f'--jwt-jwks {self.path}: expected {{"keys": [...]}} with at least one key')
        keys: list[tuple[str | None, str, Any]] = []
        for i, entry in enumerate(entries):
            kty = entry.get("kty") if isinstance(entry, dict) else None
            if kty not in ("RSA", "EC"):
                raise ConfigError(
                    f"--jwt-jwks {self.path}: key {i} has kty {kty!r}; only RSA and EC public keys are accepted"
                )
            if any(p in entry for p in ("d", "p", "q")):
                raise ConfigError(
                    f"--jwt-jwks {self.path}: key {i} contains a private key; publish public keys only"
                )
            if kty == "EC" and entry.get("crv") != "P-256":
                raise ConfigError(f"--jwt-jwks {self.path}: EC key {i} must use curve P-256 (ES256)")
            alg = "RS256" if kty == "RSA" else "ES256"
            try:
                keys.append((entry.get("kid"), kty, jwt.PyJWK(entry, algorithm=alg)))
            except jwt.PyJWKError as exc:
                raise ConfigError(f"--jwt-jwks {self.path}: key {i} is not usable ({exc})") from None
        self._keys = keys
        self._mtime = stat.st_mtime

    def _key_for(self, kid: str | None, kty: str) -> Any:
        typed = [k for k in self._keys if k[1] == kty]
        if kid is not None:
            for k in typed:
                if k[0] == kid:
                    return k[2]
            raise AuthFailure("invalid token", f"no {kty} key with kid {kid!r} in the JWKS")
        if len(typed) == 1:
            return typed[0][2]
        raise AuthFailure("invalid token", "token has no kid and the JWKS has several keys of its type")

    def verify(self, token: str) -> Claims:
        """The claims of a valid token, or :class:`AuthFailure` saying what was wrong."""
        import jwt

        self._load()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthFailure("invalid token", "malformed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthFailure(
                "invalid token: only RS256 and ES256 are accepted", f"JWT algorithm {alg!r} refused"
            )
        key = self._key_for(header.get("kid"), ALGORITHMS[alg])
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise AuthFailure("token expired", "JWT expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailure("token not valid yet", "JWT nbf/iat in the future") from None
        except jwt.InvalidAudienceError:
            raise AuthFailure("invalid token", "JWT audience mismatch") from None
        except jwt.InvalidIssuerError:
            raise AuthFailure("invalid token", "JWT issuer mismatch") from None
        except jwt.InvalidSignatureError:
            raise AuthFailure("invalid token", "JWT signature invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailure("invalid token", f"JWT lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise AuthFailure("invalid token", f"JWT refused ({type(exc).__name__})") from None
        sub = claims.get("sub")
        roles = claims.get("roles", [])
        models = claims.get("models")
        amr = claims.get("amr", [])
        if not isinstance(sub, str) or not sub:
            raise AuthFailure("invalid token", "JWT sub is not a string")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthFailure("invalid token", "JWT roles is not a list of strings")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise AuthFailure("invalid token", "JWT models is not a list of strings")
        mfa = isinstance(amr, list) and bool(MFA_AMR & {a for a in amr if isinstance(a, str)})
        return Claims(sub, tuple(roles), tuple(models) if models is not None else None, mfa)
