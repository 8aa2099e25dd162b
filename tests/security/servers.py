"""Real secured servers for the serving tests: uvicorn over TLS (certificates from ``cvdeploy certs dev``),
the security database, and clients that trust the dev CA."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp

from cvdeploy.security.certs import client_context
from cvdeploy.security.ratelimit import FailedAuthThrottle, Rate
from cvdeploy.security.setup import SecuritySetup
from cvdeploy.serve import ServerHandle, run_in_background
from cvdeploy.serve.config import ServeConfig
from cvdeploy.serve.logs import JsonFormatter
from cvdeploy.serve.server import TLSFiles

NAME = "tiny"
LOOSE = Rate(10_000, 10_000)  # the limiter's whole code path, but never a refusal


@dataclass(frozen=True)
class Certs:
    """The files ``cvdeploy certs dev -o DIR`` writes."""

    dir: Path

    def __getattr__(self, name: str) -> Path:  # ca_pem, server_pem, server_key, client_pem, client_key
        stem, _, ext = name.rpartition("_")
        if not stem:
            raise AttributeError(name)
        return self.dir / f"{stem}.{ext}"


def dev_certs(out: Path) -> Certs:
    from cvdeploy.cli.main import run

    assert run(["certs", "dev", "-o", str(out)]) == 0
    return Certs(out)


@dataclass
class SecureServer:
    """A running server with its security setup; every secret it hands out is remembered (``secrets``)
    so a test can look for it where it must never be (logs, the database file)."""

    handle: ServerHandle
    setup: SecuritySetup
    certs: Certs
    secrets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.handle.url

    def client(self, cert: bool = False, context: ssl.SSLContext | None = None, **kw: Any) -> httpx.Client:
        ctx = context or client_context(
            self.certs.ca_pem,
            self.certs.client_pem if cert else None,
            self.certs.client_key if cert else None,
        )
        return httpx.Client(base_url=self.url, verify=ctx, timeout=60, **kw)

    def key(self, role: str, models: list[str] | None = None, name: str = "t", **kw: Any) -> tuple[str, str]:
        """A new API key → (id, token)."""
        new = self.setup.keys.create(name, role, models, **kw)
        self.secrets.append(new.token)
        return new.key.id, new.token

    def totp(self, key_id: str) -> pyotp.TOTP:
        secret = self.setup.mfa.enroll(key_id).secret
        self.secrets.append(secret)
        return pyotp.TOTP(secret)

    def audit(self, n: int = 200) -> list[dict[str, Any]]:
        assert self.setup.sink.flush(30)
        return self.setup.audit.tail(n)

    def stop(self) -> None:
        self.handle.stop()
        self.setup.close()


def start(
    bundles: list[Path], db: str | Path, secrets_dir: Path, certs: Certs, *, mtls: bool = False,
    jwt: tuple[str, str, Path] | None = None, per_principal: Rate | None = LOOSE, per_source: Rate | None = LOOSE,
    throttle: FailedAuthThrottle | None = None, config: ServeConfig | None = None,
) -> SecureServer:  # fmt: skip
    """Serve ``bundles`` on 127.0.0.1 over TLS with authentication, RBAC, rate limits and audit on ``db``."""
    setup = SecuritySetup.build(
        db, *(jwt or (None, None, None)), secrets_dir=secrets_dir, per_principal=per_principal,
        per_source=per_source, trust_client_certs=mtls,
        throttle=throttle or FailedAuthThrottle(free=10_000),  # attack cases must not slow the others down
    )  # fmt: skip
    tls = TLSFiles(certs.server_pem, certs.server_key, certs.ca_pem if mtls else None)
    try:
        handle = run_in_background(bundles, config=config, security=setup.security(), tls=tls)
    except BaseException:
        setup.close()
        raise
    return SecureServer(handle, setup, certs)


class Captured(logging.Handler):
    """Every log line of the server (cvdeploy and uvicorn loggers, DEBUG up), formatted as it would ship."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def capture_logs() -> Iterator[Captured]:
    handler = Captured()
    loggers = [logging.getLogger(n) for n in ("cvdeploy", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False  # DEBUG lines are for this handler, not for whatever the root prints
    try:
        yield handler
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


def bearer(token: str | None, otp: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if otp is not None:
        headers["X-CVD-OTP"] = otp
    return headers
