"""Every finding ``doctor`` can report, documented in one place, and the types that carry them.

Finding ids are stable: scripts, tests and the JSON output refer to them. Each id names one cause
of a deployed model being less accurate or slower than expected; a check that finds evidence for
it returns a :class:`Finding` with that id, a score and the fix.

==========================  ======================================================================
id                          what it means
==========================  ======================================================================
preprocess.channel_order    the deployment feeds BGR where the contract says RGB (or the reverse)
preprocess.resize           it stretches or centre-crops where the contract letterboxes (or the reverse)
preprocess.normalization    it scales/normalises pixels differently (mean/std vs /255 vs none)
preprocess.pad_value        it pads the letterbox with another grey level
preprocess.input_size       it feeds another input size than the contract's
data.drift                  the images differ from the reference profile (brightness, blur, …) and
                            the model's outputs moved with them
labels.class_mapping        class ids are permuted between the model and the deployment or labels
conversion.divergence       the deployed model computes something else than the source: a changed
                            weight, a quantised decode head, FP16 range, a dropped operator
env.mismatch                the machine or libraries differ from the export's in ways that change
                            numerics (effective precision, runtime version, CPU features)
numerics.nonfinite          NaN or infinity appears in a stage of the pipeline
speed.warmup                the first requests are much slower than the steady state
speed.threads               more compute threads than CPUs this process may use (oversubscription)
speed.precision             a precision the CPU does not run fast (FP16 without FP16 arithmetic,
                            S8S8 INT8 on x86, BF16 available but unused)
speed.provider_fallback     an accelerator was requested but the model runs on the CPU
speed.preprocessing         image decode and preprocessing take a large share of each request
speed.input_size            the objects are large enough for a smaller, faster input size
speed.model_size            the bundle has a smaller or faster artifact of the same accuracy
speed.concurrency           spin-waiting threads under concurrent requests, or requests that could
                            overlap but run one at a time
==========================  ======================================================================

**Score** (0–1) is how strongly the evidence says that this is the cause: findings are sorted by
it, most likely first. **Severity** is how much it matters: ``critical`` (it explains a loss of
accuracy or speed large enough to matter; ``doctor`` exits 1), ``warning`` (real but small, or
likely but unproven), ``info`` (worth knowing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cvdeploy.reports.document import Figure, Table

Severity = Literal["critical", "warning", "info"]
#: Draws a check's figures when a report needs them (plots cost seconds; JSON and the terminal skip them).
FigureFn = Callable[[], list[Figure]]
Verdict = Literal["ok", "finding", "skipped", "failed"]
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Kind:
    """What one finding id means and the fix that applies when nothing more specific is known."""

    title: str
    fix: str


FINDINGS: dict[str, Kind] = {
    "preprocess.channel_order": Kind(
        "channel order differs from the contract",
        "convert the colour order as the contract says (cv2.cvtColor BGR→RGB) or run images through "
        "cvdeploy's Pipeline",
    ),
    "preprocess.resize": Kind(
        "resize mode differs from the contract",
        "resize as the contract says (letterbox/stretch/centre crop) and map boxes back the same way",
    ),
    "preprocess.normalization": Kind(
        "pixel scaling/normalisation differs from the contract",
        "scale and normalise pixels exactly as the contract says (scale, mean, std)",
    ),
    "preprocess.pad_value": Kind(
        "letterbox padding value differs from the contract",
        "pad the letterbox with the contract's pad value",
    ),
    "preprocess.input_size": Kind(
        "input size differs from the contract",
        "feed the model the contract's input size",
    ),
    "data.drift": Kind(
        "production images differ from the reference data",
        "collect and label images like the production ones and fine-tune, or fix the camera/capture",
    ),
    "labels.class_mapping": Kind(
        "class ids are permuted",
        "map class ids by name with the bundle's class list (cvdeploy inspect shows it)",
    ),
    "conversion.divergence": Kind(
        "the deployed model diverges from the source",
        "re-export the model from the source with cvdeploy export (parity is checked)",
    ),
    "env.mismatch": Kind(
        "the environment differs from the export's",
        "run on the recorded library versions and precision, or re-validate the bundle here",
    ),
    "numerics.nonfinite": Kind(
        "NaN or infinity in the pipeline",
        "find the stage that produces it (the evidence names it) and fix its inputs or weights",
    ),
    "speed.warmup": Kind(
        "the first requests are slow (no warm-up)",
        "run a few warm-up requests at startup before serving or measuring",
    ),
    "speed.threads": Kind(
        "more threads than CPUs (oversubscription)",
        "set intra-op threads to the CPUs this process may use (cvdeploy's default)",
    ),
    "speed.precision": Kind(
        "a precision this CPU does not run fast",
        "use a precision this CPU runs fast (cvdeploy optimize picks one by CPU features)",
    ),
    "speed.provider_fallback": Kind(
        "the accelerator fell back to the CPU",
        "install the runtime build for the accelerator (e.g. onnxruntime-gpu) and its drivers",
    ),
    "speed.preprocessing": Kind(
        "image decoding and preprocessing dominate",
        "send images closer to the model's input size, or decode at reduced size",
    ),
    "speed.input_size": Kind(
        "a smaller input size would do",
        "re-export at the smaller input size (cvdeploy export --imgsz)",
    ),
    "speed.model_size": Kind(
        "a smaller or faster artifact of the same accuracy exists",
        "deploy the faster artifact (cvdeploy serve --artifact)",
    ),
    "speed.concurrency": Kind(
        "concurrency is handled badly",
        "turn thread spinning off under concurrent requests, or keep several requests in flight",
    ),
}

#: The stable finding ids, in catalogue order.
FINDING_IDS: tuple[str, ...] = tuple(FINDINGS)


@dataclass
class Finding:
    """One likely cause with its evidence and the fix; ``score`` in 0–1 ranks findings."""

    id: str
    severity: Severity
    evidence: str
    score: float
    fix: str = ""
    title: str = ""

    def __post_init__(self) -> None:
        if self.id not in FINDINGS:
            raise ValueError(f"unknown finding id {self.id!r}; add it to cvdeploy.doctor.findings first")
        self.title = self.title or FINDINGS[self.id].title
        self.fix = self.fix or FINDINGS[self.id].fix
        self.score = round(float(min(1.0, max(0.0, self.score))), 3)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"id", "severity", "title", "evidence", "fix", "score"}``."""
        return {"id": self.id, "severity": self.severity, "title": self.title, "evidence": self.evidence,
                "fix": self.fix, "score": self.score}  # fmt: skip


