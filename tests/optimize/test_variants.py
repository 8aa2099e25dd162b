"""The variants table, the Pareto front and the recommendation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.bundle import Bundle
from cvdeploy.optimize.auto import accuracy_loss, pareto, recommend
from cvdeploy.optimize.variants import Variant, document, record, table, variants


def _v(name: str, p50: float, drop: float | None = None, fidelity: float | None = None) -> Variant:
    return Variant(name, "onnxruntime", name.split("-")[1], 1.0, p50_ms=p50, model_p50_ms=p50, drop=drop,
                   fidelity=fidelity)  # fmt: skip


ROWS = [_v("onnx-fp32", 50.0, 0.0), _v("onnx-int8", 30.0, 0.6), _v("openvino-int8", 25.0, 1.8),
        _v("onnx-fp16", 55.0, 0.0)]  # fmt: skip


@pytest.mark.parametrize(
    ("budget", "max_drop", "want"),
    [
        (None, 1.0, "onnx-int8"),  # openvino-int8 is faster but loses too much
        (None, 2.0, "openvino-int8"),
        (40.0, 1.0, "onnx-int8"),
        (20.0, 1.0, None),  # nothing is fast enough: say so
        (None, -1.0, None),
    ],
)
def test_recommendation(budget: float | None, max_drop: float, want: str | None) -> None:
    rec, why = recommend(ROWS, budget, max_drop, 5.0)
    assert rec == want and why


def test_pareto_front_drops_dominated_variants() -> None:
    assert pareto(ROWS) == ["openvino-int8", "onnx-int8", "onnx-fp32"]  # fp16: slower, no more accurate


def test_loss_without_labels_is_fidelity() -> None:
    assert accuracy_loss(_v("onnx-int8", 1.0, fidelity=97.5)) == pytest.approx(2.5)
    assert accuracy_loss(_v("onnx-int8", 1.0)) is None


def test_rows_from_a_bundle(tiny_bundle_copy: Path) -> None:
    b = Bundle.load(tiny_bundle_copy)
    b.artifact("onnx-fp32").metrics["mAP50-95"] = 0.5
    b.artifact("openvino-fp32").metrics["mAP50-95"] = 0.49
    latency = {"onnx-fp32": {"p50_ms": 20.0, "model_p50_ms": 10.0},
               "openvino-fp32": {"p50_ms": 15.0, "model_p50_ms": 5.0}}  # fmt: skip
    rows = variants(b, latency)
    ov = rows[1]
    assert ov.speedup == 2.0 and ov.drop == pytest.approx(1.0) and ov.map50_95 == 49.0
    assert ov.size_mb > 0 and ov.parity_cosine is not None
    record(b, rows)
    again = Bundle.load(tiny_bundle_copy)
    assert again.artifact("openvino-fp32").metrics["variant"]["speedup_vs_fp32"] == 2.0
    # the recorded figures alone rebuild the same table
    assert variants(again)[1].speedup == 2.0
    t = table(rows, highlight="openvino-fp32")
    assert t.highlight == [1] and "2.00x" in t.rows[1] and "-1.00" in t.rows[1]
    assert document(b, rows).tables()[0].columns[0] == "artifact"


def test_fp16_without_speedup_says_so(tiny_bundle_copy: Path) -> None:
    b = Bundle.load(tiny_bundle_copy)
    art = b.artifact("openvino-fp32")
    art.precision, art.made_by = "fp16", "optimize"
    rows = variants(b, {"onnx-fp32": {"model_p50_ms": 10.0}, "openvino-fp32": {"model_p50_ms": 12.0}})
    assert any("no speedup from FP16 on this CPU" in n for n in rows[1].notes)


@pytest.mark.slow
def test_auto_adds_variants_and_recommends(tiny_bundle_copy: Path, calib_dir: Path) -> None:
    from cvdeploy.optimize.auto import auto_optimize

    res = auto_optimize(tiny_bundle_copy, calib_dir, runs=5, fp16=False)
    names = Bundle.load(tiny_bundle_copy).artifact_names
    assert "onnx-int8" in names and "openvino-int8" in names
    assert "onnx-fp16" in res.skipped and res.pareto
    # the untrained model finds nothing, so INT8 accuracy is unknown: only FP32 can be recommended
    assert res.recommended in ("onnx-fp32", "openvino-fp32") and res.why
    assert (tiny_bundle_copy / "reports" / "optimize.json").is_file()
