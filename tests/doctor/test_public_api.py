"""The public surface of ``cvdeploy.doctor`` is deliberate, and importing it (or its CLI module) pulls in
no heavy optional library."""

from __future__ import annotations

import subprocess
import sys

import cvdeploy.doctor


def test_doctor_all_is_pinned() -> None:
    assert sorted(cvdeploy.doctor.__all__) == sorted(
        [
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
    )
    assert all(hasattr(cvdeploy.doctor, name) for name in cvdeploy.doctor.__all__)


def test_imports_stay_light() -> None:
    code = (
        "import sys, cvdeploy.cli.doctor_cmd, cvdeploy.doctor, cvdeploy.doctor.faults; heavy = [m for m in "
        "('onnxruntime', 'openvino', 'torch', 'matplotlib', 'jinja2', 'scipy', 'ultralytics') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
