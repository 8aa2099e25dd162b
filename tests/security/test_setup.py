"""The pieces satisfy the server's seams (serve/security.py) and SecuritySetup wires them together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyotp
import pytest

from cvdeploy.security.audit import AuditLog, AuditSink
from cvdeploy.security.authn import BearerAuthenticator
from cvdeploy.security.authz import RbacAuthorizer
from cvdeploy.security.setup import SecuritySetup
from cvdeploy.serve.errors import Forbidden, NotFound, Unauthorized
from cvdeploy.serve.security import Authenticator, Authorizer, Connection, Event, EventSink, Security


def test_the_protocols_are_satisfied(db_url: str, secrets_dir: Path) -> None:
    setup = SecuritySetup.build(db_url, secrets_dir=secrets_dir)
    try:
        assert isinstance(setup.authenticator, BearerAuthenticator) and isinstance(
            setup.authenticator, Authenticator
        )
        assert isinstance(setup.authorizer, RbacAuthorizer) and isinstance(setup.authorizer, Authorizer)
        assert isinstance(setup.sink, AuditSink) and isinstance(setup.sink, EventSink)
        assert isinstance(AuditLog(setup.db, setup.server_keys), EventSink)
        assert isinstance(setup.security(), Security)
    finally:
        setup.close()


def test_a_request_through_the_seam(db_url: str, secrets_dir: Path) -> None:
    setup = SecuritySetup.build(db_url, secrets_dir=secrets_dir)
    security = setup.security()
    try:
        new = setup.keys.create("ops", "operator", ["shapes"])
        secret = setup.mfa.enroll(new.key.id).secret
        plain = Connection({"authorization": f"Bearer {new.token}"}, ("10.0.0.9", 1))
        who = asyncio.run(security.authenticate(plain))
        security.authorize(who, "infer", "model:shapes")
        security.emit(Event("infer", "model:shapes", who.id, "success", {"images": 1}))
        with pytest.raises(NotFound):
            security.authorize(who, "infer", "model:cars")
        with pytest.raises(Unauthorized, match="second factor"):
            security.authorize(who, "load", "model:shapes")
        with_otp = Connection({"authorization": f"Bearer {new.token}", "x-cvd-otp": pyotp.TOTP(secret).now()},
                              ("10.0.0.9", 1))  # fmt: skip
        security.authorize(asyncio.run(security.authenticate(with_otp)), "load", "model:shapes")
        with pytest.raises(Forbidden):
            security.authorize(who, "metrics", "server")
        anonymous = asyncio.run(security.authenticate(Connection({}, ("10.0.0.8", 1))))
        security.authorize(anonymous, "health", "server")
        assert setup.sink.flush(30)
        rows = setup.audit.tail(20)
        assert [(r["action"], r["outcome"]) for r in rows] == [
            ("keys.create", "success"),
            ("mfa.enroll", "success"),
            ("infer", "success"),
            ("infer", "failure"),
            ("load", "failure"),
            ("metrics", "failure"),
        ]
        assert setup.audit.verify().ok
    finally:
        setup.close()


def test_jwt_flags_come_as_a_set(tmp_path: Path, secrets_dir: Path) -> None:
    from cvdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="all three"):
        SecuritySetup.build(tmp_path / "x.db", jwt_issuer="iss", secrets_dir=secrets_dir)
