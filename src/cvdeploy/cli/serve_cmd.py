"""``cvdeploy serve``: serve bundles over HTTP (Open Inference Protocol v2, image API, SageMaker, Vertex AI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cvdeploy.cli.common import bundle_key_options, console, err_console, handle_errors

if TYPE_CHECKING:
    from cvdeploy.security.setup import SecuritySetup
    from cvdeploy.serve.config import Platform, ServeConfig
    from cvdeploy.serve.ray_engine import RayOptions
    from cvdeploy.serve.server import TLSFiles

HELP = "\n\n".join(
    (
        "Serve bundles over HTTP until interrupted. A model's name is its bundle's name.",
        "  cvdeploy serve model.cvd --port 8000",
        "  curl -F image=@street.jpg http://127.0.0.1:8000/v1/models/model/detect",
        "  cvdeploy serve a.cvd b.cvd --config serve.yaml --artifact openvino-fp32",
        "Endpoints: Open Inference Protocol v2 under /v2 (Triton's tritonclient, KServe clients and "
        "perf_analyzer work unmodified, binary tensors included); the image API "
        "/v1/models/NAME/detect | segment | pose | obb | classify | predict (multipart field 'image' or a raw "
        "JPEG/PNG/BMP/WebP/TIFF body; "
        "optional conf, iou, max_det); the model repository /v2/repository/index and "
        "/v2/repository/models/NAME/load | unload | rollback; Prometheus /metrics; SageMaker /ping and "
        "/invocations; Vertex AI on AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE.",
        "On SageMaker (SM_* or SAGEMAKER_* variables, or --platform sagemaker) the server listens on "
        "0.0.0.0:8080 and, given no bundle, serves those in /opt/ml/model; on Vertex AI (AIP_* variables, "
        "or --platform vertex) on 0.0.0.0:$AIP_HTTP_PORT.",
        "Batching: by default (--batching auto) each model batches concurrent requests only where a quick "
        "measurement at load shows that it pays on this CPU and runtime; the choice and its numbers are "
        "logged and shown in GET /v2/models/NAME (parameters.batching).",
        "--config serve.yaml sets per-model batching (batching, max_batch_size, max_queue_delay_ms, queue_size), "
        "instances, timeouts, request and connection limits (limits: header/body timeouts, keep-alive, "
        "connections, header size and count) and security; unknown keys are refused. Flags win over the file.",
        "Safe defaults: the server listens on 127.0.0.1; any other address needs --db (authentication) and "
        "TLS (--tls-cert/--tls-key), or --insecure, which warns at every start. Loading, unloading and rolling "
        "back models needs an authenticated caller (--allow-anonymous-admin lifts that for local experiments "
        "without --db) and Content-Type: application/json; run-time loads read bundles only under the folders "
        "of the bundles given here (--load-root adds others); only Host names of this machine's loopback and "
        "bind address are answered (--allowed-host adds names).",
        "Secure serving: --db cvdeploy.db (SQLite, or a postgresql:// URL) holds the API keys ('cvdeploy keys "
        "create'), MFA enrolments ('cvdeploy mfa enroll') and the audit log ('cvdeploy audit verify'). Clients "
        "send 'Authorization: Bearer <key or JWT>'; viewer keys read, predictor keys also infer (on their "
        "--models), operator keys also load/unload/roll back and admin keys do everything — those two with a "
        "TOTP code in X-CVD-OTP for state changes. --jwt-issuer/--jwt-audience/--jwt-jwks accept RS256/ES256 "
        "JWTs; --tls-client-ca requires a client certificate whose CN names an API key (mutual TLS). Rate "
        "limits: security.rate_limit_principal / rate_limit_source in --config.",
        "  cvdeploy serve model.cvd --db cvdeploy.db --tls-cert certs/server.pem --tls-key certs/server.key",
        "Protected bundles ('cvdeploy protect'): --decrypt-key decrypts an encrypted bundle in memory; "
        "--trust-key refuses bundles not signed with that key, run-time loads included.",
        "Monitoring: every request's image statistics, outputs and stage latencies are recorded (off the "
        "request path) in the --db database (the one that holds the keys and audit log), and --monitor-sample of requests also keep their stage I/O "
        "(thumbnail, tensor and output summaries, result; --redact keeps no pixels). Drift against each "
        "bundle's profile.json is served at /v1/models/NAME/monitor, as cvdeploy_drift_* metrics and in the "
        "web console at /ui; 'cvdeploy monitor report --db URL' writes a report. Without --db the data lives "
        "in a temporary database removed at exit.",
        "Scale out on Ray Serve (the ray extra of cvdeploy): --engine ray runs the same app (routes, "
        "security, pipeline) as Ray Serve replicas behind Ray's proxy, batching with @serve.batch; --replicas N "
        "or --autoscale MIN,MAX; --address auto joins the cluster on this machine, ray://HOST:10001 a remote one "
        "(bundles, --db and key files must be at the same paths on its nodes); without --address a single-node "
        "cluster is started for this command on 127.0.0.1 (no dashboard, no usage statistics). Models change by "
        "redeploying there: run-time load/unload/rollback are answered 409.",
        "  cvdeploy serve model.cvd --engine ray --replicas 2 --port 8000",
    )
)


def _number(value: str | None, flag: str, kind: type, lo: float, hi: float) -> int | float | None:
    from cvdeploy.errors import ConfigError

    if value is None:
        return None
    try:
        num = kind(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a{' whole' if kind is int else ''} number") from None
    if not lo <= num <= hi:
        raise ConfigError(f"{flag} {value} must be between {lo:g} and {hi:g}")
    return num


def _platform_bundles(model_dir: str | None) -> list[str]:
    """Bundles a cloud platform put in its model folder: the folder itself, or its ``*.cvd`` folders."""
    from cvdeploy.bundle import MANIFEST
    from cvdeploy.errors import ConfigError

    if not model_dir or not Path(model_dir).is_dir():
        raise ConfigError("no bundle given: name one or more bundle folders (or zoo:n)")
    root = Path(model_dir)
    if (root / MANIFEST).is_file():
        return [str(root)]
    found = sorted(str(p) for p in root.iterdir() if (p / MANIFEST).is_file())
    if not found:
        raise ConfigError(f"no bundle given and none found in {root}; name one or more bundle folders")
    return found


@bundle_key_options
@handle_errors
def serve(
    bundles: list[str] = typer.Argument(
        None, help="Bundle folders or zoo:n / zoo:s (several models or versions)."
    ),
    host: str = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1; cloud 0.0.0.0)."),
    port: str = typer.Option(
        None, "--port", "-p", help="Port (default 8000; cloud 8080); 0 picks a free one."
    ),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help="Artifact to serve for every model, e.g. onnx-int8."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="serve.yaml: batching, instances, timeouts, limits, security."
    ),
    platform: str = typer.Option(
        None, "--platform", help="local, sagemaker, vertex or auto (default: auto)."
    ),
    instances: str = typer.Option(
        None, "--instances", help="Runtime sessions per model running side by side."
    ),
    batching: str = typer.Option(
        None, "--batching",
        help="auto (default): batch requests only where a quick measurement at load shows that batch "
        "--max-batch-size runs ≥ 1.1x the images per second of batch 1 on this CPU; on; off.",
    ),
    max_batch_size: str = typer.Option(
        None, "--max-batch-size", help="Rows per request and per runtime call; 1 = no batching."
    ),
    max_queue_delay_ms: str = typer.Option(
        None, "--max-queue-delay-ms", help="How long a batch may wait to fill."
    ),
    threads: str = typer.Option(None, "--threads", help="Intra-op threads per model instance."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning or error (default info)."),
    db: str = typer.Option(
        None,
        "--db",
        metavar="URL",
        envvar="CVDEPLOY_DB_URL",
        help="Security database (SQLite file or postgresql:// URL): API keys, MFA, audit log. "
        "Turns on authentication, RBAC, rate limits and the audit log.",
    ),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="Server certificate chain (PEM); serve HTTPS."),
    tls_key: Path = typer.Option(None, "--tls-key", help="Private key of --tls-cert (PEM)."),
    tls_client_ca: Path = typer.Option(
        None, "--tls-client-ca", help="CA of client certificates: require one (mutual TLS)."
    ),
    jwt_issuer: str = typer.Option(None, "--jwt-issuer", metavar="ISS", help="Accepted JWT issuer (iss)."),
    jwt_audience: str = typer.Option(
        None, "--jwt-audience", metavar="AUD", help="Accepted JWT audience (aud)."
    ),
    jwt_jwks: Path = typer.Option(
        None, "--jwt-jwks", metavar="FILE", help="JWKS file with the issuer's RS256/ES256 public keys."
    ),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        help="Allow listening beyond the loopback without --db and TLS (a trusted network only; warns).",
    ),
    allow_anonymous_admin: bool = typer.Option(
        False,
        "--allow-anonymous-admin",
        help="Let anonymous callers load, unload and roll back models (local experiments without --db).",
    ),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        help="A Host name clients use to reach the server (repeatable; '*': any). "
        "Default: loopback names and the bind address.",
    ),
    load_root: list[str] = typer.Option(
        None,
        "--load-root",
        help="A folder run-time loads may read bundles from (repeatable). "
        "Default: the folders of the bundles given.",
    ),
    check: bool = typer.Option(
        False, "--check", help="Load and verify everything, show what would be served, exit."
    ),
    monitor_sample: str = typer.Option(
        None, "--monitor-sample", help="Share of requests whose stage I/O is stored, 0-1 (default 0.05)."
    ),
    monitor_retention: str = typer.Option(
        None, "--monitor-retention", help="Delete monitoring data older than this, e.g. 7d (default), 24h."
    ),
    redact: bool = typer.Option(
        False, "--redact", help="Never store a request's pixels, not even a thumbnail."
    ),
    engine: str = typer.Option(
        "uvicorn", "--engine", help="uvicorn (this process) or ray (Ray Serve replicas; the ray extra)."
    ),
    replicas: int = typer.Option(None, "--replicas", min=1, max=10_000, help="--engine ray: replicas."),
    autoscale: str = typer.Option(
        None, "--autoscale", metavar="MIN,MAX", help="--engine ray: let Ray's autoscaler keep MIN..MAX replicas."
    ),
    address: str = typer.Option(
        None, "--address", help="--engine ray: auto or ray://HOST:PORT (default: a new local cluster on 127.0.0.1)."
    ),
) -> None:  # fmt: skip
    from cvdeploy.errors import ConfigError
    from cvdeploy.serve.config import load_config, resolve_platform
    from cvdeploy.serve.security import exposure

    ray_options = _ray_options(engine, replicas, autoscale, address, tls_client_ca, platform)
    cfg = load_config(config)
    if batching is not None and batching not in ("auto", "on", "off"):
        raise ConfigError(f"--batching {batching!r}: use auto, on or off")
    cfg = cfg.with_overrides(
        artifact=artifact,
        batching=batching,
        instances=_number(instances, "--instances", int, 1, 64),
        max_batch_size=_number(max_batch_size, "--max-batch-size", int, 0, 4096),
        max_queue_delay_ms=_number(max_queue_delay_ms, "--max-queue-delay-ms", float, 0, 60_000),
        threads=_number(threads, "--threads", int, 1, 256),
    )
    if allow_anonymous_admin:
        cfg.security.allow_anonymous_admin = True
    if allowed_host:
        cfg.security.allowed_hosts = [*(cfg.security.allowed_hosts or []), *allowed_host]
    if load_root:
        missing = [r for r in load_root if not Path(r).is_dir()]
        if missing:
            raise ConfigError(f"--load-root {missing[0]}: no such folder")
        cfg.repository.load_roots = [*(cfg.repository.load_roots or []), *load_root]
    if monitor_sample is not None:
        cfg.monitor.sample = float(_number(monitor_sample, "--monitor-sample", float, 0, 1) or 0.0)
    if monitor_retention is not None:
        from cvdeploy.monitor.settings import parse_duration

        parse_duration(monitor_retention, "--monitor-retention")
        cfg.monitor.retention = monitor_retention
    if redact:
        cfg.monitor.redact = True
    if log_level is not None:
        if log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"--log-level {log_level!r}: use debug, info, warning or error")
        cfg.server.log_level = log_level.lower()  # type: ignore[assignment]
    tls = _tls(tls_cert, tls_key, tls_client_ca)
    jwt = (jwt_issuer, jwt_audience, jwt_jwks)
    if db is None and any(v is not None for v in jwt):
        raise ConfigError(
            "--jwt-issuer/--jwt-audience/--jwt-jwks need --db (keys, rate limits and the audit log)"
        )
    if db is not None and cfg.security.allow_anonymous_admin:
        raise ConfigError(
            "--allow-anonymous-admin is for local experiments without --db; with --db, create an operator key "
            "('cvdeploy keys create --role operator') and enroll it for MFA ('cvdeploy mfa enroll')"
        )
    plat = resolve_platform(platform, cfg.server, host, _number(port, "--port", int, 0, 65535), os.environ)  # type: ignore[arg-type]
    warning = exposure(plat.host, plat.kind, db is not None, tls is not None, insecure)
    specs = list(bundles or [])
    if not specs and not any(m.path for m in cfg.models.values()):
        specs = _platform_bundles(plat.model_dir) if plat.kind != "local" else []
        if not specs:
            raise ConfigError("no bundle given: name one or more bundle folders (or zoo:n)")
    if tls is not None:
        tls.context()  # unreadable or mismatched certificate files: refused before anything else happens
    setup = _security_setup(db, cfg, tls, jwt) if db is not None else None
    security = setup.security() if setup is not None else None
    from cvdeploy.monitor.monitor import Monitor

    # the same database as the keys and the audit log (a temporary one without --db); reachable before any
    # model is loaded
    monitor = Monitor.open(db, cfg.monitor)
    try:
        if warning:
            _warn(warning)
        if ray_options is not None:
            _serve_ray(specs, cfg, plat, ray_options, db, tls, jwt, check, insecure)
            return
        if check:
            from cvdeploy.serve.app import create_app

            app = create_app(specs, cfg, platform=plat, security=security, monitor=monitor)
            _show(app.state.service, plat, secured=_describe(db, tls, jwt))
            return
        from cvdeploy.serve.logs import configure_logging
        from cvdeploy.serve.server import serve as run_server

        configure_logging(cfg.server.log_level, cfg.server.log_format)
        if warning:
            import logging

            logging.getLogger("cvdeploy.serve").warning(warning)

        def ready(url: str, app: object) -> None:
            _show(app.state.service, plat, url, secured=_describe(db, tls, jwt))  # type: ignore[attr-defined]

        run_server(specs, cfg, plat, security=security, on_ready=ready, tls=tls, monitor=monitor)
    finally:
        monitor.stop()
        if setup is not None:
            setup.close()


def _ray_options(
    engine: str, replicas: int | None, autoscale: str | None, address: str | None,
    tls_client_ca: Path | None, platform: str | None,
) -> RayOptions | None:  # fmt: skip
    """The Ray flags checked (None for the built-in server); a missing ray is the one-line pip hint."""
    from cvdeploy.cli.common import parse_ints
    from cvdeploy.errors import ConfigError

    if engine not in ("uvicorn", "ray"):
        raise ConfigError(f"--engine {engine!r}: use uvicorn (this process) or ray (Ray Serve replicas)")
    given = [
        f for f, v in (("--replicas", replicas), ("--autoscale", autoscale), ("--address", address)) if v
    ]
    if engine != "ray":
        if given:
            raise ConfigError(f"{given[0]} needs --engine ray")
        return None
    if replicas is not None and autoscale:
        raise ConfigError("give --replicas N or --autoscale MIN,MAX, not both")
    if tls_client_ca is not None:
        raise ConfigError(
            "--tls-client-ca needs the built-in server: Ray's proxy does not hand client certificates to "
            "the replicas; drop --engine ray or authenticate with API keys/JWTs"
        )
    if platform not in (None, "auto", "local"):
        raise ConfigError(
            f"--platform {platform} needs the built-in server; --engine ray runs locally or on Ray"
        )
    from cvdeploy._deps import require
    from cvdeploy.serve.ray_engine import RayOptions

    require("ray.serve", "serve --engine ray")
    scale = None
    if autoscale:
        lim = parse_ints(autoscale, "--autoscale")
        if len(lim) != 2 or lim[0] > lim[1]:
            raise ConfigError(f"--autoscale {autoscale!r}: give MIN,MAX with MIN <= MAX, e.g. 1,4")
        scale = (lim[0], lim[1])
    options = RayOptions(replicas=replicas or 1, autoscale=scale, address=address)
    options.check()
    return options


def _serve_ray(
    specs: list[str], cfg: ServeConfig, plat: Platform, options: RayOptions, db: str | None,
    tls: TLSFiles | None, jwt: tuple[Any, Any, Any], check: bool, insecure: bool,
) -> None:  # fmt: skip
    """``serve --engine ray``: deploy on Ray Serve, show what runs where, wait until interrupted."""
    import signal
    import threading

    from cvdeploy.security.bundlekeys import current_keys
    from cvdeploy.serve.ray_engine import SecurityFlags, deploy

    keys = current_keys()

    def path(value: Any) -> str | None:
        return str(value) if isinstance(value, str | Path) else None

    flags = SecurityFlags(
        db=db, jwt_issuer=jwt[0], jwt_audience=jwt[1], jwt_jwks=path(jwt[2]),
        tls_cert=path(tls.cert) if tls else None, tls_key=path(tls.key) if tls else None,
        decrypt_key=path(keys.decrypt_key) if keys else None, trust_key=path(keys.trust_key) if keys else None,
        insecure=insecure,
    )  # fmt: skip
    if check:
        from cvdeploy.serve.app import create_app

        app = create_app(specs, cfg, platform=plat)
        _show(app.state.service, plat, secured=_describe(db, tls, jwt))
        console.print(f"engine: Ray Serve, {_scale(options)}", highlight=False)
        return
    deployment = deploy(specs, cfg, plat, options, flags)
    # Ctrl-C and SIGTERM (what `docker stop` and Kubernetes send) both stop the deployment, as uvicorn's own
    # handlers do for the built-in server. Installed explicitly: a process started with SIGINT ignored (any
    # background job of a non-interactive shell) would otherwise never hear Ctrl-C, and SIGTERM would kill it
    # without stopping the Ray cluster it started.
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        if main
        else {}
    )
    try:
        console.print(
            f"cvdeploy serve · Ray Serve · {_scale(options)} × {deployment.threads} thread(s) · "
            f"cluster: {options.address or 'started here on 127.0.0.1'}",
            highlight=False,
        )
        console.print(
            f"listening on [bold]{deployment.url}[/]  ·  models: {deployment.url}/v2/repository/index  ·  "
            "Ctrl-C stops",
            highlight=False,
        )
        console.print(f"security: {_describe(db, tls, jwt)}", highlight=False)
        while not stop.wait(3600):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        deployment.stop()


def _scale(options: RayOptions) -> str:
    if options.autoscale:
        return f"autoscaling {options.autoscale[0]}–{options.autoscale[1]} replicas"
    return f"{options.replicas} replica{'s' if options.replicas != 1 else ''}"


def _tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> TLSFiles | None:
    from cvdeploy.errors import ConfigError
    from cvdeploy.serve.server import TLSFiles

    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if cert is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    return TLSFiles(cert, key, client_ca)  # type: ignore[arg-type]


def _security_setup(
    db: str, cfg: ServeConfig, tls: TLSFiles | None, jwt: tuple[Any, Any, Any]
) -> SecuritySetup:
    """Authentication, RBAC, rate limits and the audit log on the database ``db``."""
    from cvdeploy.security.ratelimit import Rate
    from cvdeploy.security.setup import SecuritySetup

    sec = cfg.security
    return SecuritySetup.build(
        db, *jwt,
        per_principal=Rate.parse(sec.rate_limit_principal) if sec.rate_limit_principal else None,
        per_source=Rate.parse(sec.rate_limit_source) if sec.rate_limit_source else None,
        trust_client_certs=tls is not None and tls.client_ca is not None,
    )  # fmt: skip


def _describe(db: str | None, tls: TLSFiles | None, jwt: tuple[Any, Any, Any]) -> str:
    """One line saying how this server is secured."""
    if db is None:
        who = "anonymous callers (no --db)"
    else:
        from cvdeploy.security.db import redact

        who = "API keys" + (" and JWTs" if jwt[0] else "") + f", RBAC, rate limits, audit log in {redact(db)}"
    if tls is None:
        return f"{who}; plain HTTP"
    return f"{who}; TLS ≥ 1.2" + (" with client certificates (mutual TLS)" if tls.client_ca else "")


def _warn(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _show(state: object, plat: object, url: str | None = None, secured: str | None = None) -> None:
    from rich.table import Table

    from cvdeploy.serve.security import AnonymousAuthenticator

    repo = state.repository  # type: ignore[attr-defined]
    table = Table(title=f"cvdeploy serve · {plat.kind}", title_justify="left")  # type: ignore[attr-defined]
    for col in ("model", "serving", "artifact", "task", "batch", "instances", "bundle"):
        table.add_column(col)
    for name in sorted(repo.models):
        e = repo.models[name]
        mv = e.versions[e.serving]
        b = mv.batching
        batch = f"≤{b.max_batch_size}, {mv.config.max_queue_delay_ms:g} ms" if mv.batcher.batching else "off"
        if b.measurement is not None:
            batch += f" (measured {b.measurement.gain:.2f}x)"
        table.add_row(
            name, f"v{mv.version}", mv.artifact.name, mv.contract.task, batch, str(len(mv.pipelines)),
            str(mv.bundle.path),
        )  # fmt: skip
    console.print(table)
    if url:
        first = sorted(repo.models)[0]
        curl = "curl" + (" --cacert CA.pem" if url.startswith("https") else "")
        if not isinstance(state.security.authenticator, AnonymousAuthenticator):  # type: ignore[attr-defined]
            curl += ' -H "Authorization: Bearer $KEY"'
        console.print(
            f"listening on [bold]{url}[/]  ·  try: {curl} -F image=@photo.jpg {url}/v1/models/{first}/detect",
            highlight=False,
        )
    if secured:
        console.print(f"security: {secured}", highlight=False)
    mon = getattr(state, "observer", None)
    if mon is not None and url:
        where = "a temporary database (--db keeps it)" if mon.temporary else "the --db database"
        console.print(f"monitoring into {where}: sample {mon.config.sample:.0%}, retention {mon.config.retention}"
                      f"{', images redacted' if mon.config.redact else ''}  ·  console: {url}/ui")  # fmt: skip
    if state.security.allow_anonymous_admin:  # type: ignore[attr-defined]
        console.print("[yellow]warning:[/] anonymous callers may load, unload and roll back models")


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve)


def main() -> None:
    """``python -m cvdeploy.cli.serve_cmd BUNDLE ...``: the serve command on its own (used by benchmarks)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
