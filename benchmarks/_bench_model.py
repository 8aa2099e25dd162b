"""The model the bench benchmarks run on: ``zoo:n`` when it is installed, else an export of the
zoo-n architecture (untrained) at 640x640 into a temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")


def default_bundle(
    spec: str | None, workdir: str | Path | None = None, formats: tuple[str, ...] = ("onnx",)
) -> str:
    """A bundle path or ``zoo:n``: ``spec`` when given, ``zoo:n`` if present, else a fresh export."""
    from cvdeploy.bundle import ZOO_DIR

    if spec:
        return spec
    if (ZOO_DIR / "n.cvd" / "cvdeploy.yaml").is_file():
        return "zoo:n"
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.sources.onnx import ContractHints
    from cvdeploy.zoo.classes import CLASS_NAMES

    root = Path(workdir or tempfile.mkdtemp(prefix="cvdeploy-bench-model-"))
    out = root / "n640.cvd"
    print(
        f"zoo:n is not installed; exporting python:cvdeploy.zoo.model:build_n at 640 into {out}", flush=True
    )
    export(
        "python:cvdeploy.zoo.model:build_n",
        out,
        ExportOptions(
            formats=formats,
            imgsz=(640, 640),
            dynamic_batch=True,
            parity_count=2,
            hints=ContractHints(classes=list(CLASS_NAMES)),
        ),
    )
    return str(out)
