"""``bench compare``: is the difference between two benchmark reports real, and how large is it?

Configurations are matched by key (artifact, size, batch, threads, concurrency, …); two reports
with one configuration each are compared even when the keys differ (before/after an
optimisation). For each pair the raw samples are tested with the Mann-Whitney U test; a change is
*real* when ``p < alpha``, and a *regression* when it is real and slower by more than ``threshold``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bench.stats import bootstrap_median_ratio, mann_whitney_u
from cvdeploy.errors import ConfigError, InputError

SCHEMA = "cvdeploy-bench/1"


@dataclass
class PairComparison:
    """One configuration in A against the same in B; ``ratio`` = median B / median A."""

    key_a: str
    key_b: str
    n_a: int
    n_b: int
    p50_a_ms: float
    p50_b_ms: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    p_superiority: float  # P(a sample of B is slower than one of A)
    verdict: str  # "slower" | "faster" | "no real difference"
    regression: bool

    @property
    def change(self) -> float:
        """Relative change of the median, B versus A (+0.10 = 10 % slower)."""
        return self.ratio - 1.0

    @property
    def label(self) -> str:
        return self.key_a if self.key_a == self.key_b else f"{self.key_a} → {self.key_b}"


@dataclass
class Comparison:
    """Every matched pair, what matched nothing, and the differences between the two environments."""

    pairs: list[PairComparison]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    environment_changes: list[str] = field(default_factory=list)
    stage: str = "total"
    threshold: float = 0.05
    alpha: float = 0.01

    @property
    def regressions(self) -> list[PairComparison]:
        return [p for p in self.pairs if p.regression]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "pairs": [{**asdict(p), "change": p.change} for p in self.pairs],
            "only_a": self.only_a,
            "only_b": self.only_b,
            "environment_changes": self.environment_changes,
            "regressions": len(self.regressions),
        }


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``cvdeploy bench --report DIR`` JSON file (bench.json); anything else is a clear error."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"report not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{p} is not JSON ({exc}); give two files written by 'cvdeploy bench --report DIR' (bench.json)"
        ) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ConfigError(
            f'{p} is not a cvdeploy bench report (no "schema": "{SCHEMA}"); '
            "give two files written by 'cvdeploy bench --report DIR' (bench.json)"
        )
    for r in data.get("results", []):
        if "samples_ms" not in r or "key" not in r:
            raise ConfigError(
                f"{p}: a result has no raw samples; re-run 'cvdeploy bench --report DIR' (bench.json) to write them"
            )
    return data


def compare_pair(
    a: np.ndarray, b: np.ndarray, key_a: str, key_b: str, threshold: float, alpha: float
) -> PairComparison:
    """Test ``(n,)`` samples ``b`` against ``a`` (milliseconds)."""
    test = mann_whitney_u(b, a)
    ratio, low, high = bootstrap_median_ratio(a, b)
    real = test.p_value < alpha and ratio != 1.0
    verdict = ("slower" if ratio > 1.0 else "faster") if real else "no real difference"
    return PairComparison(
        key_a=key_a,
        key_b=key_b,
        n_a=int(a.size),
        n_b=int(b.size),
        p50_a_ms=float(np.median(a)),
        p50_b_ms=float(np.median(b)),
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        p_value=test.p_value,
        p_superiority=test.p_superiority,
        verdict=verdict,
        regression=verdict == "slower" and ratio - 1.0 > threshold,
    )


def compare_reports(
    a: dict[str, Any], b: dict[str, Any], threshold: float = 0.05, alpha: float = 0.01, stage: str = "total"
) -> Comparison:
    """Compare two report dicts (as loaded by :func:`load_report`) configuration by configuration."""
    if threshold < 0:
        raise ConfigError(f"--threshold must be 0 or more (0.05 = 5 %), not {threshold}")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be between 0 and 1, not {alpha}")
    ra = {r["key"]: r for r in a.get("results", [])}
    rb = {r["key"]: r for r in b.get("results", [])}
    if not ra or not rb:
        raise ConfigError("a report has no measured configurations to compare")
    pairs_keys = [(k, k) for k in ra if k in rb]
    only_a = [k for k in ra if k not in rb]
    only_b = [k for k in rb if k not in ra]
    if not pairs_keys and len(ra) == 1 and len(rb) == 1:
        pairs_keys = [(next(iter(ra)), next(iter(rb)))]
        only_a, only_b = [], []
    if not pairs_keys:
        raise ConfigError(
            f"the reports share no configuration (A has {', '.join(ra)}; B has {', '.join(rb)}); "
            "benchmark the same configurations to compare them"
        )
    pairs = []
    for ka, kb in pairs_keys:
        sa, sb = ra[ka]["samples_ms"].get(stage), rb[kb]["samples_ms"].get(stage)
        if sa is None or sb is None:
            raise ConfigError(
                f"no {stage!r} samples for {ka}; stages recorded: {', '.join(ra[ka]['samples_ms'])}"
            )
        pairs.append(compare_pair(np.asarray(sa, float), np.asarray(sb, float), ka, kb, threshold, alpha))
    changes = environment_changes(a.get("environment", {}), b.get("environment", {}))
    changes += load_changes(a.get("system_load") or {}, b.get("system_load") or {})
    return Comparison(pairs, only_a, only_b, changes, stage, threshold, alpha)


def environment_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences between two environment fingerprints that can explain a change in speed."""
    out = []
    la, lb = a.get("libraries", {}) or {}, b.get("libraries", {}) or {}
    for name in sorted(set(la) | set(lb)):
        if la.get(name) != lb.get(name):
            out.append(f"{name} {la.get(name, 'absent')} → {lb.get(name, 'absent')}")
    ca, cb = a.get("cpu", {}) or {}, b.get("cpu", {}) or {}
    for k in ("model", "cores"):
        if ca.get(k) != cb.get(k):
            out.append(f"cpu {k} {ca.get(k)} → {cb.get(k)}")
    if a.get("gpu") != b.get("gpu"):
        out.append(f"gpu {a.get('gpu') or 'none'} → {b.get('gpu') or 'none'}")
    if a.get("python") != b.get("python"):
        out.append(f"python {a.get('python')} → {b.get('python')}")
    return out


def load_changes(a: dict[str, list[float]], b: dict[str, list[float]], tolerance: float = 0.5) -> list[str]:
    """The machine's 1-minute load average when each report was measured, when it differs notably."""

    def peak(load: dict[str, list[float]]) -> float | None:
        return max((v[0] for v in load.values() if v), default=None)

    la, lb = peak(a), peak(b)
    if la is None or lb is None or abs(la - lb) < tolerance:
        return []
    return [f"load average {la:.1f} → {lb:.1f} (other work on the machine changes timings)"]
