"""Each accuracy finding, planted into a deployment of the shipped zoo:n and of a YOLOv8n graph, comes out on top.

Plants on zoo:n use what a real deployment leaves behind: its results (``--observed``), its
labels, its images, its model file, its manifest. The untrained YOLOv8n detects nothing that
means anything, so its preprocessing faults are planted in the tensors it is fed (``--inputs``),
its class mapping in its (deterministic) detections, and its conversion/numerics faults in its
ONNX file (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvdeploy.doctor import Doctor, DoctorOptions, DoctorReport, faults
from cvdeploy.doctor.variants import NORMALISATIONS

Plant = Callable[[Doctor, Path, Path], tuple[Doctor, DoctorOptions]]
_, IMAGENET_SCALE, IMAGENET_MEAN, IMAGENET_STD = NORMALISATIONS[1]
PERMUTATION = {0: 1, 1: 2, 2: 0, 3: 4, 4: 5, 5: 3}  # zoo classes: circle→square→triangle→circle, star→cross→ring→star


def _observed(doctor: Doctor, tmp: Path, run: Any = None, mapping: dict[int, int] | None = None, **changes: Any) -> Path:
    from cvdeploy.doctor.deployment import open_deployment

    dep = open_deployment(doctor.bundle)
    found = faults.results(run or dep.run, faults.deviant(doctor.bundle.contract, **changes), doctor.images.paths,
                           [o.name for o in dep.runtime.outputs])  # fmt: skip
    if mapping:
        found = faults.permute_classes(found, mapping)
    return faults.write_predict_json(found, doctor.images.paths, tmp / "observed.json")


def _tensors(doctor: Doctor, tmp: Path, **changes: Any) -> Path:
    return faults.write_tensors(faults.deviant(doctor.bundle.contract, **changes), doctor.images.paths, tmp / "tensors")


def _resized(doctor: Doctor) -> Any:
    from cvdeploy.doctor.deployment import open_deployment

    rm = doctor.workspace.resizable(open_deployment(doctor.bundle))
    assert rm is not None, "no model that runs other input sizes"
    return rm.run


def _model(doctor: Doctor, tmp: Path, mode: str) -> DoctorOptions:
    src = doctor.bundle.file(doctor.bundle.artifact())
    faults.edit_onnx(src, tmp / "deployed.onnx", mode=mode)
    return DoctorOptions(model=tmp / "deployed.onnx")


def _env(doctor: Doctor, tmp: Path) -> Doctor:
    b = faults.copy_bundle(doctor.bundle, tmp / "env.cvd")
    faults.record_environment(b, "bf16", onnxruntime="1.16.3")
    return Doctor(b, doctor.images.paths)


def _drift(doctor: Doctor, tmp: Path, profile: bool, images: Path) -> Doctor:
    bundle = doctor.bundle
    paths = sorted(images.glob("*.jpg"))
    if profile:  # a bundle without a profile: give it one built from known-good images first
        import json

        from cvdeploy.pipeline import Pipeline
        from cvdeploy.profile import build_profile

        bundle = faults.copy_bundle(bundle, tmp / "profiled.cvd")
        doc = build_profile(Pipeline.from_bundle(bundle), paths)
        (bundle.path / "profile.json").write_text(json.dumps(doc))
        bundle.manifest.reference_profile = "profile.json"
        bundle.save()
    shifted = faults.shift_images(paths, tmp / "night", brightness=0.3, blur=3)
    return Doctor(bundle, shifted)


ZOO: dict[str, Plant] = {
    "preprocess.channel_order": lambda d, t, _: (d, DoctorOptions(observed=_observed(d, t, color="BGR"))),
    "preprocess.resize": lambda d, t, _: (d, DoctorOptions(observed=_observed(d, t, resize="stretch"))),
    "preprocess.normalization": lambda d, t, _: (d, DoctorOptions(observed=_observed(
        d, t, scale=IMAGENET_SCALE, mean=IMAGENET_MEAN, std=IMAGENET_STD))),
    "preprocess.pad_value": lambda d, t, _: (d, DoctorOptions(observed=_observed(d, t, pad_value=0))),
    "preprocess.input_size": lambda d, t, _: (d, DoctorOptions(observed=_observed(d, t, _resized(d), height=480, width=480))),
    "labels.class_mapping": lambda d, t, _: (d, DoctorOptions(labels=faults.relabel(_data_yaml(d), t / "relabelled", PERMUTATION))),
    "data.drift": lambda d, t, imgs: (_drift(d, t, False, imgs), DoctorOptions()),
    "conversion.divergence": lambda d, t, _: (d, _model(d, t, "scale")),
    "env.mismatch": lambda d, t, _: (_env(d, t), DoctorOptions()),
    "numerics.nonfinite": lambda d, t, _: (d, _model(d, t, "nan")),
}  # fmt: skip

Y8: dict[str, Plant] = {
    "preprocess.channel_order": lambda d, t, _: (d, DoctorOptions(inputs=_tensors(d, t, color="BGR"))),
    "preprocess.resize": lambda d, t, _: (d, DoctorOptions(inputs=_tensors(d, t, resize="stretch"))),
    "preprocess.normalization": lambda d, t, _: (d, DoctorOptions(inputs=_tensors(d, t, scale=1.0))),
    "preprocess.pad_value": lambda d, t, _: (d, DoctorOptions(inputs=_tensors(d, t, pad_value=0))),
    "preprocess.input_size": lambda d, t, _: (d, DoctorOptions(inputs=_tensors(d, t, height=256, width=256))),
    "labels.class_mapping": lambda d, t, _: (d, DoctorOptions(observed=_observed(d, t, mapping=_spread(d)))),
    "data.drift": lambda d, t, imgs: (_drift(d, t, True, imgs), DoctorOptions()),
    "conversion.divergence": lambda d, t, _: (d, _model(d, t, "scale")),
    "env.mismatch": lambda d, t, _: (_env(d, t), DoctorOptions()),
    "numerics.nonfinite": lambda d, t, _: (d, _model(d, t, "nan")),
}  # fmt: skip


def _data_yaml(doctor: Doctor) -> Path:
    return doctor.images.paths[0].parent.parent.parent / "data.yaml"


def _spread(doctor: Doctor) -> dict[int, int]:
    """A permutation of the 80 YOLOv8n classes: every id moves (k → k + 1 mod 80)."""
    n = len(doctor.bundle.contract.classes)
    return {k: (k + 1) % n for k in range(n)}


def _check_top(report: DoctorReport, expected: str) -> None:
    top = report.top
    assert top is not None, "no finding at all"
    summary = [(f.id, f.severity, f.score) for f in report.findings[:4]]
    assert top.id == expected, summary
    assert top.evidence and top.fix
    assert report.exit_code == (1 if top.severity == "critical" else report.exit_code)


@pytest.mark.slow
@pytest.mark.parametrize("finding", list(ZOO))
def test_zoo_plant_is_the_top_finding(finding: str, zoo_doctor: Doctor, drift_images: Path, tmp_path: Path) -> None:
    doctor, options = ZOO[finding](zoo_doctor, tmp_path, drift_images)
    report = doctor.diagnose(options)
    _check_top(report, finding)
    if finding != "preprocess.pad_value":  # a pad value changes little: a warning, still named first
        assert report.top is not None and report.top.severity == "critical", report.top


@pytest.mark.slow
@pytest.mark.ultralytics
@pytest.mark.parametrize("finding", list(Y8))
def test_yolov8n_plant_is_the_top_finding(finding: str, y8_doctor: Doctor, drift_images: Path, tmp_path: Path) -> None:
    doctor, options = Y8[finding](y8_doctor, tmp_path, drift_images)
    report = doctor.diagnose(options)
    _check_top(report, finding)