@dataclass
class CheckResult:
    """What one check did: its verdict, a one-line summary, figures for the report and any findings."""

    id: str
    title: str
    verdict: Verdict
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    figures: list[FigureFn] = field(default_factory=list)
    seconds: float = 0.0
    tables: list[Table] = field(default_factory=list)  # shown in the terminal and the HTML report

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "verdict": self.verdict, "summary": self.summary,
                "findings": [f.id for f in self.findings], "seconds": round(self.seconds, 2),
                "details": self.details}  # fmt: skip


def skipped(check_id: str, title: str, why: str) -> CheckResult:
    return CheckResult(check_id, title, "skipped", why)


def rank(findings: list[Finding]) -> list[Finding]:
    """Merge findings that share an id (evidence joined, highest score and severity kept), most likely first."""
    merged: dict[str, Finding] = {}
    for f in findings:
        have = merged.get(f.id)
        if have is None:
            merged[f.id] = Finding(f.id, f.severity, f.evidence, f.score, f.fix, f.title)
            continue
        first, second = (have, f) if have.score >= f.score else (f, have)
        merged[f.id] = Finding(
            f.id,
            min(have.severity, f.severity, key=lambda s: SEVERITY_RANK[s]),
            f"{first.evidence} {second.evidence}",
            max(have.score, f.score),
            first.fix,
            first.title,
        )
    return sorted(merged.values(), key=lambda f: (-f.score, SEVERITY_RANK[f.severity], f.id))
