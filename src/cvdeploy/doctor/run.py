"""``diagnose``: run every check on a deployment and rank what they found.

    images ─▶ contract pass (deployed pipeline, every image once) ─┬─▶ preprocessing  (--observed/--inputs)
                                                                    ├─▶ drift          (reference profile)
                                                                    ├─▶ class mapping  (--observed/--labels)
                                                                    ├─▶ conversion     (vs the source)
                                                                    ├─▶ environment
                                                                    ├─▶ stage I/O log
                                                                    ├─▶ controlled     (--labels)
                                                                    └─▶ speed          (--speed)
                                                     findings ─▶ merged by id, most likely cause first

:class:`Doctor` keeps what runs share (loaded models, the PyTorch source, simulated variants) so a
test suite or benchmark can diagnose many observations of the same deployment cheaply;
:func:`diagnose` is the one-shot form the CLI uses. User inputs are read and checked before any
model runs, so a bad path costs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cvdeploy import env
from cvdeploy.bundle import Bundle
from cvdeploy.doctor import (
    classmap,
    controlled,
    conversion,
    drift,
    environment,
    preprocessing,
    speed,
    stageio,
)
from cvdeploy.doctor.context import Context, Workspace
from cvdeploy.doctor.deployment import Deployment, file_key, open_deployment
from cvdeploy.doctor.findings import CheckResult, rank
from cvdeploy.doctor.inputs import ImageSet, image_set, read_labels, read_observed, read_tensors
from cvdeploy.doctor.passes import ContractPass, contract_pass
from cvdeploy.doctor.progress import Progress, Silent
from cvdeploy.doctor.report import DoctorReport
from cvdeploy.doctor.timing import SpeedSettings
from cvdeploy.errors import CvdeployError, MissingDependency
from cvdeploy.evaluate.datasets import image_size
from cvdeploy.profile import load_profile, output_values, summarize

log = logging.getLogger("cvdeploy")


@dataclass
class DoctorOptions:
    """What one diagnosis is given besides the bundle and the images (the CLI's flags)."""

    artifact: str | None = None
    observed: Path | None = None
    inputs: Path | None = None
    labels: Path | None = None
    model: Path | None = None
    speed: SpeedSettings | None = None  # None: no slowness checks
    keep_io: Path | None = None
    sample: int = 8  # images whose every stage is captured (stage log, conversion review)
    variant_images: int = 24  # images the preprocessing variants are simulated on, at most
    save_profile: Path | None = None  # where to write a profile built from the images (bundles without one)


class Doctor:
    """Diagnoses deployments of one bundle on one set of images."""

    def __init__(self, bundle: Bundle | str | Path, images: str | Path | Sequence[str | Path], progress: Progress | None = None) -> None:  # fmt: skip
        # artifacts are verified by the conversion review: a modified file is a finding, not a refusal
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, verify=False)
        self.images: ImageSet = image_set(images)
        self.sizes = {p.stem: image_size(p) for p in self.images.paths}  # an unreadable image fails here
        self.workspace = Workspace(self.bundle)
        self.progress = progress or Silent()

    def _pass(self, deployment: Deployment, with_eval: bool, sample: int) -> ContractPass:
        """The contract pass of ``deployment``, reused from an earlier diagnosis of the same model file when it
        kept enough (evaluation-threshold results, captures)."""
        key = file_key(deployment.model_path)
        cached = self.workspace.cached_pass(key)
        if (cached is not None and (cached.with_eval or not with_eval)
                and len(cached.captures) >= min(sample, len(self.images))):  # fmt: skip
            return dataclasses.replace(cached, captures=cached.captures[:sample])
        value = contract_pass(deployment, self.images, with_eval, sample, self.progress)
        self.workspace.keep_pass(key, value)
        return value

    def diagnose(self, options: DoctorOptions | None = None) -> DoctorReport:
        """Run every check that the given evidence allows and return the ranked report."""
        opts = options or DoctorOptions()
        t0 = time.perf_counter()
        contract = self.bundle.contract
        observed = read_observed(opts.observed, self.images, contract, self.sizes) if opts.observed else None
        labels = read_labels(opts.labels, self.images, contract, self.sizes) if opts.labels else None
        tensors = read_tensors(opts.inputs, self.images, contract) if opts.inputs else None
        deployment = open_deployment(self.bundle, opts.artifact, opts.model)
        with_eval = labels is not None
        passed = self._pass(deployment, with_eval, opts.sample)
        profile = load_profile(self.bundle.path, self.bundle.manifest.reference_profile)
        note = ""
        if profile is None:
            built = summarize([r.features for r in passed.records.values()],
                              [output_values(r.result, *r.size) for r in passed.records.values()],
                              deployment.label, deployment.pipeline.contract.output.conf)  # fmt: skip
            note = (f"the bundle has no reference profile, so drift cannot be judged; one was built from these "
                    f"{len(self.images)} images")  # fmt: skip
            if opts.save_profile is not None:
                from cvdeploy.reports.jsonio import write_json

                write_json(built, opts.save_profile)
                note += f" and saved to {opts.save_profile} (add it to the bundle as reference_profile)"
        ctx = Context(self.workspace, deployment, self.images, passed, observed, tensors, labels, profile, note,
                      self.progress, opts.variant_images, opts.sample)  # fmt: skip
        checks: list[CheckResult] = []
        steps = [
            ("preprocessing", lambda: preprocessing.run(ctx)),
            ("drift", lambda: drift.run(ctx)),
            ("class_mapping", lambda: classmap.run(ctx)),
            ("conversion", lambda: conversion.run(ctx)),
            ("environment", lambda: environment.run(ctx)),
            ("stage_io", lambda: stageio.run(ctx, opts.keep_io)),
            ("controlled", lambda: controlled.run(ctx)),
        ]
        if opts.speed is not None:
            settings = opts.speed
            steps.append(("speed", lambda: speed.run(ctx, settings)))
        for name, step in steps:
            checks.extend(_guarded(name, step))
        findings = rank([f for c in checks for f in c.findings])
        seconds = time.perf_counter() - t0
        ref = self.workspace.reference()
        context = {"bundle": self.bundle.name, "deployment": deployment.label, "images": str(len(self.images)),
                   "reference": ref.label if ref else "none", "machine": f"{env.cpu_info()['model']} ({env.capabilities_line()})",
                   "seconds": f"{seconds:.1f}"}  # fmt: skip
        return DoctorReport(findings, checks, context)


def _guarded(name: str, step: object) -> list[CheckResult]:
    """Run one check; a missing optional package or a model it cannot analyse fails that check only."""
    assert callable(step)
    try:
        result: list[CheckResult] = step()
        return result
    except (MissingDependency, CvdeployError) as exc:
        if not isinstance(exc, MissingDependency) and not _analysis_error(exc):
            raise
        log.warning("check %s could not run: %s", name, exc)
        return [CheckResult(name, name.replace("_", " "), "failed", str(exc))]


def _analysis_error(exc: CvdeployError) -> bool:
    from cvdeploy.errors import ModelError

    return isinstance(exc, ModelError)


def diagnose(bundle: Bundle | str | Path, images: str | Path | Sequence[str | Path],
             options: DoctorOptions | None = None, progress: Progress | None = None) -> DoctorReport:  # fmt: skip
    """Diagnose a deployment of ``bundle`` on ``images`` (see :class:`DoctorOptions`)."""
    return Doctor(bundle, images, progress).diagnose(options)


__all__ = ["Doctor", "DoctorOptions", "diagnose"]
