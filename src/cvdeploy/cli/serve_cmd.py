"""``cvdeploy serve``: serve bundles over HTTP (Open Inference Protocol v2, image API, SageMaker, Vertex AI)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors

HELP = "\n\n".join(
    (
        "Serve bundles over HTTP until interrupted. A model's name is its bundle's name.",
        "  cvdeploy serve model.cvd --port 8000",
        "  curl -F image=@street.jpg http://127.0.0.1:8000/v1/models/model/detect",
        "  cvdeploy serve a.cvd b.cvd --config serve.yaml --artifact openvino-fp32",
        "Endpoints: Open Inference Protocol v2 under /v2 (Triton's tritonclient, KServe clients and "
        "perf_analyzer work unmodified, binary tensors included); the image API "
        "/v1/models/NAME/detect | classify | predict (multipart field 'image' or a raw JPEG/PNG/WebP body; "
        "optional conf, iou, max_det); the model repository /v2/repository/index and "
        "/v2/repository/models/NAME/load | unload | rollback; Prometheus /metrics; SageMaker /ping and "
        "/invocations; Vertex AI on AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE.",
        "On SageMaker (SM_* or SAGEMAKER_* variables, or --platform sagemaker) the server listens on "
        "0.0.0.0:8080 and, given no bundle, serves those in /opt/ml/model; on Vertex AI (AIP_* variables, "
        "or --platform vertex) on 0.0.0.0:$AIP_HTTP_PORT.",
        "--config serve.yaml sets per-model batching (max_batch_size, max_queue_delay_ms, queue_size), "
        "instances, timeouts, request and connection limits (limits: header/body timeouts, keep-alive, "
        "connections, header size and count) and security; unknown keys are refused. Flags win over the file.",
        "Safe defaults: loading, unloading and rolling back models needs an authenticated caller "
        "(--allow-anonymous-admin lifts that for local experiments) and Content-Type: application/json; "
        "run-time loads read bundles only under the folders of the bundles given here (--load-root adds "
        "others); only Host names of this machine's loopback and bind address are answered (--allowed-host "
        "adds names).",
        "Monitoring: every request's image statistics, outputs and stage latencies are recorded (off the "
        "request path) in the --db database, and --monitor-sample of requests also keep their stage I/O "
        "(thumbnail, tensor and output summaries, result; --redact keeps no pixels). Drift against each "
        "bundle's profile.json is served at /v1/models/NAME/monitor, as cvdeploy_drift_* metrics and in the "
        "web console at /ui; 'cvdeploy monitor report --db URL' writes a report. Without --db the data lives "
        "in a temporary database removed at exit.",
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
        None, "--config", "-c", help="serve.yaml: batching, instances, timeouts, limits."
    ),
    platform: str = typer.Option(
        None, "--platform", help="local, sagemaker, vertex or auto (default: auto)."
    ),
    instances: str = typer.Option(
        None, "--instances", help="Runtime sessions per model running side by side."
    ),
    max_batch_size: str = typer.Option(
        None, "--max-batch-size", help="Rows per runtime call; 1 = no batching."
    ),
    max_queue_delay_ms: str = typer.Option(
        None, "--max-queue-delay-ms", help="How long a batch may wait to fill."
    ),
    threads: str = typer.Option(None, "--threads", help="Intra-op threads per model instance."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning or error (default info)."),
    allow_anonymous_admin: bool = typer.Option(
        False,
        "--allow-anonymous-admin",
        help="Let anonymous callers load, unload and roll back models (local experiments only).",
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
    db: str = typer.Option(
        None,
        "--db",
        help="The server's database: a SQLite file path (created if missing) or a postgresql:// URL. "
        "Default: a temporary SQLite database, removed at exit.",
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
) -> None:
    from cvdeploy.errors import ConfigError
    from cvdeploy.serve.config import load_config, resolve_platform

    cfg = load_config(config)
    cfg = cfg.with_overrides(
        artifact=artifact,
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
    plat = resolve_platform(platform, cfg.server, host, _number(port, "--port", int, 0, 65535), os.environ)  # type: ignore[arg-type]
    specs = list(bundles or [])
    if not specs and not any(m.path for m in cfg.models.values()):
        specs = _platform_bundles(plat.model_dir) if plat.kind != "local" else []
        if not specs:
            raise ConfigError("no bundle given: name one or more bundle folders (or zoo:n)")
    from cvdeploy.monitor.monitor import Monitor

    monitor = Monitor.open(db, cfg.monitor)  # the database is reachable before any model is loaded
    try:
        if check:
            from cvdeploy.serve.app import create_app

            app = create_app(specs, cfg, platform=plat, monitor=monitor)
            _show(app.state.service, plat)
            return
        from cvdeploy.serve.logs import configure_logging
        from cvdeploy.serve.server import serve as run_server

        configure_logging(cfg.server.log_level, cfg.server.log_format)

        def ready(url: str, app: object) -> None:
            _show(app.state.service, plat, url)  # type: ignore[attr-defined]

        run_server(specs, cfg, plat, on_ready=ready, monitor=monitor)
    finally:
        monitor.stop()


def _show(state: object, plat: object, url: str | None = None) -> None:
    from rich.table import Table

    repo = state.repository  # type: ignore[attr-defined]
    table = Table(title=f"cvdeploy serve · {plat.kind}", title_justify="left")  # type: ignore[attr-defined]
    for col in ("model", "serving", "artifact", "task", "batch", "instances", "bundle"):
        table.add_column(col)
    for name in sorted(repo.models):
        e = repo.models[name]
        mv = e.versions[e.serving]
        batch = f"≤{mv.max_batch_size}, {mv.config.max_queue_delay_ms:g} ms" if mv.batcher.batching else "off"
        table.add_row(
            name, f"v{mv.version}", mv.artifact.name, mv.contract.task, batch, str(len(mv.pipelines)),
            str(mv.bundle.path),
        )  # fmt: skip
    console.print(table)
    if url:
        first = sorted(repo.models)[0]
        console.print(
            f"listening on [bold]{url}[/]  ·  try: curl -F image=@photo.jpg {url}/v1/models/{first}/detect"
        )
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
