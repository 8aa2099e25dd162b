"""Sweep enumeration, artifact selection, impossible batches and image sizes an artifact cannot take."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.bench.config import BenchSettings, normalize_runtime, parse_sizes
from cvdeploy.bench.sweep import (
    ArtifactResolver,
    SkipConfig,
    check_batches,
    enumerate_configs,
    input_dims,
    select_artifacts,
)
from cvdeploy.bundle import Bundle
from cvdeploy.errors import ConfigError
from cvdeploy.runtimes import RuntimeOptions


def test_enumeration_is_the_full_product_in_a_stable_order(tiny_bundle_path: Path) -> None:
    b = Bundle.load(tiny_bundle_path)
    arts = select_artifacts(b)
    s = BenchSettings(
        imgsz=[(320, 320), (256, 256)], batch=[1, 4], threads=[1, 2], concurrency=[1, 4], sessions=2
    )
    configs = enumerate_configs(b, arts, s)
    assert len(configs) == 2 * 2 * 2 * 2 * 2
    assert len({c.key for c in configs}) == len(configs)
    assert configs[0].key == "onnx-fp32 320x320 b1 t1 c1"
    assert configs[1].key == "onnx-fp32 320x320 b1 t1 c4 s2"  # sessions only matter with concurrency
    assert configs[-1].artifact == "openvino-fp32"
    assert {c.sessions for c in configs if c.concurrency == 1} == {1}


def test_default_sweep_is_every_artifact_at_the_contract_size(tiny_bundle_path: Path) -> None:
    b = Bundle.load(tiny_bundle_path)
    configs = enumerate_configs(b, select_artifacts(b), BenchSettings())
    assert [c.key for c in configs] == ["onnx-fp32 320x320 b1 tauto c1", "openvino-fp32 320x320 b1 tauto c1"]


@pytest.mark.parametrize(
    ("artifacts", "runtimes", "expected"),
    [
        ([], ["openvino"], ["openvino-fp32"]),
        ([], ["onnxruntime", "openvino"], ["onnx-fp32", "openvino-fp32"]),
        (["onnx-fp32"], [], ["onnx-fp32"]),
        (["onnx-fp32", "onnx-fp32"], ["onnxruntime"], ["onnx-fp32"]),
    ],
)
def test_select_artifacts(
    tiny_bundle_path: Path, artifacts: list[str], runtimes: list[str], expected: list[str]
) -> None:
    b = Bundle.load(tiny_bundle_path)
    assert [a.name for a in select_artifacts(b, artifacts, runtimes)] == expected


@pytest.mark.parametrize(
    ("artifacts", "runtimes", "match"),
    [
        ([], ["torch"], r"no artifact for runtime 'torch'; it has: onnx-fp32 \(onnxruntime\), openvino-fp32"),
        (["onnx-int8"], [], "has no artifact 'onnx-int8'; it has: onnx-fp32, openvino-fp32"),
        (["onnx-fp32"], ["openvino"], "do not run on openvino"),
    ],
)
def test_select_artifacts_errors(
    tiny_bundle_path: Path, artifacts: list[str], runtimes: list[str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        select_artifacts(Bundle.load(tiny_bundle_path), artifacts, runtimes)


@pytest.mark.parametrize(
    ("name", "expected"), [("ort", "onnxruntime"), ("OV", "openvino"), ("onnx", "onnxruntime")]
)
def test_runtime_aliases(name: str, expected: str) -> None:
    assert normalize_runtime(name) == expected


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'tensorflow'"):
        normalize_runtime("tensorflow")


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("640", [(640, 640)]),
        ("320,480,640", [(320, 320), (480, 480), (640, 640)]),
        ("480x640, 320", [(480, 640), (320, 320)]),
        (None, []),
    ],
)
def test_parse_sizes(text: str | None, sizes: list[tuple[int, int]]) -> None:
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["big", "0", "1x2x3", "-32"])
def test_parse_sizes_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="--imgsz"):
        parse_sizes(text)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"runs": 0}, "--runs"),
        ({"batch": [0]}, "--batch"),
        ({"budget_stat": "p42"}, "--budget-stat"),
        ({"min_map": 60.0}, "--min-map"),
        ({"runs": None}, "--duration"),
        ({"threads": [0]}, "--threads"),
    ],
)
def test_settings_validation(changes: dict[str, object], match: str) -> None:
    s = BenchSettings()
    for k, v in changes.items():
        setattr(s, k, v)
    with pytest.raises(ConfigError, match=match):
        s.validate()


def test_impossible_batch_for_a_static_model(static_bundle: Path) -> None:
    b = Bundle.load(static_bundle)
    static = b.artifact("onnx-fp32-static")
    assert input_dims(b.file(static), "onnxruntime") == (1, 3, 320, 320)
    check_batches(b, [static], [1])  # its own batch is fine
    with pytest.raises(ConfigError, match="fixed batch of 1, so --batch 4 is impossible"):
        check_batches(b, [static], [1, 4])
    check_batches(b, [b.artifact("onnx-fp32")], [1, 4])  # a dynamic batch takes anything


def test_fixed_size_without_a_source_is_skipped_with_the_reason(no_source_bundle: Path) -> None:
    b = Bundle.load(no_source_bundle)
    cfg = enumerate_configs(b, [b.artifact("onnx-fp32")], BenchSettings(imgsz=[(256, 256)]))[0]
    resolver = ArtifactResolver(b)
    with pytest.raises(SkipConfig, match=r"fixed 320x320 input .* no PyTorch source.*--dynamic-shape"):
        resolver.resolve(cfg, RuntimeOptions())
    native = enumerate_configs(b, [b.artifact("onnx-fp32")], BenchSettings())[0]
    assert resolver.resolve(native, RuntimeOptions()).source == "bundle"


def test_size_off_the_stride_is_skipped(tiny_bundle_path: Path) -> None:
    b = Bundle.load(tiny_bundle_path)
    cfg = enumerate_configs(b, [b.artifact("onnx-fp32")], BenchSettings(imgsz=[(300, 300)]))[0]
    with pytest.raises(SkipConfig, match="multiple of the model stride 32"):
        ArtifactResolver(b).resolve(cfg, RuntimeOptions())


@pytest.mark.slow
def test_fixed_size_is_reexported_from_the_torch_source(tiny_bundle_path: Path) -> None:
    from cvdeploy.bench import run_bench

    report = run_bench(tiny_bundle_path, artifacts=["onnx-fp32"], imgsz=[(256, 256)], runs=2, warmup=0)
    (r,) = report.results
    assert r.source == "re-exported"
    assert r.config.imgsz == (256, 256)
    assert any("re-exported" in n for n in r.notes)
    assert r.metrics == {}  # accuracy recorded at 320 does not carry over to 256
