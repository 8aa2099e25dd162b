"""Plots for reports, drawn with matplotlib's object API (no pyplot state) and returned as PNG bytes.

Each function takes plain numbers and labels, so any command can reuse it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from cvdeploy._deps import require

DPI = 110
COLORS = ("#1f6feb", "#e16f24", "#2da44e", "#8250df", "#cf222e", "#57606a", "#bf8700", "#0a7e8c")


def _figure(width: float, height: float) -> Any:
    require("matplotlib", "report plots")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def distribution(
    series: Mapping[str, Sequence[float]], xlabel: str = "latency (ms)", title: str = ""
) -> bytes:
    """One horizontal box plot per series (``label → samples``), with every sample as a faint dot."""
    labels = list(series)
    fig = _figure(8.5, 1.2 + 0.45 * max(len(labels), 1))
    ax = fig.subplots()
    data = [list(series[k]) for k in labels]
    ax.boxplot(
        data,
        vert=False,
        tick_labels=labels,
        showfliers=False,
        widths=0.55,
        medianprops={"color": COLORS[1], "linewidth": 2},
    )
    for i, d in enumerate(data, start=1):
        jitter = [i + 0.18 * math.sin(j * 12.9898) for j in range(len(d))]
        ax.scatter(d, jitter, s=5, alpha=0.35, color=COLORS[0], linewidths=0)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return _png(fig)


def stacked_bars(
    labels: Sequence[str], segments: Mapping[str, Sequence[float]], xlabel: str = "ms", title: str = ""
) -> bytes:
    """Horizontal bars, one per label, split into ``segment name → values`` (one value per label)."""
    fig = _figure(8.5, 1.4 + 0.42 * max(len(labels), 1))
    ax = fig.subplots()
    left = [0.0] * len(labels)
    for i, (name, values) in enumerate(segments.items()):
        ax.barh(list(labels), list(values), left=left, label=name, color=COLORS[i % len(COLORS)], height=0.6)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside upper center", fontsize=8, ncols=min(len(segments), 5), frameon=False)
    if title:
        ax.set_title(title)
    return _png(fig)


def pareto(
    points: Sequence[tuple[str, float, float]],
    front: Sequence[str],
    chosen: str | None = None,
    x_limit: float | None = None,
    y_floor: float | None = None,
    xlabel: str = "latency (ms)",
    ylabel: str = "accuracy",
    title: str = "",
) -> bytes:
    """Scatter of ``(label, x, y)`` (lower x and higher y are better) with the front joined by a line.

    ``x_limit`` and ``y_floor`` draw the budget and the accuracy floor; ``chosen`` is ringed.
    """
    fig = _figure(7.5, 4.8)
    ax = fig.subplots()
    on_front = [p for p in points if p[0] in set(front)]
    others = [p for p in points if p[0] not in set(front)]
    if others:
        ax.scatter(
            [p[1] for p in others], [p[2] for p in others], color=COLORS[5], alpha=0.6, label="dominated"
        )
    if on_front:
        pts = sorted(on_front, key=lambda p: p[1])
        ax.plot([p[1] for p in pts], [p[2] for p in pts], "-o", color=COLORS[0], label="Pareto front")
    for label, x, y in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if chosen is not None:
        for label, x, y in points:
            if label == chosen:
                ax.scatter(
                    [x], [y], s=220, facecolors="none", edgecolors=COLORS[2], linewidths=2, label="chosen"
                )
    if x_limit is not None:
        ax.axvline(x_limit, color=COLORS[4], linestyle="--", linewidth=1, label=f"budget {x_limit:g}")
    if y_floor is not None:
        ax.axhline(y_floor, color=COLORS[6], linestyle="--", linewidth=1, label=f"floor {y_floor:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _png(fig)


def heatmap(
    values: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    unit: str = "ms",
) -> bytes:
    """A grid of numbers (``None`` = no value) coloured from fast (light) to slow (dark), each annotated."""
    import numpy as np

    grid = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    fig = _figure(max(4.5, 1.6 + 0.9 * len(col_labels)), max(2.2, 1.2 + 0.45 * len(row_labels)))
    ax = fig.subplots()
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels), fontsize=8)
    finite = grid[np.isfinite(grid)]
    mid = float(finite.mean()) if finite.size else 0.0
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            v = grid[r, c]
            text = "–" if not np.isfinite(v) else f"{v:.3g}"
            ax.text(c, r, text, ha="center", va="center", fontsize=8, color="white" if v > mid else "black")
    fig.colorbar(im, ax=ax, label=unit, shrink=0.8)
    if title:
        ax.set_title(title)
    return _png(fig)
