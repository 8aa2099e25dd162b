"""No false alarms: a correct deployment on clean data (another seed) yields no critical finding,
with every kind of evidence given — results, tensors, labels — and the slowness checks on."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.doctor import Doctor, DoctorOptions, SpeedSettings, faults
from cvdeploy.doctor.deployment import open_deployment

pytestmark = pytest.mark.slow


def _clean_options(doctor: Doctor, data: Path, tmp: Path, txt: bool = False) -> DoctorOptions:
    dep = open_deployment(doctor.bundle)
    found = faults.results(dep.run, doctor.bundle.contract, doctor.images.paths, [o.name for o in dep.runtime.outputs])
    observed = (faults.write_save_txt(found, doctor.images.paths, tmp / "labels") if txt
                else faults.write_predict_json(found, doctor.images.paths, tmp / "observed.json"))  # fmt: skip
    tensors = faults.write_tensors(doctor.bundle.contract, doctor.images.paths, tmp / "tensors")
    return DoctorOptions(observed=observed, inputs=tensors, labels=data,
                         speed=SpeedSettings(runs=6, warmup=2, images=3))  # fmt: skip


def _assert_clean(report) -> None:  # type: ignore[no-untyped-def]
    critical = [(f.id, f.evidence) for f in report.critical]
    assert critical == [], critical
    assert report.exit_code == 0
    verdicts = {c.id: c.verdict for c in report.checks}
    for check in ("preprocessing", "class_mapping", "conversion", "stage_io", "controlled", "speed"):
        assert verdicts.get(check) in ("ok", "finding"), verdicts  # every check ran
    assert verdicts["preprocessing"] == "ok" and verdicts["class_mapping"] == "ok", verdicts


def test_clean_zoo_deployment_has_no_critical_finding(clean_data: Path, tmp_path: Path) -> None:
    doctor = Doctor("zoo:n", clean_data.parent / "images" / "val")
    report = doctor.diagnose(_clean_options(doctor, clean_data, tmp_path))
    _assert_clean(report)
    controlled = next(c for c in report.checks if c.id == "controlled")
    assert controlled.details["deployed"]["mAP50-95"] > 0.3  # the shipped model does detect these shapes


@pytest.mark.ultralytics
def test_clean_yolov8n_deployment_has_no_critical_finding(y8_bundle: Path, clean_data: Path, tmp_path: Path) -> None:
    doctor = Doctor(y8_bundle, clean_data.parent / "images" / "val")
    _assert_clean(doctor.diagnose(_clean_options(doctor, clean_data, tmp_path, txt=True)))
