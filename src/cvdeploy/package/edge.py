"""``--target edge``: a minimal folder that runs the model on a device — no torch, no cvdeploy.

    predict.py          one file: cvdeploy's preprocessing, decoding and NMS in numpy + OpenCV, one runtime
    model/              the model file(s) and contract.json (the bundle's exact contract)
    requirements.txt    numpy, opencv-python-headless and the runtime, pinned to the versions packaged with
    lib/                (default; --no-vendor to skip) those packages copied from this environment, so the
                        folder runs with a bare Python of the same version and platform
    SIZE.txt            its size on disk, part by part

The runtime follows the artifact: LiteRT for ``tflite-*`` (preferred), OpenVINO for ``openvino-*``,
ONNX Runtime for ``onnx-*``.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import sys
from importlib import resources
from pathlib import Path

from cvdeploy.package.base import Context, Target
from cvdeploy.runtimes import registry

#: What predict.py needs beside its engine (whose distribution is ``Engine.dists[0]``).
BASE_DISTS = ("numpy", "opencv-python-headless")


def closure(names: list[str]) -> list[md.Distribution]:
    """The installed distributions ``names`` need, following ``Requires-Dist`` without extras."""
    from packaging.requirements import Requirement

    found: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            from cvdeploy.errors import MissingDependency

            raise MissingDependency(
                f"{name} is not installed here, so it cannot be vendored; install it or pass --no-vendor"
            ) from None
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(found.values(), key=lambda d: d.metadata["Name"].lower())


def vendor(dists: list[md.Distribution], lib: Path) -> dict[str, int]:
    """Copy every installed file of ``dists`` into ``lib`` (site-packages layout); bytes per distribution."""
    sizes: dict[str, int] = {}
    for dist in dists:
        total = 0
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            rel = Path(str(f))
            if rel.is_absolute() or ".." in rel.parts or "__pycache__" in rel.parts or not src.is_file():
                continue  # console scripts under ../../bin and bytecode caches stay behind
            dst = lib / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            total += dst.stat().st_size
        sizes[dist.metadata["Name"]] = total
    return sizes


def write(ctx: Context) -> None:
    art = ctx.artifact
    eng = registry.engine(art.runtime)
    model = ctx.out / "model"
    model.mkdir(parents=True, exist_ok=True)
    files = eng.files(art.file)
    for f in files:
        shutil.copy2(ctx.bundle.path / f, model / Path(f).name)
        ctx._add(f"model/{Path(f).name}")
    meta = {
        "bundle": ctx.bundle.name,
        "artifact": art.name,
        "runtime": eng.name,
        "precision": art.precision,
        "file": Path(art.file).name,
        "contract": ctx.bundle.contract.model_dump(mode="json"),
        "parity": art.parity.model_dump(mode="json") if art.parity else None,
        # the engine settings that pin the artifact's precision, which predict.py passes to the engine
        "settings": eng.pinned_settings(art.precision),
    }
    ctx.text("model/contract.json", json.dumps(meta, indent=1))
    ctx.text(
        "predict.py",
        resources.files("cvdeploy.package").joinpath("templates/edge_predict.py").read_text("utf-8"),
    )
    dists = closure([*BASE_DISTS, eng.dists[0]])
    ctx.text("requirements.txt", "".join(f"{d.metadata['Name']}=={d.version}\n" for d in dists))
    sizes = {"model": sum((model / Path(f).name).stat().st_size for f in files),
             "predict.py": (ctx.out / "predict.py").stat().st_size}  # fmt: skip
    if ctx.options.vendor:
        per_dist = vendor(dists, ctx.out / "lib")
        sizes.update({f"lib/{k}": v for k, v in per_dist.items()})
        for p in sorted((ctx.out / "lib").rglob("*")):
            if p.is_file():
                ctx._add(str(p.relative_to(ctx.out)))
    ctx.result.sizes.update(sizes)
    total = sum(sizes.values())
    lines = [f"{k:40s} {v / 1e6:9.2f} MB" for k, v in sizes.items()]
    where = f"Python {sys.version_info.major}.{sys.version_info.minor} on {sys.platform}"
    lines.append(
        f"{'total':40s} {total / 1e6:9.2f} MB" + ("" if ctx.options.vendor else " (packages not vendored)")
    )
    ctx.text("SIZE.txt", f"edge package of {ctx.bundle.name} · {art.name} · {eng.name} · vendored for {where}\n"
             + "\n".join(lines) + "\n")  # fmt: skip
    run = (
        "python -S predict.py IMAGE"
        if ctx.options.vendor
        else "pip install -r requirements.txt && python predict.py IMAGE"
    )
    ctx.result.run = f"cd {ctx.out} && {run}"


TARGET = Target(
    name="edge",
    summary="a minimal folder: the model, one-file predict.py, numpy + OpenCV + one runtime (LiteRT, OpenVINO or ORT)",
    needs="a device with Python of the same version and platform (vendored) or pip access (requirements.txt)",
    write=write,
    servable=False,
    prefer=("litert", "openvino", "onnxruntime"),
)
