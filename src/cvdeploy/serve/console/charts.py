"""Small server-rendered SVG charts for the console: plain shapes and numbers, no script, no CDN.

Each function returns the geometry a template draws (rectangles and labels in a fixed view box), so
the page works offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

W, H = 260.0, 64.0


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str = ""


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"


def histogram(hist: dict[str, Any]) -> dict[str, Any] | None:
    """Reference and window shares on the profile's bins (empty bins at both ends trimmed): two bar
    series in a ``W × H`` box, and the edge labels of the shown range."""
    edges, cur, ref = hist.get("edges"), hist.get("counts"), hist.get("reference")
    if not edges or not cur or not ref or len(cur) != len(ref):
        return None
    used = [i for i in range(len(cur)) if cur[i] or ref[i]]
    if not used:
        return None
    lo, hi = max(0, used[0] - 1), min(len(cur) - 1, used[-1] + 1)
    n_cur, n_ref = max(1, sum(cur)), max(1, sum(ref))
    shares = [(ref[i] / n_ref, cur[i] / n_cur) for i in range(lo, hi + 1)]
    top = max(max(a, b) for a, b in shares) or 1.0
    bw = W / len(shares)
    ref_bars, cur_bars = [], []
    for k, (a, b) in enumerate(shares):
        x = k * bw
        label = f"{_fmt(edges[lo + k])}–{_fmt(edges[lo + k + 1])}"
        ref_bars.append(Bar(x, H - H * a / top, bw, H * a / top, f"{label}: reference {a:.0%}"))
        cur_bars.append(Bar(x + bw * 0.2, H - H * b / top, bw * 0.6, H * b / top, f"{label}: window {b:.0%}"))
    return {"w": W, "h": H, "reference": ref_bars, "window": cur_bars, "lo": _fmt(edges[lo]),
            "hi": _fmt(edges[hi + 1])}  # fmt: skip


def timeline(points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Requests per slice of the window as bars, errors as red bars on top."""
    if not points:
        return None
    top = max(1, max(p["requests"] for p in points))
    bw = W / len(points)
    ok, bad = [], []
    for k, p in enumerate(points):
        good = p["requests"] - p["errors"]
        h_ok, h_bad = H * good / top, H * p["errors"] / top
        title = f"{p['start']}: {p['requests']} requests, {p['errors']} errors"
        ok.append(Bar(k * bw + 1, H - h_ok, bw - 2, h_ok, title))
        bad.append(Bar(k * bw + 1, H - h_ok - h_bad, bw - 2, h_bad, title))
    return {"w": W, "h": H, "ok": ok, "errors": bad, "top": top}


def latency(stages: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per stage: p50, p95, p99 (ms) and bar widths (share of the largest p99)."""
    order = [s for s in ("preprocess", "queue", "inference", "postprocess", "total") if s in stages]
    top = max((stages[s]["p99"] for s in order), default=1.0) or 1.0
    return [{"stage": s, **stages[s], "w50": 100 * stages[s]["p50"] / top, "w95": 100 * stages[s]["p95"] / top,
             "w99": 100 * stages[s]["p99"] / top} for s in order]  # fmt: skip
