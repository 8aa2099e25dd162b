"""``cvdeploy package``: turn a bundle into what one deployment target runs.

Each target is one module here with a module-level ``TARGET`` (:class:`~cvdeploy.package.base.Target`),
listed once in :data:`TARGETS`; adding a target is its module plus one line there.

    docker      Dockerfile, pinned requirements, compose file with Prometheus and Grafana
    kubernetes  the image + Deployment, Service, HPA, ConfigMap, Secret
    kserve      the image + an InferenceService (custom predictor, Open Inference Protocol v2)
    sagemaker   a SageMaker container (serve, /ping, /invocations on 8080) + model.tar.gz
    vertex      a Vertex AI container (AIP_* variables and routes) + upload script
    azureml     score.py (init/run), environment.yml, endpoint and deployment YAML
    edge        a minimal folder: the model, one-file predict.py, numpy + OpenCV + one runtime
    ray         a Ray Serve config for `serve deploy`: the cvdeploy app as replicas (@serve.batch, autoscaling)
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import ConfigError, InputError
from cvdeploy.package.base import Context, Package, PackageOptions, Target
from cvdeploy.runtimes import registry

__all__ = ["TARGETS", "Package", "PackageOptions", "Target", "package", "target"]

#: Every target, by name → the module that declares it.
TARGETS: dict[str, str] = {
    "docker": "cvdeploy.package.docker",
    "kubernetes": "cvdeploy.package.kubernetes",
    "kserve": "cvdeploy.package.kserve",
    "sagemaker": "cvdeploy.package.sagemaker",
    "vertex": "cvdeploy.package.vertex",
    "azureml": "cvdeploy.package.azureml",
    "edge": "cvdeploy.package.edge",
    "ray": "cvdeploy.package.ray",
}


def target(name: str) -> Target:
    """The target called ``name``; an unknown name is a one-line :class:`ConfigError`."""
    key = str(name).strip().lower()
    if key not in TARGETS:
        raise ConfigError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
    found: Target = importlib.import_module(TARGETS[key]).TARGET
    return found


def choose_artifact(bundle: Bundle, tgt: Target, wanted: str | None) -> Artifact:
    """``wanted`` if given (it must exist and suit the target), else the target's preferred engine."""
    if wanted:
        if wanted not in bundle.artifact_names:
            raise InputError(
                f"bundle {bundle.name} has no artifact {wanted!r} (it has {', '.join(bundle.artifact_names)}); "
                f"add it with 'cvdeploy export' or 'cvdeploy optimize'"
            )
        art = bundle.artifact(wanted)
        if art.runtime not in tgt.prefer:
            raise ConfigError(
                f"--target {tgt.name} runs {' or '.join(registry.engine(e).prefix for e in tgt.prefer)} artifacts, "
                f"not {art.name} ({art.runtime})"
            )
        return art
    default = bundle.manifest.default_artifact
    arts = bundle.manifest.artifacts
    for eng in tgt.prefer:
        same = [a for a in arts if a.runtime == eng]
        if same:
            return next((a for a in same if a.name == default), same[0])
    need = " or ".join(f"{registry.engine(e).prefix}-*" for e in tgt.prefer)
    # an engine's artifact prefix is the export --format that makes it (onnx, openvino, tflite, tensorrt)
    hint = f"cvdeploy export SOURCE --format {registry.engine(tgt.prefer[0]).prefix}"
    raise InputError(
        f"bundle {bundle.name} has no artifact --target {tgt.name} can run (needs {need}; it has "
        f"{', '.join(bundle.artifact_names) or 'none'}); add one with '{hint}'"
    )


def package(
    bundle: str | Path | Bundle, target_name: str, out: str | Path, options: PackageOptions | None = None
) -> Package:
    """Write what ``target_name`` deploys for ``bundle`` into the folder ``out`` (created; must be empty
    unless ``options.overwrite``). Returns what was written."""
    opts = options or PackageOptions()
    tgt = target(target_name)
    if opts.model not in ("bake", "mount"):
        raise ConfigError(f"--model {opts.model!r}: use bake (in the image) or mount (at run time)")
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    art = choose_artifact(b, tgt, opts.artifact)
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()):
        if not opts.overwrite:
            raise InputError(f"{out_path} is not empty; pass --overwrite or choose another -o")
        if (out_path / "cvdeploy.yaml").is_file():
            raise InputError(f"{out_path} is a bundle; refusing to overwrite it with a package")
        shutil.rmtree(out_path)
    out_path.mkdir(parents=True, exist_ok=True)
    ctx = Context(b, art, out_path, opts, tgt.name)
    try:
        tgt.write(ctx)
    except BaseException:
        shutil.rmtree(out_path, ignore_errors=True)
        raise
    ctx.result.sizes["total"] = sum(p.stat().st_size for p in out_path.rglob("*") if p.is_file())
    return ctx.result
