"""``cvdeploy inspect``: a bundle's contract, artifacts, parity and provenance as readable tables."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from cvdeploy.cli.common import console, handle_errors

HELP = """Show a bundle: its contract, artifacts (size, parity, metrics) and provenance.

  cvdeploy inspect model.cvd

  cvdeploy inspect zoo:n --json
"""


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "–" if v is None else format(v, spec)


def artifacts_table(bundle: object) -> Table:
    from cvdeploy.bundle import Bundle

    assert isinstance(bundle, Bundle)
    t = Table(title=f"artifacts of {bundle.name}", title_justify="left")
    for col in (
        "artifact",
        "runtime",
        "precision",
        "size MB",
        "max abs diff",
        "cosine",
        "agreement",
        "metrics",
    ):
        t.add_column(col, justify="right" if col not in ("artifact", "runtime", "metrics") else "left")
    for art in bundle.manifest.artifacts:
        size = sum((bundle.path / f).stat().st_size for f in art.sha256 if (bundle.path / f).is_file()) / 1e6
        p = art.parity
        metrics = ", ".join(
            f"{k} {100 * v:.1f}" if _accuracy(k) else f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in art.metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "images"
        )
        default = " (default)" if art.name == bundle.manifest.default_artifact else ""
        t.add_row(
            art.name + default,
            art.runtime,
            art.precision,
            f"{size:.2f}",
            _fmt(p.max_abs_diff if p else None, ".2e"),
            _fmt(p.cosine if p else None, ".6f"),
            _fmt(p.box_agreement if p else None, ".3f"),
            metrics or "–",
        )
    t.caption = "accuracy (mAP, top-k) in points, 0-100"
    return t


def _accuracy(key: str) -> bool:
    """Metric keys recorded as fractions that are shown in points."""
    return "mAP" in key or key in ("top1", "top5")


@handle_errors
def inspect(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON instead of tables."),
) -> None:
    from cvdeploy.bundle import Bundle

    b = Bundle.load(bundle)
    m = b.manifest
    if as_json:
        typer.echo(json.dumps(m.model_dump(mode="json", by_alias=True), indent=2))
        return
    c = m.contract
    head = Table(title=f"bundle {m.name} (version {m.version})", title_justify="left", show_header=False)
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row("path", str(b.path))
    head.add_row("task", c.task)
    shown = ", ".join(c.classes[:12]) + (f", … ({len(c.classes)} in all)" if len(c.classes) > 12 else "")
    head.add_row("classes", shown or "–")
    head.add_row("default artifact", m.default_artifact)
    i, o = c.input, c.output
    head.add_row(
        "input",
        f"{i.name} {i.layout} {i.dtype} {i.height}x{i.width}, {i.resize} (pad {i.pad_value}), {i.color}, "
        f"scale {i.scale:.6g}, mean {i.mean}, std {i.std}, stride {i.stride}, "
        f"batch {'dynamic' if i.dynamic_batch else 'fixed'}, shape {'dynamic' if i.dynamic_shape else 'fixed'}",
    )
    nms = (
        "NMS in the graph"
        if o.format == "end2end"
        else f"{'agnostic' if o.agnostic_nms else 'per-class'} NMS"
    )
    kpts = f", keypoints {o.kpt_shape}" if o.kpt_shape else ""
    head.add_row(
        "output", f"{c.task} / {o.format}: conf {o.conf}, iou {o.iou}, max_det {o.max_det}, {nms}{kpts}"
    )
    src = m.provenance.source
    head.add_row(
        "source",
        f"{src.kind}: {src.file or src.factory or '–'}"
        + (f" (sha256 {src.sha256[:12]}…)" if src.sha256 else "")
        + (f"; PyTorch model kept in {src.weights}" if src.kept else "; no PyTorch model kept"),
    )
    envf = m.provenance.environment
    libs = envf.get("libraries", {})
    cpu = envf.get("cpu", {})
    head.add_row("created", f"{m.provenance.created} by cvdeploy {m.provenance.tool_version}")
    head.add_row(
        "environment",
        f"python {envf.get('python', '?')}, onnxruntime {libs.get('onnxruntime', '–')}, torch {libs.get('torch', '–')}, "
        f"openvino {libs.get('openvino', '–')}; {cpu.get('model', '?')} ({', '.join(cpu.get('flags', []))})",
    )
    if m.reference_profile:
        head.add_row("reference profile", m.reference_profile)
    console.print(head)
    console.print(artifacts_table(b))
