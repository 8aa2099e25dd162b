"""``--target vertex``: a Vertex AI custom serving container (``AIP_*`` variables and routes).

Vertex AI sets ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` and sends
``{"instances": [...], "parameters": {...}}`` to the predict route; the server's Vertex platform
answers ``{"predictions": [...]}``. The bundle is baked into the image (``AIP_STORAGE_URI`` is a
``gs://`` URI the container would otherwise have to download itself).

    Dockerfile  requirements.txt  serve.yaml  model/  upload.sh (gcloud ai models upload ...)
"""

from __future__ import annotations

from cvdeploy.package.base import PORT, Context, Target
from cvdeploy.package.image import healthcheck, write_image
from cvdeploy.package.serveconf import CONFIG_PATH, write_serve_config

HEALTH, PREDICT = "/health", "/predict"


def write(ctx: Context) -> None:
    conf = write_serve_config(ctx)
    cmd = [ctx.model_dir, "--platform", "vertex", "--config", CONFIG_PATH, "--threads", str(ctx.threads)]
    write_image(
        ctx,
        cmd=cmd,
        entrypoint=["cvdeploy", "serve"],
        extra_files=[(conf, CONFIG_PATH, None)],
        health=healthcheck(HEALTH, route_env="AIP_HEALTH_ROUTE", port_env="AIP_HTTP_PORT"),
    )
    ctx.text(
        "upload.sh",
        "#!/bin/sh\n# Upload the model to Vertex AI (push the image to Artifact Registry first).\n"
        'set -eu\n: "${REGION:?set REGION}" "${IMAGE_URI:?set IMAGE_URI to the pushed image}"\n'
        f'gcloud ai models upload --region="$REGION" --display-name={ctx.name} --container-image-uri="$IMAGE_URI" \\\n'
        f"  --container-ports={PORT} --container-health-route={HEALTH} --container-predict-route={PREDICT}\n",
        mode=0o755,
    )
    ctx.result.run = (
        f"docker build -t {ctx.image} {ctx.out} && REGION=... IMAGE_URI=... {ctx.out / 'upload.sh'}"
    )


TARGET = Target(
    name="vertex",
    summary="a Vertex AI custom serving container (AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE) and upload script",
    needs="a Google Cloud project: Artifact Registry for the image, the gcloud CLI",
    write=write,
)
