"""``--target azureml``: an Azure ML managed online deployment (scoring script ``init()``/``run()``).

score.py          init() loads the bundle from AZUREML_MODEL_DIR; run(raw_data) answers one request
environment.yml   conda environment: this Python, pinned pip requirements, azureml-inference-server-http
endpoint.yml, deployment.yml   for ``az ml online-endpoint create`` / ``az ml online-deployment create``
model/            the bundle (registered as the deployment's model)
"""

from __future__ import annotations

import sys
from importlib import resources

from cvdeploy import __version__
from cvdeploy.package.base import Context, Target
from cvdeploy.package.pins import pinned_closure

#: The base image Azure ML's own examples use for conda-file environments.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"


def write(ctx: Context) -> None:
    ctx.copy_bundle("model")
    ctx.text(
        "score.py",
        resources.files("cvdeploy.package").joinpath("templates/azureml_score.py").read_text("utf-8"),
    )
    extras = [e for e in ctx.extras if e != "serve"]  # Azure's own server replaces cvdeploy's
    pins, missing = pinned_closure(extras)
    pip = [*missing, *pins, "azureml-inference-server-http"]
    pip.append(f"cvdeploy[{','.join(extras)}]=={__version__}" if extras else f"cvdeploy=={__version__}")
    ctx.yaml("environment.yml", [{
        "name": f"cvdeploy-{ctx.name}",
        "channels": ["conda-forge"],
        "dependencies": [f"python={sys.version_info.major}.{sys.version_info.minor}", "pip", {"pip": pip}],
    }])  # fmt: skip
    ctx.yaml("endpoint.yml", [{
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
        "name": ctx.name, "auth_mode": "key",
    }])  # fmt: skip
    ctx.yaml("deployment.yml", [{
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": "main",
        "endpoint_name": ctx.name,
        "model": {"path": "./model"},
        "code_configuration": {"code": "./", "scoring_script": "score.py"},
        "environment": {"conda_file": "./environment.yml", "image": BASE_IMAGE},
        "instance_type": "Standard_DS3_v2",
        "instance_count": ctx.options.replicas,
        "environment_variables": {"OMP_NUM_THREADS": str(ctx.threads), "OPENVINO_TELEMETRY_DISABLE": "1"},
    }])  # fmt: skip
    ctx.result.run = (
        f"cd {ctx.out} && az ml online-endpoint create -f endpoint.yml && "
        "az ml online-deployment create -f deployment.yml --all-traffic"
    )


TARGET = Target(
    name="azureml",
    summary="an Azure ML managed online deployment: score.py (init/run), environment.yml, endpoint/deployment YAML",
    needs="an Azure ML workspace and the az CLI with the ml extension",
    write=write,
)
