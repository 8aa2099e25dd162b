"""The monitoring report's plots (matplotlib's object API, PNG bytes), in the style of :mod:`cvdeploy.reports.plots`."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from cvdeploy._deps import require
from cvdeploy.reports.plots import COLORS, DPI


def _figure(width: float, height: float) -> Any:
    require("matplotlib", "report plots")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def drift_timeline(
    features: Sequence[str], labels: Sequence[str], effects: Sequence[Sequence[float | None]],
    flagged: Sequence[Sequence[bool]], min_effect: float,
) -> bytes:  # fmt: skip
    """Features × time slices coloured by Cramér's V (0–1, blank = not tested), flagged cells boxed."""
    import numpy as np

    grid = np.array([[np.nan if v is None else float(v) for v in row] for row in effects], dtype=float)
    fig = _figure(max(6.5, 1.8 + 0.32 * len(labels)), max(2.4, 1.0 + 0.36 * len(features)))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_yticks(range(len(features)), labels=list(features), fontsize=8)
    step = max(1, len(labels) // 12)
    ax.set_xticks(
        range(0, len(labels), step), labels=list(labels)[::step], rotation=35, ha="right", fontsize=7
    )
    for r, row in enumerate(flagged):
        for c, f in enumerate(row):
            if f:
                ax.add_patch(_rect(c - 0.5, r - 0.5, 1, 1))
    fig.colorbar(im, ax=ax, label=f"Cramér's V (boxed: flagged; drift needs ≥ {min_effect:g})", shrink=0.85)
    return _png(fig)


def _rect(x: float, y: float, w: float, h: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor="black", linewidth=1.4)


def lines(
    labels: Sequence[str], series: Mapping[str, Sequence[float | None]], ylabel: str, title: str = "",
    bars: Sequence[float] | None = None, bar_label: str = "",
) -> bytes:  # fmt: skip
    """One line per series over time slices (None = gap); optional bars on a second axis."""
    fig = _figure(8.5, 3.0)
    ax = fig.subplots()
    x = list(range(len(labels)))
    if bars is not None:
        ax2 = ax.twinx()
        ax2.bar(x, list(bars), color=COLORS[5], alpha=0.25, label=bar_label)
        ax2.set_ylabel(bar_label, color=COLORS[5])
    for i, (name, values) in enumerate(series.items()):
        ys = [float("nan") if v is None else v for v in values]
        ax.plot(x, ys, "-o", markersize=3, color=COLORS[i % len(COLORS)], label=name)
    step = max(1, len(labels) // 12)
    ax.set_xticks(x[::step], labels=list(labels)[::step], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title)
    return _png(fig)
