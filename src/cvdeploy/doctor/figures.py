"""Doctor's plots: drift histograms, per-layer error curves, variant rankings and image pairs.

Charts use matplotlib's object API (through :mod:`cvdeploy.reports.plots`); image pairs are
composed with OpenCV, so they need no plotting library. Each function returns PNG bytes, or None
when the optional plotting package is missing (the report then says so instead of failing).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from cvdeploy._deps import require
from cvdeploy.draw import annotate
from cvdeploy.errors import MissingDependency
from cvdeploy.preprocess import resize_bgr
from cvdeploy.reports import plots
from cvdeploy.results import Result

log = logging.getLogger("cvdeploy")


def _plotting() -> bool:
    try:
        require("matplotlib", "report plots")
    except MissingDependency as exc:
        log.info("no plots: %s", exc)
        return False
    return True


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=plots.DPI, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def drift_histograms(rows: Sequence[tuple[str, Sequence[float], Sequence[int], Sequence[int], str]]) -> bytes | None:  # fmt: skip
    """Small multiples: per feature ``(name, edges, reference counts, current counts, verdict)``, both as shares."""
    if not rows or not _plotting():
        return None
    cols = 3
    n_rows = (len(rows) + cols - 1) // cols
    fig = _figure(10.5, 2.4 * n_rows)
    axes = np.atleast_1d(fig.subplots(n_rows, cols)).ravel()
    for ax, (name, edges, ref, cur, verdict) in zip(axes, rows, strict=False):
        e = np.asarray(edges, float)
        width = np.diff(e)
        r = np.asarray(ref, float) / max(1.0, float(np.sum(ref)))
        c = np.asarray(cur, float) / max(1.0, float(np.sum(cur)))
        ax.bar(e[:-1], r, width=width, align="edge", alpha=0.45, color=plots.COLORS[0], label="reference")
        ax.step(e, np.append(c, c[-1] if c.size else 0), where="post", color=plots.COLORS[1], linewidth=1.8,
                label="these images")  # fmt: skip
        ax.set_title(
            f"{name} — {verdict}", fontsize=9, color=plots.COLORS[4] if verdict != "same" else "black"
        )
        ax.tick_params(labelsize=7)
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return _png(fig)


def layer_curve(
    positions: Sequence[int],
    sqnr_db: Sequence[float],
    names: Sequence[str],
    first_jump: int | None,
    title: str,
) -> bytes | None:
    """SQNR of every aligned intermediate tensor along the graph, the first jump marked."""
    if not positions or not _plotting():
        return None
    fig = _figure(9.5, 3.6)
    ax = fig.subplots()
    y = np.asarray(sqnr_db, float)
    ax.plot(positions, y, "-o", markersize=2.5, color=plots.COLORS[0])
    if first_jump is not None and first_jump < len(positions):
        ax.axvline(positions[first_jump], color=plots.COLORS[4], linestyle="--", linewidth=1)
        ax.annotate(names[first_jump][-40:], (positions[first_jump], y[first_jump]), textcoords="offset points",
                    xytext=(6, 8), fontsize=7, color=plots.COLORS[4])  # fmt: skip
    ax.set_xlabel("position in the graph (topological order of the reference)")
    ax.set_ylabel("SQNR vs reference (dB, higher = closer)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def ranking(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str) -> bytes | None:
    """Horizontal bars, best first (e.g. how well each preprocessing variant explains the observations)."""
    if not labels or not _plotting():
        return None
    return plots.stacked_bars(list(labels), {xlabel: list(values)}, xlabel=xlabel, title=title)


def stage_split(labels: Sequence[str], stages: Mapping[str, Sequence[float]], title: str) -> bytes | None:
    if not labels or not _plotting():
        return None
    return plots.stacked_bars(list(labels), stages, xlabel="ms per image", title=title)


def confusion(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str) -> bytes | None:
    if matrix.size == 0 or not _plotting():
        return None
    return plots.heatmap(matrix.tolist(), list(rows), list(cols), title=title, unit="boxes")


def image_pairs(pairs: Sequence[tuple[str, np.ndarray, Result, Result]], left: str, right: str, size: int = 300) -> bytes:  # fmt: skip
    """One row per image: the image annotated with ``left`` results beside the same image with ``right`` ones."""
    rows = []
    for caption, img, a, b in pairs:
        tiles = []
        for label, res in ((left, a), (right, b)):
            tile = resize_bgr(annotate(img, res), size)
            canvas = np.full((size + 26, size, 3), 255, np.uint8)
            canvas[26 : 26 + tile.shape[0], : tile.shape[1]] = tile
            cv2.putText(canvas, f"{label}: {caption}"[:52], (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20),
                        1, cv2.LINE_AA)  # fmt: skip
            tiles.append(canvas)
        rows.append(np.hstack([tiles[0], np.full((size + 26, 8, 3), 255, np.uint8), tiles[1]]))
    sheet = np.vstack(rows) if rows else np.full((10, 10, 3), 255, np.uint8)
    ok, buf = cv2.imencode(".png", sheet)
    return buf.tobytes() if ok else b""
