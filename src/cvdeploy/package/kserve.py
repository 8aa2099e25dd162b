"""``--target kserve``: an InferenceService whose custom predictor is the cvdeploy server (Open Inference Protocol v2).

kserve/inferenceservice.yaml   serving.kserve.io/v1beta1, predictor container ``kserve-container``,
                               protocolVersion v2, probes, resources, non-root read-only root
kserve/configmap.yaml          serve.yaml
(and the server image: Dockerfile, requirements.txt, model/)
"""

from __future__ import annotations

from cvdeploy.package import kubernetes as k8s
from cvdeploy.package.base import Context, Target
from cvdeploy.package.docker import write_server_image


def write(ctx: Context) -> None:
    write_server_image(ctx)
    lo, hi = ctx.options.autoscale or (ctx.options.replicas, max(ctx.options.replicas, 4))
    config, _ = k8s.config_and_secret(ctx)
    # KServe serves a custom predictor's container under this name; v2 clients reach /v2/models/NAME/infer
    container = k8s.container(ctx, name="kserve-container")
    container["env"] = []  # no Secret in this target: KServe predictors get credentials from their namespace
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": ctx.name, "labels": k8s.labels(ctx),
                     "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"}},
        "spec": {"predictor": {
            "minReplicas": lo,
            "maxReplicas": hi,
            "protocolVersion": "v2",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": k8s.volumes(ctx),
        }},
    }  # fmt: skip
    ctx.yaml("kserve/configmap.yaml", [config])
    ctx.yaml("kserve/inferenceservice.yaml", [isvc])
    ctx.result.run = (
        f"docker build -t {ctx.image} {ctx.out} && kubectl apply -f {ctx.out / 'kserve'}  "
        f"# then POST /v2/models/{ctx.bundle.name}/infer"
    )


TARGET = Target(
    name="kserve",
    summary="an InferenceService with the cvdeploy server as custom predictor speaking Open Inference Protocol v2",
    needs="a Kubernetes cluster with KServe (serving.kserve.io/v1beta1) and a registry for the image",
    write=write,
)
