"""Each slowness finding, planted into a deployment of zoo:n and of a YOLOv8n graph, comes out on top.

The plants are facts about the deployment (threads, concurrency with spinning, FP16 on a CPU
without FP16 arithmetic, a requested accelerator that is not there, a slower artifact where a faster
one of the same accuracy exists) or costs far larger than measurement noise (a one-second first
inference, 12-megapixel uploads, objects three times larger than needed). No test asserts a time.

``speed.input_size`` is planted on zoo:n only: it rests on the sizes of the objects the model finds
(and on how many it still finds at the smaller size), and the untrained YOLOv8n's boxes carry no
object sizes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from cvdeploy import env
from cvdeploy.doctor import Doctor, DoctorOptions, SpeedSettings, faults
from cvdeploy.doctor.deployment import open_deployment
from cvdeploy.doctor.speed import load_deployed

pytestmark = pytest.mark.slow
FAST = {"runs": 6, "warmup": 2, "images": 3}
Plant = Callable[[Doctor, Path], tuple[Doctor, DoctorOptions]]


def _speed(**kw: object) -> DoctorOptions:
    return DoctorOptions(speed=SpeedSettings(**{**FAST, **kw}))  # type: ignore[arg-type]


def _slow_start(d: Doctor, _: Path) -> tuple[Doctor, DoctorOptions]:
    dep = open_deployment(d.bundle)

    def load(options):  # type: ignore[no-untyped-def]
        pipe = load_deployed(dep, options)
        pipe.runtime = faults.SlowStart(pipe.runtime, seconds=1.5)
        return pipe

    return d, _speed(loader=load)


def _fp16(d: Doctor, tmp: Path) -> tuple[Doctor, DoctorOptions]:
    if env.cpu_capabilities()["fp16"]:
        pytest.skip("this CPU has FP16 arithmetic: FP16 is a fine precision here")
    from cvdeploy.optimize.fp16 import convert_fp16

    convert_fp16(d.bundle.file(d.bundle.artifact()), tmp / "fp16.onnx")
    return d, DoctorOptions(model=tmp / "fp16.onnx", speed=SpeedSettings(**FAST))  # type: ignore[arg-type]


def _cuda(d: Doctor, _: Path) -> tuple[Doctor, DoctorOptions]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: nothing falls back")
    return d, _speed(device="cuda")


def _big_uploads(d: Doctor, tmp: Path) -> tuple[Doctor, DoctorOptions]:
    out = tmp / "uploads"
    out.mkdir()
    for p in d.images.paths[:3]:
        img = cv2.resize(cv2.imread(str(p)), (4000, 3000), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(out / f"{p.stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return Doctor(d.bundle, out), _speed()


def _large_objects(d: Doctor, tmp: Path) -> tuple[Doctor, DoctorOptions]:
    """Images whose objects are 3x larger (centre thirds blown up), and a reference profile that agrees."""
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.profile import build_profile

    out = tmp / "close-ups"
    out.mkdir()
    for p in d.images.paths:
        img = cv2.imread(str(p))
        h, w = img.shape[:2]
        crop = img[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
        cv2.imwrite(str(out / f"{p.stem}.jpg"), cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC))
    bundle = faults.copy_bundle(d.bundle, tmp / "closeups.cvd")
    profile = build_profile(Pipeline.from_bundle(bundle), sorted(out.glob("*.jpg")))
    (bundle.path / "profile.json").write_text(json.dumps(profile))
    bundle.manifest.reference_profile = "profile.json"
    bundle.save()
    return Doctor(bundle, out), _speed()


def _zoo_bigger_model(d: Doctor, tmp: Path) -> tuple[Doctor, DoctorOptions]:
    """zoo:s deployed while its bundle also holds zoo:n's model, recorded as more accurate (both real records)."""
    from cvdeploy.bundle import Artifact, Bundle

    small = Bundle.load("zoo:n")
    b = faults.copy_bundle("zoo:s", tmp / "s.cvd")
    (b.path / "onnx-fp32-n.onnx").write_bytes(small.file(small.artifact()).read_bytes())
    b.add_artifact(Artifact(name="onnx-fp32-n", file="onnx-fp32-n.onnx", runtime="onnxruntime", dynamic_batch=True,
                            metrics=dict(small.artifact().metrics)))  # fmt: skip
    return Doctor(b, d.images.paths), _speed()


def _y8_bigger_model(d: Doctor, tmp: Path) -> tuple[Doctor, DoctorOptions]:
    """A YOLOv8s graph deployed while the bundle also holds the YOLOv8n one, both recorded equally accurate."""
    from cvdeploy.bundle import Artifact
    from cvdeploy.export import torch_to_onnx
    from cvdeploy.sources.ultralytics import load_checkpoint

    b = faults.copy_bundle(d.bundle, tmp / "y8s.cvd")
    small = b.artifact()
    (b.path / "onnx-fp32-n.onnx").write_bytes(b.file(small).read_bytes())
    contract = b.contract.model_copy(deep=True)
    torch_to_onnx(load_checkpoint("yolov8s.yaml").module, b.path / "onnx-fp32.onnx", contract, dynamic_batch=True,
                  dynamic_shape=True, simplify=False)  # fmt: skip
    record = {"dataset": "a plant: both models recorded equally accurate", "mAP50-95": 0.5}
    b.add_artifact(Artifact(name="onnx-fp32", file="onnx-fp32.onnx", runtime="onnxruntime", metrics=record))
    b.add_artifact(Artifact(name="onnx-fp32-n", file="onnx-fp32-n.onnx", runtime="onnxruntime", metrics=record))
    return Doctor(b, d.images.paths), _speed()


COMMON: dict[str, Plant] = {
    "speed.warmup": _slow_start,
    "speed.threads": lambda d, _: (d, _speed(threads=4 * env.available_cpus())),
    "speed.precision": _fp16,
    "speed.provider_fallback": _cuda,
    "speed.preprocessing": _big_uploads,
    "speed.input_size": _large_objects,
    "speed.concurrency": lambda d, _: (d, _speed(concurrency=4, spinning=True)),
}


def _check(report, expected: str) -> None:  # type: ignore[no-untyped-def]
    summary = [(f.id, f.severity, f.score) for f in report.findings[:4]]
    assert report.top is not None and report.top.id == expected, summary
    assert "measured" in report.top.evidence or expected in ("speed.provider_fallback",)
    check = next(c for c in report.checks if c.id == "speed")
    assert check.details["measured"], "nothing was measured"


@pytest.mark.parametrize("finding", [*COMMON, "speed.model_size"])
def test_zoo_speed_plant_is_the_top_finding(finding: str, zoo_doctor: Doctor, tmp_path: Path) -> None:
    plant = COMMON.get(finding, _zoo_bigger_model)
    doctor, options = plant(zoo_doctor, tmp_path)
    _check(doctor.diagnose(options), finding)


@pytest.mark.ultralytics
@pytest.mark.parametrize("finding", [f for f in [*COMMON, "speed.model_size"] if f != "speed.input_size"])
def test_yolov8n_speed_plant_is_the_top_finding(finding: str, y8_doctor: Doctor, tmp_path: Path) -> None:
    plant = COMMON.get(finding, _y8_bigger_model)
    doctor, options = plant(y8_doctor, tmp_path)
    _check(doctor.diagnose(options), finding)
