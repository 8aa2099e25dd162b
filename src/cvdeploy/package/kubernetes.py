"""``--target kubernetes``: the server image (as ``docker``) and manifests for it.

kubernetes/configmap.yaml   serve.yaml, mounted at /etc/cvdeploy
kubernetes/secret.yaml      the security database URL and keys (values given at package time or
                            filled in with kubectl; exposed to the pod as environment variables)
kubernetes/deployment.yaml  probes on /v2/health/{live,ready}, requests/limits, non-root, read-only root
kubernetes/service.yaml     ClusterIP on port 8080
kubernetes/hpa.yaml         autoscaling/v2 on CPU utilisation (--autoscale MIN,MAX)
kubernetes/kustomization.yaml
"""

from __future__ import annotations

from typing import Any

from cvdeploy.package.base import LIVE, PORT, READY, TLS_DIR, UID, Context, Target
from cvdeploy.package.docker import server_command, write_server_image
from cvdeploy.package.serveconf import CONFIG_PATH, serve_config
from cvdeploy.runtimes import registry

#: Kubernetes version the manifests are validated against in the tests.
KUBERNETES_VERSION = "1.33"


def labels(ctx: Context) -> dict[str, str]:
    return {"app.kubernetes.io/name": ctx.name, "app.kubernetes.io/part-of": "cvdeploy"}


def resources(ctx: Context) -> dict[str, Any]:
    """CPU from the inference threads; memory from the model file size (runtime arena ~6x the weights,
    plus the Python server)."""
    files = registry.engine(ctx.artifact.runtime).files(ctx.artifact.file)
    size_mb = (
        sum((ctx.bundle.path / f).stat().st_size for f in files if (ctx.bundle.path / f).is_file()) / 2**20
    )
    mem = int(384 + 6 * size_mb)
    return {
        "requests": {"cpu": str(ctx.threads), "memory": f"{mem}Mi"},
        "limits": {"cpu": str(ctx.threads), "memory": f"{2 * mem}Mi"},
    }


def security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def probes(scheme: str = "http") -> dict[str, Any]:
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": PORT, "scheme": scheme.upper()}, "periodSeconds": period,
                "failureThreshold": failures, "timeoutSeconds": 4}  # fmt: skip

    return {
        "startupProbe": probe(READY, 5, 60),  # loading and compiling a model may take a while
        "readinessProbe": probe(READY, 10, 3),
        "livenessProbe": probe(LIVE, 20, 3),
    }


def container(ctx: Context, name: str = "server") -> dict[str, Any]:
    secret = f"{ctx.name}-security"
    _, args = server_command(ctx)
    return {
        "name": name,
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for k, key in (("CVDEPLOY_DB_URL", "db-url"),)
        ],
        "resources": resources(ctx),
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_PATH.rsplit("/", 1)[0], "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
                if ctx.options.security == "tls"
                else []
            ),
        ],
        **probes(ctx.scheme),
    }


def volumes(ctx: Context) -> list[dict[str, Any]]:
    tls = []
    if (
        ctx.options.security == "tls"
    ):  # a kubernetes.io/tls Secret: its tls.crt and tls.key are what serve reads
        tls = [{"name": "tls", "secret": {"secretName": f"{ctx.name}-tls", "defaultMode": 0o440}}]
    return [
        {"name": "config", "configMap": {"name": f"{ctx.name}-config"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        *tls,
    ]


def config_and_secret(ctx: Context) -> list[dict[str, Any]]:
    import yaml

    meta = {"labels": labels(ctx)}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{ctx.name}-config", **meta},
         "data": {"serve.yaml": yaml.safe_dump(serve_config(ctx), sort_keys=False)}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{ctx.name}-security", **meta},
         "type": "Opaque", "stringData": {"db-url": ctx.options.db_url}},
    ]  # fmt: skip


def write(ctx: Context) -> None:
    write_server_image(ctx)
    lo, hi = ctx.options.autoscale or (ctx.options.replicas, max(ctx.options.replicas, 4))
    sel = labels(ctx)
    config, secret = config_and_secret(ctx)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ctx.name, "labels": sel},
        "spec": {
            "replicas": lo,
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": {"labels": sel, "annotations": {"prometheus.io/scrape": "true",
                             "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(ctx)],
                    "volumes": volumes(ctx),
                },
            },
        },
    }  # fmt: skip
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ctx.name, "labels": sel},
        "spec": {"type": "ClusterIP", "selector": sel,
                 "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]},
    }  # fmt: skip
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": ctx.name, "labels": sel},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ctx.name},
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }  # fmt: skip
    files = {"configmap.yaml": config, "secret.yaml": secret, "deployment.yaml": deployment,
             "service.yaml": service, "hpa.yaml": hpa}  # fmt: skip
    for name, doc in files.items():
        ctx.yaml(f"kubernetes/{name}", [doc])
    ctx.yaml("kubernetes/kustomization.yaml", [{"apiVersion": "kustomize.config.k8s.io/v1beta1",
                                                "kind": "Kustomization", "resources": list(files)}])  # fmt: skip
    if ctx.options.security == "tls":
        ctx.note(
            f"the server serves HTTPS with the kubernetes.io/tls Secret {ctx.name}-tls mounted at {TLS_DIR}: "
            f"kubectl create secret tls {ctx.name}-tls --cert=server.pem --key=server.key"
        )
    if not ctx.options.db_url:
        ctx.note(
            f"kubernetes/secret.yaml holds an empty db-url: set it with 'kubectl create secret generic {ctx.name}-security "
            "--from-literal=db-url=...' (the server reads it as CVDEPLOY_DB_URL once authentication is configured)"
        )
    ctx.result.run = f"docker build -t {ctx.image} {ctx.out} && kubectl apply -k {ctx.out / 'kubernetes'}"


TARGET = Target(
    name="kubernetes",
    summary="the server image plus Deployment, Service, HorizontalPodAutoscaler, ConfigMap and Secret",
    needs="a Kubernetes cluster (1.23+ for autoscaling/v2) and a registry for the image",
    write=write,
)
