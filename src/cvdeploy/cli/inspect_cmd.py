"""``cvdeploy inspect``: a bundle's contract, artifacts, parity and provenance as readable tables."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from cvdeploy.cli.common import bundle_key_options, console, handle_errors

HELP = """Show a bundle: its contract, artifacts (size, parity, metrics) and provenance.

  cvdeploy inspect model.cvd

  cvdeploy inspect zoo:n --json
"""


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "–" if v is None else format(v, spec)


def _executes(execution: dict[str, Any] | None, stated: str) -> str:
    """What the runtime read back when the artifact was checked: ``fp32 (AMD EPYC)``; ``–`` when not recorded."""
    if not execution:
        return "–"
    got = str(execution.get("precision", "?"))
    where = execution.get("cpu") or execution.get("device") or ""
    mark = "" if got == stated else " (≠ name!)"
    return f"{got}{mark}" + (f" on {where}" if where else "")


def _here(bundle: Any, art: Any) -> str:
    """Load the artifact now and read back what this machine's engine executes (or why it refuses)."""
    from cvdeploy.errors import CvdeployError

    try:
        ex = bundle.load_runtime(art).execution()
    except CvdeployError as exc:
        return f"refused: {str(exc).split(': ', 1)[-1][:80]}"
    threads = f", {ex.threads} threads" if ex.threads else ""
    return f"{ex.precision}{threads}"


def artifacts_table(bundle: object) -> Table:
    from cvdeploy.bundle import Bundle

    assert isinstance(bundle, Bundle)
    t = Table(title=f"artifacts of {bundle.name}", title_justify="left")
    for col in (
        "artifact",
        "runtime",
        "precision",
        "checked as",
        "runs here",
        "size MB",
        "max abs diff",
        "cosine",
        "agreement",
        "metrics",
    ):
        t.add_column(
            col,
            justify="left"
            if col in ("artifact", "runtime", "metrics", "checked as", "runs here")
            else "right",
        )
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
            _executes(art.execution, art.precision),
            _here(bundle, art),
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


@bundle_key_options
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
    from cvdeploy import env

    recorded = cpu.get("capabilities") or env.cpu_capabilities(cpu.get("flags", []))
    head.add_row("created", f"{m.provenance.created} by cvdeploy {m.provenance.tool_version}")
    head.add_row(
        "environment",
        f"python {envf.get('python', '?')}, onnxruntime {libs.get('onnxruntime', '–')}, torch {libs.get('torch', '–')}, "
        f"openvino {libs.get('openvino', '–')}; {cpu.get('model', '?')} ({', '.join(cpu.get('flags', []))})",
    )
    head.add_row("capabilities then", env.capabilities_line(recorded))
    head.add_row("this machine", f"{env.cpu_info()['model']}: {env.capabilities_line()}")
    if m.reference_profile:
        head.add_row("reference profile", m.reference_profile)
    console.print(head)
    console.print(artifacts_table(b))
