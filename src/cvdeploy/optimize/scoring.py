"""Scoring candidate models during optimization: mAP (top-1 for classifiers) on labels, or fidelity
against FP32 without.

Candidates are not in the bundle yet, so they are scored through a detached copy of the bundle
(manifest in memory only) with the candidate added as a temporary artifact: the very pipeline
and evaluator that score real artifacts, and nothing written to the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import ConfigError

CANDIDATE = "onnx-int8-candidate"


def detached_with(
    bundle: Bundle, path: Path, runtime: str = "onnxruntime", name: str = CANDIDATE, precision: str = "int8"
) -> Bundle:
    """A copy of ``bundle`` in memory with the model at ``path`` added as artifact ``name`` (run at ``precision``)."""
    manifest = bundle.manifest.model_copy(deep=True)
    manifest.artifacts = [a for a in manifest.artifacts if a.name != name]
    manifest.artifacts.append(
        Artifact(name=name, file=str(path.resolve()), runtime=runtime, precision=precision)
    )
    return Bundle(bundle.path, manifest)


@dataclass
class Scorer:
    """Scores a model file in points (0–100): mAP50-95 with labels, fidelity mAP50 vs FP32 without;
    for classifiers top-1 with labels, top-1 agreement with FP32 without.

    ``labels``: a ``data.yaml`` / COCO dataset (its ``split`` is used). ``images``: unlabelled images
    for fidelity. ``limit`` caps the images scored per candidate.
    """

    bundle: Bundle
    labels: str | Path | None = None
    images: str | Path | None = None
    split: str = "val"
    limit: int | None = None
    reference: str = "onnx-fp32"
    threads: int | None = None
    dataset: str = ""  # the evaluator's name for the data last scored
    reference_result: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.labels is None and self.images is None:
            raise ConfigError("scoring needs a labelled dataset (--data) or images for fidelity")

    @property
    def classifier(self) -> bool:
        return self.bundle.contract.task == "classify"

    @property
    def key(self) -> str:
        """The result's figure that is scored."""
        if self.classifier:
            return "top1" if self.labels is not None else "top1_agreement"
        return "mAP50-95" if self.labels is not None else "mAP50"

    @property
    def mode(self) -> str:
        if self.classifier:
            return "top-1" if self.labels is not None else "fidelity top-1"
        return "mAP50-95" if self.labels is not None else "fidelity mAP50"

    def result(self, path: Path, runtime: str = "onnxruntime", precision: str = "int8") -> dict[str, Any]:
        """The evaluator's full result for the model at ``path``, executed at ``precision``."""
        b = detached_with(self.bundle, path, runtime, precision=precision)
        if self.labels is not None:
            from cvdeploy.evaluate.validate import validate

            return validate(
                b, self.labels, artifact=CANDIDATE, split=self.split, limit=self.limit, progress=False,
                threads=self.threads,
            )  # fmt: skip
        from cvdeploy.evaluate.fidelity import fidelity

        assert self.images is not None
        return fidelity(
            b, self.images, CANDIDATE, self.reference, split=self.split, limit=self.limit, progress=False,
            threads=self.threads,
        )  # fmt: skip

    def points(self, result: dict[str, Any]) -> float:
        self.dataset = str(result.get("dataset", self.labels or self.images))
        value = result.get(self.key)
        return 0.0 if value is None else 100.0 * float(value)

    def __call__(self, path: Path, runtime: str = "onnxruntime", precision: str = "int8") -> float:
        return self.points(self.result(path, runtime, precision))

    def unusable(self) -> str | None:
        """Why scoring cannot work here (the FP32 model finds nothing on the fidelity images), or None."""
        if self.labels is not None or self.classifier:
            return None
        from cvdeploy.evaluate.fidelity import fidelity

        assert self.images is not None
        probe = fidelity(
            self.bundle, self.images, self.reference, self.reference, split=self.split,
            limit=min(self.limit or 8, 8), progress=False, threads=self.threads,
        )  # fmt: skip
        if not probe.get("reference_detections"):
            return f"{self.reference} finds no objects in {self.images}, so fidelity cannot be measured"
        return None

    def baseline(self) -> float:
        """The reference artifact's own score: its mAP, or 100 for fidelity (it agrees with itself).

        With labels the reference's result is kept in ``reference_result`` (to record in the bundle).
        """
        if self.labels is None:
            return 100.0
        from cvdeploy.evaluate.validate import validate

        self.reference_result = validate(
            self.bundle, self.labels, artifact=self.reference, split=self.split, limit=self.limit,
            progress=False, threads=self.threads,
        )  # fmt: skip
        return self.points(self.reference_result)


def single_source(sources: Any) -> str | Path | None:
    """One folder/file from an images argument (fidelity reads one source), else None."""
    if isinstance(sources, str | Path):
        return sources
    if isinstance(sources, list | tuple) and len(sources) == 1:
        return sources[0]
    return None


def make_scorer(
    b: Bundle,
    labels: str | Path | None,
    images: str | Path | None,
    limit: int | None,
    details: dict[str, Any],
) -> Scorer | None:
    """The accuracy check for an optimized model: mAP on ``labels``, else fidelity on ``images``.

    None (with the reason in ``details["accuracy"]``) when no check is possible.
    """
    import logging

    if b.contract.task == "raw":
        details["accuracy"] = "not measured: a raw model's outputs are not decoded"
        return None
    if labels is not None:
        return Scorer(b, labels=labels, limit=limit)
    if images is None:
        details["accuracy"] = (
            "not measured: give --data data.yaml (mAP) or --images with one image folder (fidelity against FP32)"
        )
        return None
    scorer = Scorer(b, images=images, limit=limit or 50)
    why = scorer.unusable()
    if why:
        details["accuracy"] = f"not measured: {why}"
        logging.getLogger("cvdeploy").warning("accuracy not measured: %s", why)
        return None
    return scorer


def record_accuracy(
    metrics: dict[str, Any],
    scorer: Scorer,
    baseline: float,
    score: float,
    drop: float,
    within: bool,
    budget: float,
) -> None:
    """Write a candidate's score (mAP with labels, fidelity without) and its budget verdict into ``metrics``."""
    if scorer.labels is not None:
        metrics.update(
            {"dataset": str(scorer.labels), "split": scorer.split, scorer.key: round(score / 100, 5)}
        )
        metrics["optimize"] = {f"fp32_{scorer.key}": round(baseline / 100, 5), "drop_points": round(drop, 3),
                               "max_drop": budget, "within_budget": within}  # fmt: skip
    elif scorer.classifier:
        metrics["fidelity"] = {"against": scorer.reference, "dataset": str(scorer.images),
                               "top1_agreement": round(score / 100, 5)}  # fmt: skip
        metrics["optimize"] = {
            "fidelity_loss_points": round(drop, 3),
            "max_loss": budget,
            "within_budget": within,
        }
    else:
        metrics["fidelity"] = {
            "against": scorer.reference,
            "dataset": str(scorer.images),
            "mAP50": round(score / 100, 5),
        }
        metrics["optimize"] = {
            "fidelity_loss_points": round(drop, 3),
            "max_loss": budget,
            "within_budget": within,
        }
