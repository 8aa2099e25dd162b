"""``cvdeploy package``: write what a deployment target runs (image, manifests, cloud contract, edge folder)."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors, parse_ints
from cvdeploy.cli.vocabulary import help_for

HELP = "\n\n".join(
    (
        "Package a bundle for one deployment target: the files that target builds or runs, with the "
        "bundle's artifact inside, checked before they are written.",
        "  cvdeploy package zoo:n --target docker -o deploy/docker      # then: docker compose up --build",
        "  cvdeploy package model.cvd --target kubernetes -o k8s --image registry.example/model:1 --autoscale 2,8",
        "  cvdeploy package model.cvd --target sagemaker -o sm          # container + model.tar.gz",
        "  cvdeploy package model.cvd --target edge -o edge             # python -S edge/predict.py photo.jpg",
        "  cvdeploy package model.cvd --target ray -o ray --security ingress --autoscale 1,4   # serve deploy ray/serve_config.yaml",
        "Targets: docker (Dockerfile, pinned requirements, compose with Prometheus and Grafana), kubernetes "
        "(Deployment, Service, HPA, ConfigMap, Secret), kserve (InferenceService, Open Inference Protocol v2), "
        "sagemaker (serve entrypoint, /ping, /invocations, model.tar.gz), vertex (AIP_* routes), azureml "
        "(score.py init/run, environment.yml), edge (one-file predict.py, numpy + OpenCV + one runtime, no torch), "
        "ray (a Serve config for 'serve deploy' on an existing Ray cluster: the same app as replicas).",
        "Server targets serve the bundle's default artifact (ONNX or OpenVINO) unless --artifact says otherwise; "
        "edge prefers a tflite-* artifact, then openvino-*, then onnx-*.",
    )
)


@handle_errors
def package(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    target: str = typer.Option(
        ..., "--target", "-t", help="docker, kubernetes, kserve, sagemaker, vertex, azureml, edge or ray."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help=help_for("--output", "the package folder (created; must be empty)")
    ),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help="Artifact to package (default: the target's choice)."
    ),
    image: str = typer.Option(None, "--image", help="Container image name (default cvdeploy/NAME:VERSION)."),
    model: str = typer.Option(
        "bake", "--model", help="bake the bundle into the image, or mount it at run time."
    ),
    replicas: int = typer.Option(
        1, "--replicas", min=1, max=1000, help="Replicas (Kubernetes, KServe, Azure ML, Ray)."
    ),
    autoscale: str = typer.Option(None, "--autoscale", help="MIN,MAX replicas for the autoscaler."),
    threads: int = typer.Option(
        None, "--threads", min=1, max=256, help=help_for("--threads", "per replica (= its CPU request)")
    ),
    max_batch_size: int = typer.Option(
        8, "--max-batch-size", min=1, max=4096, help="Server batching: rows per call."
    ),
    wheel: Path = typer.Option(
        None, "--wheel", help="Install this cvdeploy wheel in the image instead of the release."
    ),
    vendor: bool = typer.Option(
        True, "--vendor/--no-vendor", help="edge: copy numpy, OpenCV and the runtime into lib/."
    ),
    db_url: str = typer.Option("", "--db-url", help="kubernetes: security database URL for the Secret."),
    security: str = typer.Option(
        None,
        "--security",
        help="docker/kubernetes/kserve/ray: how the server is reached — tls (HTTPS in the container, certificates "
        "mounted at /run/secrets/cvdeploy, keys in $CVDEPLOY_DB_URL) or ingress (TLS and authentication end at "
        "your ingress; the container runs serve --insecure).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder's contents."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    from cvdeploy.errors import ConfigError
    from cvdeploy.package import PackageOptions
    from cvdeploy.package import package as make_package

    scale = None
    if autoscale:
        lim = parse_ints(autoscale, "--autoscale")
        if len(lim) != 2 or lim[0] > lim[1]:
            raise ConfigError(f"--autoscale {autoscale!r}: give MIN,MAX with MIN <= MAX, e.g. 2,8")
        scale = (lim[0], lim[1])
    if security is not None and security not in ("tls", "ingress"):
        raise ConfigError(f"--security {security!r}: use tls or ingress")
    opts = PackageOptions(
        artifact=artifact, image=image, model=model, replicas=replicas, autoscale=scale, threads=threads,
        max_batch_size=max_batch_size, wheel=wheel, vendor=vendor, db_url=db_url, overwrite=overwrite,
        security=security,
    )  # fmt: skip
    result = make_package(bundle, target, output, opts)
    if as_json:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=1))
        return
    shown = [f for f in result.files if not f.startswith(("lib/", "model/")) or f.count("/") <= 1]
    console.print(f"[bold]{result.target}[/] package of {bundle} ({result.artifact}) in {result.path}:")
    for f in shown[:40]:
        console.print(f"  {f}")
    hidden = len(result.files) - len(shown[:40])
    if hidden:
        console.print(f"  … and {hidden} more file(s) under model/ and lib/")
    for k, v in result.sizes.items():
        if k == "total" or result.target == "edge":
            console.print(f"  size {k}: {v / 1e6:.2f} MB")
    for n in result.notes:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    if result.run:
        console.print(f"next: {result.run}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("package", help=HELP)(package)
