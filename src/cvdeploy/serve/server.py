"""Running the app under uvicorn: in the foreground (``cvdeploy serve``) or in a background thread.

uvicorn uses uvloop and httptools when they are installed. The listening socket is bound here,
before uvicorn starts, so a busy port is a one-line error and port 0 picks a free one.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError
from cvdeploy.serve.config import Platform, ServeConfig, resolve_platform
from cvdeploy.serve.security import Security

log = logging.getLogger("cvdeploy.serve")


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


def _uvicorn_server(app: Any, config: ServeConfig) -> Any:
    uvicorn = require("uvicorn", "serving")
    ucfg = uvicorn.Config(
        app,
        loop="auto",
        http="auto",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_keep_alive=30,
        server_header=False,
        log_level=config.server.log_level,
    )
    return uvicorn.Server(ucfg)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"http://{shown}:{port}"


def serve(
    bundles: Sequence[str | Path],
    config: ServeConfig | None = None,
    platform: Platform | None = None,
    security: Security | None = None,
    on_ready: Any = None,
) -> None:
    """Load the bundles and serve them in the foreground until interrupted."""
    from cvdeploy.serve.app import create_app

    cfg = config or ServeConfig()
    plat = platform or resolve_platform(None, cfg.server)
    app = create_app(bundles, cfg, platform=plat, security=security)
    sock = bind_socket(plat.host, plat.port)
    server = _uvicorn_server(app, cfg)
    if on_ready is not None:
        on_ready(_url(sock), app)
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
) -> ServerHandle:
    """Serve ``bundles`` from a daemon thread; returns once the server accepts requests.

    ``port=0`` picks a free port (read it from ``handle.url``). Call ``handle.stop()`` when done.
    """
    from cvdeploy.serve.app import create_app

    cfg = config or ServeConfig()
    plat = Platform("local", host, port)
    app = create_app(bundles, cfg, platform=plat, security=security)
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, cfg)
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
    return ServerHandle(_url(sock), app, server, thread, sock)
