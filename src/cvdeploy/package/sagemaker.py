"""``--target sagemaker``: a SageMaker inference container (``serve`` entrypoint, port 8080) and model.tar.gz.

SageMaker starts the container as ``docker run IMAGE serve``, extracts ``model.tar.gz`` into
``/opt/ml/model`` and calls ``GET /ping`` and ``POST /invocations`` on port 8080; the server's
SageMaker platform does exactly that with the bundle found in ``/opt/ml/model``.

    Dockerfile  requirements.txt  serve.yaml  serve (on PATH)  model.tar.gz (the bundle at its root)
"""

from __future__ import annotations

import shutil
import tarfile

from cvdeploy.package.base import Context, Target
from cvdeploy.package.image import healthcheck, write_image
from cvdeploy.package.serveconf import CONFIG_PATH, write_serve_config

SCRIPT = """#!/bin/sh
# SageMaker runs `docker run IMAGE serve`: answer GET /ping and POST /invocations on port 8080
# (SAGEMAKER_BIND_TO_PORT when SageMaker sets it) with the bundle it extracted into /opt/ml/model.
# CVDEPLOY_CONFIG overrides where the server configuration is read from (tests run this script as is).
exec cvdeploy serve --platform sagemaker --config "${{CVDEPLOY_CONFIG:-{config}}}" --threads {threads} "$@"
"""


def write(ctx: Context) -> None:
    conf = write_serve_config(ctx)
    ctx.text("serve", SCRIPT.format(config=CONFIG_PATH, threads=ctx.threads), mode=0o755)
    write_image(
        ctx,
        cmd=["serve"],
        extra_files=[(conf, CONFIG_PATH, None), ("serve", "/usr/local/bin/serve", "0755")],
        health=healthcheck("/ping", route_env=None, port_env="SAGEMAKER_BIND_TO_PORT"),
        bundle=False,
    )
    staged = ctx.copy_bundle(".model")
    with tarfile.open(ctx.out / "model.tar.gz", "w:gz") as tar:
        for p in sorted(staged.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(staged)), recursive=False)
    shutil.rmtree(staged)
    ctx.result.files = [f for f in ctx.result.files if not f.startswith(".model/")]
    ctx.text("README.md", README.format(image=ctx.image, name=ctx.name))
    ctx.result.run = f"docker build -t {ctx.image} {ctx.out}  # push it to ECR, upload model.tar.gz to S3"


README = """# SageMaker deployment of {name}

1. `docker build -t {image} .` and push it to Amazon ECR.
2. Upload `model.tar.gz` to S3 (SageMaker extracts it into `/opt/ml/model`).
3. Create the model, endpoint configuration and endpoint (AWS CLI):

       aws sagemaker create-model --model-name {name} --execution-role-arn ROLE \\
         --primary-container Image=ECR_IMAGE,ModelDataUrl=s3://BUCKET/model.tar.gz
       aws sagemaker create-endpoint-config --endpoint-config-name {name} \\
         --production-variants VariantName=main,ModelName={name},InstanceType=ml.c7i.xlarge,InitialInstanceCount=1
       aws sagemaker create-endpoint --endpoint-name {name} --endpoint-config-name {name}

4. Invoke: `aws sagemaker-runtime invoke-endpoint --endpoint-name {name} --content-type image/jpeg --body fileb://photo.jpg out.json`
"""

TARGET = Target(
    name="sagemaker",
    summary="a SageMaker inference container (serve entrypoint, /ping, /invocations on 8080) and model.tar.gz",
    needs="an AWS account: ECR for the image, S3 for model.tar.gz, a SageMaker execution role",
    write=write,
)
