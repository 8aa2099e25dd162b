"""Operator profiles: parsing an ONNX Runtime trace, ranking, and both real profilers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.bench.config import BenchConfig
from cvdeploy.bench.harness import ImageFeed
from cvdeploy.bench.profile import parse_ort_trace, profile_config, rank
from cvdeploy.bundle import Bundle


def _trace() -> list[dict[str, object]]:
    ev: list[dict[str, object]] = []
    for run, ts in enumerate((0, 1000, 2000)):
        ev.append({"cat": "Session", "name": "model_run", "ts": ts, "dur": 900})
        scale = 10 if run == 0 else 1  # the warm-up run is slow and must not count
        ev.append(
            {
                "cat": "Node",
                "name": "/conv1/Conv_kernel_time",
                "ts": ts + 1,
                "dur": 300 * scale,
                "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"},
            }
        )
        ev.append(
            {
                "cat": "Node",
                "name": "/conv2/Conv_kernel_time",
                "ts": ts + 2,
                "dur": 100 * scale,
                "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"},
            }
        )
        ev.append(
            {
                "cat": "Node",
                "name": "/act/Sigmoid_kernel_time",
                "ts": ts + 3,
                "dur": 100 * scale,
                "args": {"op_name": "Sigmoid", "provider": "CPUExecutionProvider"},
            }
        )
        ev.append({"cat": "Node", "name": "/act/Sigmoid_fence_before", "ts": ts + 3, "dur": 5, "args": {}})
    return ev


def test_parse_ort_trace_skips_warmup_runs_and_fences() -> None:
    runs, nodes = parse_ort_trace(_trace(), skip_runs=1)
    assert runs == 2
    assert len(nodes) == 6
    assert {n[0] for n in nodes} == {"/conv1/Conv", "/conv2/Conv", "/act/Sigmoid"}
    total, by_type, by_node = rank(nodes, runs, top=10)
    assert total == pytest.approx(0.5)  # ms per inference
    assert [(o.op_type, o.ms, o.share, o.calls) for o in by_type] == [
        ("Conv", 0.4, 0.8, 2.0),
        ("Sigmoid", 0.1, 0.2, 1.0),
    ]
    assert [o.name for o in by_node] == ["/conv1/Conv", "/conv2/Conv", "/act/Sigmoid"]
    assert by_node[0].share == pytest.approx(0.6)
    assert sum(o.share for o in by_node) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("artifact", "runtime", "top_op"),
    [("onnx-fp32", "onnxruntime", "Conv"), ("openvino-fp32", "openvino", "Convolution")],
)
def test_profile_real_runtimes(
    tiny_bundle_path: Path, photos: list, artifact: str, runtime: str, top_op: str
) -> None:
    b = Bundle.load(tiny_bundle_path)
    cfg = BenchConfig(artifact=artifact, runtime=runtime, precision="fp32", imgsz=(320, 320))
    p = profile_config(b, cfg, ImageFeed.from_arrays(photos[:1]), runs=2, warmup=1, top=5)
    assert p.runs == 2
    assert len(p.by_type) == 5
    assert p.by_type[0].op_type == top_op
    assert p.total_ms > 0
    assert p.by_type[0].share > 0.3
