"""Each accuracy finding, planted into a deployment of the shipped zoo:n and of a YOLOv8n graph, comes out on top.

The plants (:class:`cvdeploy.doctor.faults.Planter`, shared with ``benchmarks/doctor.py``) leave
what a faulty deployment leaves behind. On zoo:n: its results (``--observed``: BGR, stretch,
ImageNet normalisation, pad 0, 480 px), labels written with another class order, darker and
blurred images, an edited model file (a scaled convolution; NaN weights), a manifest recording
another precision and runtime version. The untrained YOLOv8n detects nothing meaningful, so its
preprocessing faults are planted in the tensors it is fed (``--inputs``) and its class mapping in
its own deterministic detections, permuted (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.doctor import Doctor, DoctorReport
from cvdeploy.doctor.faults import Planter

ACCURACY = [
    "preprocess.channel_order",
    "preprocess.resize",
    "preprocess.normalization",
    "preprocess.pad_value",
    "preprocess.input_size",
    "data.drift",
    "labels.class_mapping",
    "conversion.divergence",
    "env.mismatch",
    "numerics.nonfinite",
]


def check_top(report: DoctorReport, expected: str) -> None:
    summary = [(f.id, f.severity, f.score) for f in report.findings[:4]]
    assert report.top is not None and report.top.id == expected, summary
    assert report.top.evidence and report.top.fix
    assert report.exit_code == (1 if report.critical else 0)


@pytest.mark.slow
@pytest.mark.parametrize("finding", ACCURACY)
def test_zoo_plant_is_the_top_finding(finding: str, zoo_doctor: Doctor, plant_data: Path, drift_images: Path,
                                      tmp_path: Path) -> None:  # fmt: skip
    planter = Planter(
        zoo_doctor, tmp_path, sorted(drift_images.glob("*.jpg")), data_yaml=plant_data, sample=4
    )
    doctor, options = planter.plant(finding)
    report = doctor.diagnose(options)
    check_top(report, finding)
    if finding != "preprocess.pad_value":  # another pad value changes little: named first, as a warning
        assert report.top is not None and report.top.severity == "critical", report.top


@pytest.mark.slow
@pytest.mark.ultralytics
@pytest.mark.parametrize("finding", ACCURACY)
def test_yolov8n_plant_is_the_top_finding(
    finding: str, y8_doctor: Doctor, drift_images: Path, tmp_path: Path
) -> None:
    planter = Planter(y8_doctor, tmp_path, sorted(drift_images.glob("*.jpg")), tensors=True, sample=4)
    doctor, options = planter.plant(finding)
    check_top(doctor.diagnose(options), finding)


@pytest.mark.slow
def test_exif_orientation_applied_by_the_deployment(zoo_doctor: Doctor, tmp_path: Path) -> None:
    """Phone photos carry an EXIF rotation: readers that apply it (cv2.imread, Ultralytics) see other pixels
    than cvdeploy, which reads them as stored. Named as a geometry (resize) finding with its own title."""
    from cvdeploy.doctor import DoctorOptions, faults
    from cvdeploy.doctor.deployment import open_deployment
    from cvdeploy.doctor.variants import decode_with_exif

    tagged = faults.tag_orientation(zoo_doctor.images.paths, tmp_path / "phone")
    doctor = Doctor("zoo:n", tagged)
    dep = open_deployment(doctor.bundle)
    found = faults.results(dep.run, doctor.bundle.contract, tagged, decode=decode_with_exif)
    observed = faults.write_predict_json(found, tagged, tmp_path / "observed.json")
    report = doctor.diagnose(DoctorOptions(observed=observed))
    check_top(report, "preprocess.resize")
    assert report.top is not None and "EXIF" in report.top.title and report.top.severity == "critical"


@pytest.mark.slow
def test_a_modified_artifact_is_caught_by_its_hash(zoo_doctor: Doctor, tmp_path: Path) -> None:
    """A bundle whose artifact was edited after export: not refused (doctor is there to explain), but named."""
    from cvdeploy.doctor import faults

    b = faults.copy_bundle("zoo:n", tmp_path / "edited.cvd")
    path = b.file(b.artifact())
    faults.edit_onnx(path, path, mode="scale", factor=1.3)
    report = Doctor(b, zoo_doctor.images.paths).diagnose()
    check_top(report, "conversion.divergence")
    assert report.top is not None and "sha256" in report.top.evidence
