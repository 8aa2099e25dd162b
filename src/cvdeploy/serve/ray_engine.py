"""Running the server on Ray Serve: ``cvdeploy serve BUNDLE... --engine ray``.

    deploy(bundles, config, platform, RayOptions(...)) → RayDeployment(.url, .stop())

    --address none   a new single-node Ray cluster in this process tree, bound for 127.0.0.1: no
                     dashboard, no usage statistics, CPUs = those this process may use
    --address auto   the cluster already running on this machine (``ray start --head``)
    --address ray://HOST:10001   a remote cluster through Ray Client; bundle paths, the security
                     database and key files must exist at the same paths on its nodes

Ray's proxy listens on ``--host``/``--port`` (and terminates TLS with ``--tls-cert``/``--tls-key``);
the same secure-defaults rule as the single-process server decides whether that address is allowed.
The application itself (routes, security, batching with ``@serve.batch``) is
:mod:`cvdeploy.serve.ray_app` and :mod:`cvdeploy.serve.ray_replica`, shared with
``cvdeploy package --target ray``.

What the single-process server does and Ray's proxy does not: Ray's proxy is its own uvicorn, so the
head/body deadlines at the socket, the connection cap and the parser's header-size cap of
:mod:`cvdeploy.serve.server` are not in front of the replicas (the replicas still refuse oversized
and late bodies, too many or too large headers, unknown Host names), and a client certificate does
not reach them: mutual TLS (``--tls-client-ca``) is refused here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError, CvdeployError
from cvdeploy.serve.config import Platform, ServeConfig

log = logging.getLogger("cvdeploy.serve.ray")

__all__ = ["APP_NAME", "RayDeployment", "RayOptions", "SecurityFlags", "deploy"]

#: The Serve application's name on the cluster (``serve status`` shows it).
APP_NAME = "cvdeploy"


@dataclass(frozen=True)
class RayOptions:
    """How the deployment scales and where it runs (see the module docstring for ``address``)."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max): Ray's autoscaler decides in between
    address: str | None = None  # None: a new local cluster on 127.0.0.1; "auto"; "ray://HOST:PORT"
    threads: int | None = (
        None  # per replica; None: --threads, else the cluster's CPUs shared by the most replicas
    )
    startup_timeout_s: float = 300.0

    def check(self) -> None:
        """Refuse impossible combinations with one line each."""
        if self.replicas < 1:
            raise ConfigError(f"--replicas {self.replicas}: give at least 1")
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if lo < 1 or lo > hi:
                raise ConfigError(f"--autoscale {lo},{hi}: give MIN,MAX with 1 <= MIN <= MAX, e.g. 1,4")
        if self.address is not None and self.address != "auto" and not self.address.startswith("ray://"):
            raise ConfigError(
                f"--address {self.address!r}: use auto (the cluster on this machine) or ray://HOST:PORT"
            )

    @property
    def most_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


@dataclass(frozen=True)
class SecurityFlags:
    """The server's security flags, passed on to every replica (which builds its own objects)."""

    db: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    decrypt_key: str | None = None
    trust_key: str | None = None
    insecure: bool = False  # --insecure: allow a proxy beyond the loopback without --db and TLS


