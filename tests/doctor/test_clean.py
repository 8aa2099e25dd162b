"""No false alarms: a correct deployment on clean data (another seed) yields no critical finding,
with every kind of evidence given — results, tensors, labels — and the slowness checks on."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.doctor import Doctor, faults
from cvdeploy.doctor.deployment import open_deployment
from cvdeploy.doctor.faults import Planter

pytestmark = pytest.mark.slow


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
    report = doctor.diagnose(Planter(doctor, tmp_path).clean(clean_data))
    _assert_clean(report)
    controlled = next(c for c in report.checks if c.id == "controlled")
    assert controlled.details["deployed"]["mAP50-95"] > 0.3  # the shipped model does detect these shapes


@pytest.mark.ultralytics
def test_clean_yolov8n_deployment_has_no_critical_finding(
    y8_bundle: Path, clean_data: Path, tmp_path: Path
) -> None:
    doctor = Doctor(y8_bundle, clean_data.parent / "images" / "val")
    options = Planter(doctor, tmp_path).clean(clean_data)
    dep = open_deployment(doctor.bundle)  # the same results, as Ultralytics save_txt files this time
    found = faults.results(
        dep.run, doctor.bundle.contract, doctor.images.paths, [o.name for o in dep.runtime.outputs]
    )
    options.observed = faults.write_save_txt(found, doctor.images.paths, tmp_path / "labels")
    _assert_clean(doctor.diagnose(options))
