"""Optimizations that retrain the bundle's PyTorch model: pruning + recovery, and distillation.

Both rebuild the model from the bundle's source (``provenance.source.factory`` + ``weights``),
train it with the one trainer (:mod:`cvdeploy.optimize.distill`), export it to ONNX with a parity
check against the trained PyTorch model, and add it as a new artifact (``onnx-fp32-pruned30``,
``onnx-fp32-distilled``) with its weights kept in the bundle.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.bundle import Artifact, Bundle, artifact_name
from cvdeploy.errors import ConfigError, ParityError
from cvdeploy.export import batches, torch_to_onnx
from cvdeploy.images import sample_images
from cvdeploy.optimize.artifacts import Finished, finish
from cvdeploy.optimize.distill import TrainConfig, train_student
from cvdeploy.optimize.source import example_input, load_source_model
from cvdeploy.parity import Tolerance, check_parity, tolerance_for

log = logging.getLogger("cvdeploy")
Step = Callable[[str], None]


@dataclass(frozen=True)
class PruneRecipe:
    """The pruning recipe measured by ``benchmarks/optimize.py --prune`` (issue 16: zoo:s, ≥ 30 % of MACs
    removed, ≥ 1.3× faster, within 2 mAP50-95 points, recovered in ≤ 60 min on a 2-core CPU); ``cvdeploy
    optimize --prune`` uses it for whatever is not given."""

    ratio: float = 0.2  # share of channels per layer (rounded to multiples of 8; narrow layers stay whole)
    crop: int = 320  # native-scale crops of the training images
    batch: int = 8
    lr: float = 1e-3
    label_gain: float = 1.0  # detection loss on the labels beside distillation from the unpruned model
    # the unpruned model's neck features matched too (zoo detectors): at 200 steps on zoo:s, 67.77 mAP50-95
    # against 66.18 with its outputs alone (gains 1/5/10/20: 67.05/67.77/67.59/67.42; benchmarks/distill_gain.py)
    feature_gain: float = 5.0
    budget_s: float = 3300.0  # recovery wall-clock budget; the cosine schedule follows it

    def train_config(self, epochs: int, labels: str | Path | None = None, **more: Any) -> TrainConfig:
        """The recovery's training settings: the recipe's crops, batch, rate and gains (the detection loss
        only with ``labels``), with ``more`` (threads, a time budget, another gain) over them."""
        fields: dict[str, Any] = {"crop": self.crop, "batch": self.batch, "lr": self.lr,
                                  "label_gain": self.label_gain if labels is not None else 0.0,
                                  "feature_gain": self.feature_gain}  # fmt: skip
        return TrainConfig(epochs=epochs, labels=labels, **{**fields, **more})


PRUNE_RECIPE = PruneRecipe()

#: A retrained model is another model: against the original FP32 its parity is recorded, never judged
#: (its accuracy is what counts); against its own PyTorch weights it must pass FP32 tolerance.
RETRAINED_TOLERANCE = Tolerance(atol=float("inf"), rtol=0.0, min_cosine=0.0, min_agreement=0.0)


def _add_trained(
    bundle: Bundle, model: Any, tag: str, state: dict[str, Any], details: dict[str, Any], say: Step
) -> Artifact:
    """Export ``model`` to ONNX, check it against the model itself, record it with ``state`` as weights."""
    torch = require("torch")
    from cvdeploy.runtimes import load_runtime
    from cvdeploy.runtimes.torch import TorchRuntime

    name = artifact_name("onnxruntime", "fp32", tag)
    fp32 = bundle.artifact("onnx-fp32")
    with tempfile.TemporaryDirectory(prefix="cvdeploy-retrain-") as tmp:
        onnx_path, weights = Path(tmp) / "model.onnx", Path(tmp) / "weights.pt"
        say(f"exporting {name}")
        torch_to_onnx(model.eval(), onnx_path, bundle.contract, dynamic_batch=fp32.dynamic_batch)
        ref, cand = TorchRuntime(model), load_runtime("onnxruntime", onnx_path)
        images = sample_images(4)
        tensors, geoms = batches(bundle.contract, images, cand.inputs[0].static_batch)
        parity, problem = check_parity(
            lambda t: ref.run({"images": t}), lambda t: cand.run({cand.inputs[0].name: t}), bundle.contract,
            tensors, geoms, "source", tolerance_for("fp32"),
        )  # fmt: skip
        if problem:
            raise ParityError(f"{name} disagrees with the trained PyTorch model: {problem}")
        torch.save(state, str(weights))
        done = Finished("onnxruntime", "fp32", {"{name}.onnx": onnx_path, "source/{name}.pt": weights}, tag=tag,
                        images=images, details={**details, "weights": f"source/{name}.pt"}, parity=parity,
                        tolerance=RETRAINED_TOLERANCE)  # fmt: skip
        return finish(bundle, done, say)


def prune_bundle(
    bundle: Bundle, ratio: float, images: str | Path | Sequence[str | Path], config: TrainConfig,
    step: Step | None = None, distill: bool = True,
) -> Artifact:  # fmt: skip
    """Remove ``ratio`` of the channels, recover by distillation from the unpruned model, add the artifact.

    ``distill=False`` recovers on the labels alone (``config.labels``; artifact ``…-pruned20labels``): the
    baseline that measures what the teacher adds (``benchmarks/distill_gain.py``)."""
    tp = require("torch_pruning", "structured pruning")
    from cvdeploy.optimize.prune import prune_channels

    say = step or (lambda msg: log.info(msg))
    if bundle.contract.task != "detect":
        raise ConfigError(f"pruning keeps the YOLO output layout; bundle {bundle.name!r} is not a detector")
    if not distill and not (config.labels and config.label_gain > 0):
        raise ConfigError("recovering a pruned model without the unpruned one as teacher needs labels")
    teacher = load_source_model(bundle)
    student = copy.deepcopy(teacher)
    report = prune_channels(student, example_input(bundle), ratio=ratio)
    say(
        f"pruned {ratio:.0%} of the channels: {report.macs_after / 1e9:.2f} of {report.macs_before / 1e9:.2f} GMACs left"
    )
    if config.feature_gain > 0 and not (distill and hasattr(student, "neck")):
        if distill:
            say(
                "matching the unpruned model's neck features needs a zoo detector: distilling its outputs only"
            )
        config = dataclasses.replace(config, feature_gain=0.0)
    tlog = train_student(student, teacher if distill else None, images, config,
                         on_epoch=lambda e, v: say(f"recovery epoch {e + 1}/{config.epochs}: loss {v:.4f}"))  # fmt: skip
    tag = f"pruned{round(ratio * 100)}" + ("" if distill else "labels")
    method = "distillation from the unpruned model" if distill else "no teacher"
    if config.feature_gain > 0:
        method += f" (outputs and neck features, feature gain {config.feature_gain:g})"
    if config.labels is not None and config.label_gain > 0:
        method += f" + detection loss on the train split of {config.labels}"
    details: dict[str, Any] = {"pruning": report.to_dict(), "recovery": {"method": method, **tlog.to_dict(),
                               "epochs": config.epochs, "crop": config.crop}}  # fmt: skip
    try:
        state = tp.state_dict(student)  # with the pruned structure, for tp.load_state_dict
    except AttributeError:  # torch-pruning cannot walk some modules (Ultralytics heads' properties)
        state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        details["weights_note"] = (
            "a plain state dict of the pruned model (torch-pruning could not record its structure)"
        )
    return _add_trained(bundle, student, tag, state, details, say)


def sparsify_bundle(bundle: Bundle, amount: float, step: Step | None = None) -> Artifact:
    """Unstructured magnitude pruning: zero the smallest ``amount`` of each layer's weights; add the artifact.

    Dense CPU kernels still multiply the zeros: the artifact's details (and the variants table's
    measured speedup) say plainly that this gives no speedup.
    """
    from cvdeploy.optimize.prune import magnitude_sparsity

    say = step or (lambda msg: log.info(msg))
    model = load_source_model(bundle)
    report = magnitude_sparsity(model, amount)
    say(f"{report['sparsity']:.0%} of the conv/linear weights are zero — {report['note']}")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _add_trained(bundle, model, f"sparse{round(amount * 100)}", state, {"sparsity": report}, say)


def distill_bundle(
    bundle: Bundle, teacher_spec: str | Path | None, images: str | Path | Sequence[str | Path], config: TrainConfig,
    step: Step | None = None, tag: str | None = None, fresh: bool = False,
) -> Artifact:  # fmt: skip
    """Fine-tune the bundle's model to match a teacher bundle's model; add ``onnx-fp32-distilled``.

    Label-free on ``images`` unless ``config.labels`` is set. ``teacher_spec=None`` with labels is
    plain supervised fine-tuning (``onnx-fp32-finetuned``), the no-teacher baseline. ``fresh``
    trains a newly initialised student (seeded by ``config.seed``) instead of the bundle's weights.
    """
    say = step or (lambda msg: log.info(msg))
    if fresh and teacher_spec is None and not (config.labels and config.label_gain > 0):
        raise ConfigError(
            "training a fresh student without a teacher needs labels"
        )  # before loading anything
    teacher = teacher_name = None
    if teacher_spec is not None:
        teacher_bundle = Bundle.load(teacher_spec)
        if teacher_bundle.contract.classes != bundle.contract.classes:
            raise ConfigError(
                f"teacher {teacher_bundle.name!r} predicts other classes than {bundle.name!r}; distillation needs "
                "the same classes in the same order"
            )
        teacher, teacher_name = load_source_model(teacher_bundle), teacher_bundle.name
    student = load_source_model(bundle, fresh=fresh, seed=config.seed)
    what = "distillation" if teacher is not None else ("training" if fresh else "fine-tuning")
    tlog = train_student(student, teacher, images, config,
                         on_epoch=lambda e, v: say(f"{what} epoch {e + 1}/{config.epochs}: loss {v:.4f}"))  # fmt: skip
    details = {what: {"teacher": teacher_name, "labels": str(config.labels) if config.labels else None,
               "start": "fresh initialisation" if fresh else "the bundle's weights",
               **tlog.to_dict(), "epochs": config.epochs, "crop": config.crop}}  # fmt: skip
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return _add_trained(bundle, student, tag or ("distilled" if teacher is not None else "finetuned"), state,
                        details, say)  # fmt: skip