class RayDeployment:
    """A running deployment: ``.url``, ``.threads`` (per replica), ``.stop()``; also a context manager."""

    def __init__(self, url: str, threads: int, own_cluster: bool) -> None:
        self.url = url
        self.threads = threads
        self.own_cluster = own_cluster

    def stop(self) -> None:
        """Delete the application; shut the cluster down when this process started it."""
        import ray
        from ray import serve

        with contextlib.suppress(Exception):
            if self.own_cluster:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        if ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def deploy(
    bundles: Sequence[str | Path],
    config: ServeConfig,
    platform: Platform,
    options: RayOptions,
    security: SecurityFlags | None = None,
) -> RayDeployment:
    """Start (or join) a Ray cluster, run the application on it and wait until it answers."""
    options.check()
    sec = security or SecurityFlags()
    if platform.kind != "local":
        raise ConfigError(
            f"--engine ray runs its own proxy; --platform {platform.kind} needs the built-in server"
        )
    specs = _bundle_specs(bundles, remote=options.address is not None and options.address != "auto")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray is imported: nothing is sent anywhere
    ray = require("ray", "serve --engine ray")
    from ray import serve

    from cvdeploy.serve.ray_app import build_app
    from cvdeploy.serve.ray_replica import RayAppArgs, config_args

    own = options.address is None
    if ray.is_initialized():
        ray.shutdown()
    if own:
        from cvdeploy.env import available_cpus

        ray.init(
            address="local", num_cpus=available_cpus(), include_dashboard=False, _node_ip_address="127.0.0.1",
            namespace="cvdeploy", configure_logging=False, log_to_driver=True,
            runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
        )  # fmt: skip
    else:
        ray.init(address=options.address, namespace="cvdeploy", configure_logging=False, log_to_driver=True)
    try:
        threads = options.threads or config.defaults.threads or _fair_threads(ray, options.most_replicas)
        port = platform.port or _free_port(platform.host)
        http: dict[str, Any] = {"host": platform.host, "port": port,
                                "keep_alive_timeout_s": int(config.limits.keep_alive_s)}  # fmt: skip
        if sec.tls_cert and sec.tls_key:
            http.update(
                ssl_certfile=str(Path(sec.tls_cert).resolve()), ssl_keyfile=str(Path(sec.tls_key).resolve())
            )
        serve.start(http_options=http, proxy_location="HeadOnly")
        host, port = _proxy_address(platform.host, port)
        if host != platform.host:  # the secure-defaults rule, again, for where the proxy really listens
            from cvdeploy.serve.security import exposure

            warning = exposure(host, "local", sec.db is not None, bool(sec.tls_cert), sec.insecure)
            if warning:
                log.warning(warning)
        args = RayAppArgs(
            bundles=specs, config=config_args(config), host=host,
            port=port, replicas=options.replicas, autoscale=options.autoscale, threads=threads, db=sec.db,
            jwt_issuer=sec.jwt_issuer, jwt_audience=sec.jwt_audience, jwt_jwks=_abs(sec.jwt_jwks),
            secrets_dir=_secrets_dir(sec.db, own), decrypt_key=_abs(sec.decrypt_key), trust_key=_abs(sec.trust_key),
        )  # fmt: skip
        try:
            serve.run(
                build_app(args.model_dump(mode="json")), name=APP_NAME, route_prefix="/", blocking=False
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CvdeployError(
                f"the Ray Serve deployment did not start ({first[:300]}); the replica log above says why"
            ) from None
        url = _url(host, port, tls=bool(sec.tls_cert))
        _wait_ready(url, options.startup_timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            serve.shutdown() if own else serve.delete(APP_NAME)
        ray.shutdown()
        raise
    return RayDeployment(url, threads, own)


def _proxy_address(host: str, port: int) -> tuple[str, int]:
    """Where Ray's proxy really listens: a cluster whose Serve already runs keeps its own address."""
    try:
        from ray.serve.context import _get_global_client  # no public accessor for the running options

        client = _get_global_client()
        running = client.http_config if client is not None else None
        real = (str(running.host), int(running.port)) if running is not None else (host, port)
    except Exception:  # pragma: no cover - an older or newer Ray without it: trust what was asked
        return host, port
    if real != (host, port):
        log.warning("Serve already runs on this cluster at %s:%d; --host/--port are not applied", *real)
    return real


def _bundle_specs(bundles: Sequence[str | Path], remote: bool) -> list[str]:
    """Absolute paths (or ``zoo:`` names) every replica can open; each is opened and verified here first
    unless the cluster is remote and the path does not exist on this machine."""
    from cvdeploy.bundle import Bundle

    specs: list[str] = []
    for b in bundles:
        text = str(b)
        if text.startswith("zoo:"):
            Bundle.load(text)
            specs.append(text)
            continue
        path = Path(text).expanduser()
        if path.exists() or not remote:
            Bundle.load(path)  # a bad bundle is a one-line error before any cluster starts
            path = path.resolve()
        specs.append(str(path))
    if not specs:
        raise ConfigError("no bundle given: name one or more bundle folders (or zoo:n)")
    return specs


def _fair_threads(ray: Any, replicas: int) -> int:
    """Each replica's share of the cluster's CPUs (at most one node's), at least 1."""
    total = float(ray.cluster_resources().get("CPU", 1))
    per_node = max(
        (float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=total
    )
    return max(1, int(min(per_node, total // max(1, replicas))))


def _secrets_dir(db: str | None, own: bool) -> str | None:
    """On a cluster started here the replicas share this user's key folder; elsewhere each node's default."""
    if db is None or not own:
        return None
    from cvdeploy.security.serverkeys import default_secrets_dir

    return str(default_secrets_dir().resolve())


def _abs(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _free_port(host: str) -> int:
    """A port free now on ``host`` (Ray's proxy needs a number; ``--port 0`` asks for any)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url(host: str, port: int, tls: bool) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _wait_ready(url: str, timeout_s: float) -> None:
    """Until the app answers through the proxy (it starts a moment after the replicas): a 200 from the
    readiness route, or any answer of a replica (``X-CVD-Replica``; e.g. 421 when ``--allowed-host``
    leaves out the loopback names this probe uses)."""
    from cvdeploy.serve.ray_replica import REPLICA_HEADER

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = (
        False,
        ssl.CERT_NONE,
    )  # a local probe of our own proxy, no credentials
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5, context=ctx) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if exc.headers.get(REPLICA_HEADER):
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise CvdeployError(f"the Ray Serve proxy at {url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.25)
