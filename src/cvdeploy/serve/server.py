"""Running the app under uvicorn: in the foreground (``cvdeploy serve``) or in a background thread.

The listening socket is bound here, before uvicorn starts, so a busy port is a one-line error and
port 0 picks a free one. Connection hygiene (``limits:`` of the config) comes from the server, not
from a parser of ours:

- uvicorn's **h11** protocol (pure Python, strict HTTP/1.1 parsing; the httptools protocol has no
  limit on header size) with ``h11_max_incomplete_event_size`` = ``limits.max_header_bytes``:
  a request line plus headers larger than that is refused with 400 and the connection closed;
- ``limit_concurrency`` = ``limits.max_connections`` (more connections are answered 503) and
  ``timeout_keep_alive`` = ``limits.keep_alive_s``;
- what uvicorn lacks — a deadline for a request's head and body that slow clients cannot extend
  by trickling bytes — is :func:`hardened_h11`: uvicorn's own h11 protocol with two timers driven
  by h11's connection state (h11 still does all the parsing). The app answers a late body with a
  408 at ``limits.body_timeout_s``; the protocol closes the connection at that deadline plus a
  grace period whatever the app does, and at ``limits.header_timeout_s`` if the head is unfinished.

TLS (``TLSFiles``: ``--tls-cert``/``--tls-key``, optionally ``--tls-client-ca`` for mutual TLS)
terminates in the same server with :func:`cvdeploy.security.certs.server_context` (TLS 1.2 the
floor; with a client CA a verified client certificate is required in the handshake). uvicorn does
not fill the ASGI ``tls`` extension, so the protocol puts the verified client certificate of each
connection into every request's ``scope["extensions"]["tls"]`` (:func:`~cvdeploy.serve.security.tls_extension`).

Chosen over hypercorn (has ``read_timeout`` per read — reset by every trickled byte — and no
connection limit) and granian (a Rust server with a header-read timeout, buffer limit and
back-pressure, but no body deadline; it runs the app in its own worker processes, so the
in-process background server, its tests and ``make demo`` would need another shape, and its
embedded mode is experimental): uvicorn + h11 + two timers gives every limit the issue names
while keeping one server for the foreground, background and tests.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError
from cvdeploy.serve.config import Platform, ServeConfig, resolve_platform
from cvdeploy.serve.security import Security, tls_extension

log = logging.getLogger("cvdeploy.serve")


@dataclass(frozen=True)
class TLSFiles:
    """The server's certificate chain and key (PEM), and the CA that client certificates must chain to
    (mutual TLS; None: no client certificate asked for)."""

    cert: str | Path
    key: str | Path
    client_ca: str | Path | None = None

    def context(self) -> ssl.SSLContext:
        """A server context, TLS ≥ 1.2; unreadable or mismatched files are a one-line ConfigError."""
        from cvdeploy.security.certs import server_context

        for flag, path in (
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
            ("--tls-client-ca", self.client_ca),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{flag} {path}: no such file")
        return server_context(self.cert, self.key, self.client_ca)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6); a busy or invalid address is a ConfigError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; choose another with --port"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def hardened_h11(header_timeout_s: float, body_timeout_s: float) -> type:
    """uvicorn's h11 protocol with deadlines for a request's head and body (see the module docstring).

    The head deadline starts when a connection opens or when the first byte of a further request on a
    kept-alive connection arrives; the body deadline when the head is complete. Data arriving does not
    extend either. Idle kept-alive connections are uvicorn's ``timeout_keep_alive`` business.
    """
    require("uvicorn", "serving")
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HardenedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _phase: str = ""
        _tls: dict[str, Any] | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._tls = tls_extension(transport.get_extra_info("ssl_object"))  # verified client cert
            self._arm("head", header_timeout_s)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:
                self._arm("head", header_timeout_s)  # a further request on a kept-alive connection
            super().data_received(data)

        def handle_events(self) -> None:
            before = self.scope
            super().handle_events()
            if self._tls is not None and self.scope is not before and self.scope is not None:
                # a new request's scope; its task is scheduled and has not run yet
                scope: dict[str, Any] = self.scope  # type: ignore[assignment]
                scope.setdefault("extensions", {}).setdefault("tls", self._tls)
            state = self.conn.their_state
            if state is h11.SEND_BODY and self._phase != "body":
                self._arm("body", body_timeout_s + 5.0)  # the app answers 408 first; this is the backstop
            elif state is not h11.IDLE and state is not h11.SEND_BODY:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline, self._phase = None, ""

        def _expired(self) -> None:
            self._deadline = None
            log.info("closing a connection whose request %s did not arrive in time", self._phase)
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            if not self.transport.is_closing():
                self.transport.close()

    return HardenedH11Protocol


def _uvicorn_server(app: Any, config: ServeConfig, tls: ssl.SSLContext | None = None) -> Any:
    uvicorn = require("uvicorn", "serving")
    limits = config.limits
    factory = (lambda _config, _default: tls) if tls is not None else None
    ucfg = uvicorn.Config(
        app,
        loop="auto",
        http=hardened_h11(limits.header_timeout_s, limits.body_timeout_s),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        log_level=config.server.log_level,
        ssl_context_factory=factory,
    )
    return uvicorn.Server(ucfg)


def _url(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def serve(
    bundles: Sequence[str | Path],
    config: ServeConfig | None = None,
    platform: Platform | None = None,
    security: Security | None = None,
    on_ready: Any = None,
    tls: TLSFiles | None = None,
    monitor: Any = None,
) -> None:
    """Load the bundles and serve them in the foreground until interrupted (over TLS with ``tls``;
    ``monitor``: a :class:`cvdeploy.monitor.Monitor` watching every inference)."""
    from cvdeploy.serve.app import create_app
    from cvdeploy.serve.process import freeze_startup_objects, keep_large_buffers

    cfg = config or ServeConfig()
    plat = platform or resolve_platform(None, cfg.server)
    context = tls.context() if tls is not None else None  # a bad certificate fails before any model loads
    keep_large_buffers()  # this process is the server's own
    app = create_app(bundles, cfg, platform=plat, security=security, monitor=monitor)
    sock = bind_socket(plat.host, plat.port)
    server = _uvicorn_server(app, cfg, context)
    freeze_startup_objects()  # the models are loaded: what lives now lives as long as the server
    if on_ready is not None:
        on_ready(_url(sock, context is not None), app)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class ServerHandle:
    """A server running in a background thread: ``.url``, ``.app``, ``.stop()``; also a context manager."""

    def __init__(
        self, url: str, app: Any, server: Any, thread: threading.Thread, sock: socket.socket
    ) -> None:
        self.url = url
        self.app = app
        self._server = server
        self._thread = thread
        self._sock = sock

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to finish in-flight requests and exit; waits up to ``timeout`` seconds."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_background(
    bundles: Sequence[str | Path],
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServeConfig | None = None,
    security: Security | None = None,
    startup_timeout: float = 60.0,
    tls: TLSFiles | None = None,
    monitor: Any = None,
) -> ServerHandle:
    """Serve ``bundles`` from a daemon thread; returns once the server accepts requests.

    ``port=0`` picks a free port (read it from ``handle.url``: ``https://`` with ``tls``). Call
    ``handle.stop()`` when done.
    """
    from cvdeploy.serve.app import create_app

    cfg = config or ServeConfig()
    plat = Platform("local", host, port)
    context = tls.context() if tls is not None else None
    app = create_app(bundles, cfg, platform=plat, security=security, monitor=monitor)
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, cfg, context)
    server.config.install_signal_handlers = False  # older uvicorn; newer ones skip them off the main thread
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="cvdeploy-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError("the server thread stopped during start-up; see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server did not start within {startup_timeout:.0f} s")
        time.sleep(0.02)
    return ServerHandle(_url(sock, context is not None), app, server, thread, sock)
