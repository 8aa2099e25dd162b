"""Each slowness finding, planted into a deployment of zoo:n and of a YOLOv8n graph, comes out on top.

The plants (:class:`cvdeploy.doctor.faults.Planter`) are facts about the deployment (threads,
concurrency with spinning, FP16 on a CPU without FP16 arithmetic, a requested accelerator that is
not there, a slower artifact where a faster one of the same accuracy exists) or costs far larger
than measurement noise (a 1.5-second first inference, 12-megapixel uploads, objects three times
larger than needed: 20 fresh images whose objects are all ≥ 10 % of the side). No test asserts a time.

``speed.input_size`` is planted on zoo:n only: it rests on the sizes of the objects the model finds
(and on how many it still finds at the smaller size), and the untrained YOLOv8n's boxes carry no
object sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy import env
from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.doctor import Doctor, DoctorReport
from cvdeploy.doctor.faults import Planter, copy_bundle

pytestmark = pytest.mark.slow
LARGE_OBJECTS_SEED = 6162  # the speed.input_size plant's fresh images (no other test or benchmark uses it)
SPEED = [f"speed.{k}" for k in ["warmup", "threads", "precision", "provider_fallback", "preprocessing", "input_size", "model_size", "concurrency"]]  # fmt: skip


def _skip_where_not_a_fault(finding: str) -> None:
    if finding == "speed.precision" and env.cpu_capabilities()["fp16"]:
        pytest.skip("this CPU has FP16 arithmetic: FP16 is a fine precision here")
    if finding == "speed.provider_fallback":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("CUDA is available here: nothing falls back")


def check(report: DoctorReport, expected: str) -> None:
    summary = [(f.id, f.severity, f.score) for f in report.findings[:4]]
    assert report.top is not None and report.top.id == expected, summary
    assert "measured" in report.top.evidence or expected == "speed.provider_fallback"
    check = next(c for c in report.checks if c.id == "speed")
    assert check.details["measured"], "nothing was measured"


@pytest.mark.parametrize("finding", SPEED)
def test_zoo_speed_plant_is_the_top_finding(finding: str, zoo_doctor: Doctor, tmp_path: Path) -> None:
    _skip_where_not_a_fault(finding)
    doctor, options = Planter(zoo_doctor, tmp_path, seed=LARGE_OBJECTS_SEED, sample=4).plant(finding)
    check(doctor.diagnose(options), finding)


def _y8_with_smaller_model(dst: Path, y8: Bundle) -> Bundle:
    """A YOLOv8s graph deployed while the bundle also holds the YOLOv8n one, both recorded equally accurate."""
    from cvdeploy.export import torch_to_onnx
    from cvdeploy.sources.ultralytics import load_checkpoint

    b = copy_bundle(y8, dst)
    (b.path / "onnx-fp32-n.onnx").write_bytes(b.file(b.artifact()).read_bytes())
    torch_to_onnx(load_checkpoint("yolov8s.yaml").module, b.path / "onnx-fp32.onnx", b.contract, dynamic_batch=True,
                  dynamic_shape=True, simplify=False)  # fmt: skip
    record = {"dataset": "a plant: both models recorded equally accurate", "mAP50-95": 0.5}
    b.add_artifact(Artifact(name="onnx-fp32", file="onnx-fp32.onnx", runtime="onnxruntime", metrics=record))
    b.add_artifact(
        Artifact(name="onnx-fp32-n", file="onnx-fp32-n.onnx", runtime="onnxruntime", metrics=record)
    )
    return b


@pytest.mark.ultralytics
@pytest.mark.parametrize("finding", [f for f in SPEED if f != "speed.input_size"])
def test_yolov8n_speed_plant_is_the_top_finding(finding: str, y8_doctor: Doctor, tmp_path: Path) -> None:
    _skip_where_not_a_fault(finding)
    planter = Planter(
        y8_doctor, tmp_path, bigger=lambda dst: _y8_with_smaller_model(dst, y8_doctor.bundle), sample=4
    )
    doctor, options = planter.plant(finding)
    check(doctor.diagnose(options), finding)
