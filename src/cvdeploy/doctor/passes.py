"""The contract pass: every image once through the deployed pipeline, with what each check needs kept.

Per image: its size and statistics (for drift), its detections at the contract's threshold (and at
the evaluation threshold when labels are given), and health figures of every stage (non-finite
values, constant outputs, saturated scores, boxes outside the input). For the first ``sample``
images every stage's input and output is captured whole (the stage I/O log).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cvdeploy.decode import Decoder
from cvdeploy.doctor.deployment import Deployment
from cvdeploy.doctor.inputs import ImageSet
from cvdeploy.doctor.progress import Progress, Silent
from cvdeploy.evaluate.runner import EVAL_CONF, EVAL_MAX_DET
from cvdeploy.images import read_image
from cvdeploy.profile import image_stats
from cvdeploy.results import Detections, Result

#: A class score this close to 1 is saturated (a sigmoid fed huge logits).
SATURATED = 0.999


@dataclass
class Health:
    """Per-image health of the stages: non-finite counts per stage and output anomalies."""

    nonfinite: dict[str, int] = field(default_factory=dict)  # stage → non-finite values
    constant_output: bool = False
    saturated_share: float = 0.0  # share of candidate boxes whose best class score ≥ SATURATED
    out_of_range: int = 0  # candidate boxes (above the threshold) outside the model input


@dataclass
class ImageRecord:
    stem: str
    path: Path
    size: tuple[int, int]  # (width, height)
    features: dict[str, float]
    result: Result  # at the contract's threshold
    eval_result: Result | None  # at the evaluation threshold (labels given)
    health: Health


@dataclass
class Capture:
    """Every stage's input and output for one image."""

    stem: str
    image: np.ndarray  # (h, w, 3) BGR uint8
    tensor: np.ndarray  # (1, 3, H, W) as fed to the model
    outputs: list[np.ndarray]
    result: Result


@dataclass
class ContractPass:
    records: dict[str, ImageRecord]
    captures: list[Capture]
    seconds: float
    stage_seconds: dict[str, float]
    with_eval: bool = False  # records hold results at the evaluation threshold too

    def results(self, stems: list[str]) -> list[Result]:
        return [self.records[s].result for s in stems]

    @property
    def sizes(self) -> dict[str, tuple[int, int]]:
        return {s: r.size for s, r in self.records.items()}


def _nonfinite(a: np.ndarray) -> int:
    return int(a.size - np.count_nonzero(np.isfinite(a))) if np.issubdtype(a.dtype, np.floating) else 0


def health_of(
    deployment: Deployment, tensor: np.ndarray, outputs: list[np.ndarray], result: Result
) -> Health:
    """Non-finite values per stage and the anomalies of the raw output of one image."""
    h = Health()
    h.nonfinite["tensor"] = _nonfinite(tensor)
    h.nonfinite["output"] = sum(_nonfinite(o) for o in outputs)
    if isinstance(result, Detections):
        h.nonfinite["detections"] = _nonfinite(result.xyxy) + _nonfinite(result.confidence)
    finite = [o[np.isfinite(o)] for o in outputs if np.issubdtype(o.dtype, np.floating)]
    h.constant_output = bool(finite) and all(f.size == 0 or float(f.max() - f.min()) == 0.0 for f in finite)
    contract = deployment.pipeline.contract
    if contract.output.format == "yolov8" and outputs and outputs[0].ndim == 3:
        pred = np.nan_to_num(outputs[0][0].astype(np.float32))  # (4+nc, N)
        best = pred[4:].max(0) if pred.shape[0] > 4 else np.zeros(0)
        cand = best > contract.output.conf
        h.saturated_share = float((best >= SATURATED).mean()) if best.size else 0.0
        if cand.any():
            cx, cy, w, bh = pred[0, cand], pred[1, cand], pred[2, cand], pred[3, cand]
            H, W = tensor.shape[2:4] if contract.input.layout == "NCHW" else tensor.shape[1:3]
            bad = (
                (cx < 0) | (cx > W) | (cy < 0) | (cy > H) | (w <= 0) | (bh <= 0) | (w > 2 * W) | (bh > 2 * H)
            )
            h.out_of_range = int(bad.sum())
    return h


def contract_pass(
    deployment: Deployment,
    images: ImageSet,
    with_eval: bool = False,
    sample: int = 8,
    progress: Progress | None = None,
) -> ContractPass:
    """Run every image through the deployed pipeline once (see the module docstring)."""
    bar = progress or Silent()
    pipe = deployment.pipeline
    eval_contract = pipe.contract.model_copy(deep=True)
    eval_contract.output.conf = EVAL_CONF
    eval_contract.output.max_det = EVAL_MAX_DET
    eval_decoder = Decoder(eval_contract, [o.name for o in pipe.runtime.outputs])
    records: dict[str, ImageRecord] = {}
    captures: list[Capture] = []
    stage = dict.fromkeys(("read", "preprocess", "inference", "decode"), 0.0)
    clock = time.perf_counter
    t_start = clock()
    bar.begin(f"running {len(images)} images through {deployment.label}", len(images))
    for k, path in enumerate(images.paths):
        t0 = clock()
        img = read_image(path)
        feats = image_stats(img, path)
        t1 = clock()
        tensor, geoms = pipe.preprocess([img])
        t2 = clock()
        outputs = pipe.infer(tensor)
        t3 = clock()
        (result,) = pipe.decode(outputs, geoms)
        eval_result = eval_decoder(outputs, geoms)[0] if with_eval else None
        t4 = clock()
        for name, dt in zip(stage, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stage[name] += dt
        records[path.stem] = ImageRecord(path.stem, path, (int(img.shape[1]), int(img.shape[0])), feats, result,
                                         eval_result, health_of(deployment, tensor, outputs, result))  # fmt: skip
        if k < sample:
            captures.append(Capture(path.stem, img, tensor, outputs, result))
        bar.advance()
    bar.end()
    return ContractPass(records, captures, clock() - t_start, stage, with_eval)
