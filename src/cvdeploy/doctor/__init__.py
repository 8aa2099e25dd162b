"""``cvdeploy doctor``: why is a deployed model less accurate or slower than expected, and what is the fix?

    report = diagnose("model.cvd", "samples/", DoctorOptions(observed=Path("observed.json")))
    report.top            # the most likely cause: a Finding (id, severity, evidence, fix, score)
    report.to_dict()      # {"findings": [...], "checks": [...]}

Every finding id is documented in :mod:`cvdeploy.doctor.findings`; each check lives in its own
module (preprocessing, drift, classmap, conversion, environment, stageio, controlled, speed).
"""

from __future__ import annotations

from cvdeploy.doctor.findings import FINDING_IDS, FINDINGS, CheckResult, Finding
from cvdeploy.doctor.report import DoctorReport
from cvdeploy.doctor.run import Doctor, DoctorOptions, diagnose
from cvdeploy.doctor.timing import SpeedSettings

__all__ = [
    "FINDINGS",
    "FINDING_IDS",
    "CheckResult",
    "Doctor",
    "DoctorOptions",
    "DoctorReport",
    "Finding",
    "SpeedSettings",
    "diagnose",
]
