"""Bundle manifest: schema versioning, sha256 verification, artifact lookup, zoo names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cvdeploy.bundle import Bundle, artifact_name
from cvdeploy.errors import BundleError, ConfigError


def _edit_manifest(bundle: Path, **changes: object) -> None:
    path = bundle / "cvdeploy.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_load_verifies_and_describes(tiny_bundle_path: Path) -> None:
    b = Bundle.load(tiny_bundle_path)
    assert b.name == "tiny"
    assert b.artifact_names == ["onnx-fp32", "openvino-fp32"]
    assert b.artifact().name == "onnx-fp32"
    art = b.artifact("openvino-fp32")
    assert set(art.sha256) == {"openvino-fp32/model.xml", "openvino-fp32/model.bin"}
    env = b.manifest.provenance.environment
    assert env["python"] and "onnxruntime" in env["libraries"] and env["cpu"]["cores"] >= 1


@pytest.mark.parametrize("rel", ["onnx-fp32.onnx", "openvino-fp32/model.bin"])
def test_tampered_artifact_is_refused_by_name(tiny_bundle_copy: Path, rel: str) -> None:
    f = tiny_bundle_copy / rel
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rel.replace("/", ".")):
        Bundle.load(tiny_bundle_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "cvdeploy/99"}, "unknown manifest schema"),
        ({"schema": None}, "unknown manifest schema"),
        ({"name": None}, "invalid manifest: name"),
        ({"surprise": 1}, "invalid manifest: surprise"),
    ],
)
def test_bad_manifest_is_refused(tiny_bundle_copy: Path, change: dict[str, object], message: str) -> None:
    _edit_manifest(tiny_bundle_copy, **change)
    with pytest.raises(BundleError, match=message):
        Bundle.load(tiny_bundle_copy)


def test_missing_and_non_bundles(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle not found"):
        Bundle.load(tmp_path / "nope.cvd")
    with pytest.raises(BundleError, match="not a cvdeploy bundle"):
        Bundle.load(tmp_path)
    (tmp_path / "cvdeploy.yaml").write_text("a: [unclosed")
    with pytest.raises(BundleError, match="not valid YAML"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleError, match="no bundled model 'zoo:zz'"):
        Bundle.load("zoo:zz")


def test_missing_artifact_file(tiny_bundle_copy: Path) -> None:
    (tiny_bundle_copy / "openvino-fp32" / "model.bin").unlink()
    with pytest.raises(BundleError, match=r"missing its file openvino-fp32/model\.bin"):
        Bundle.load(tiny_bundle_copy)


def test_unknown_artifact_names_the_ones_that_exist(tiny_bundle_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no artifact 'onnx-int8'; it has: onnx-fp32, openvino-fp32"):
        Bundle.load(tiny_bundle_path).artifact("onnx-int8")


@pytest.mark.parametrize(
    ("runtime", "precision", "tag", "expected"),
    [
        ("onnxruntime", "fp32", None, "onnx-fp32"),
        ("openvino", "int8", None, "openvino-int8"),
        ("onnxruntime", "fp32", "pruned30", "onnx-fp32-pruned30"),
    ],
)
def test_artifact_names(runtime: str, precision: str, tag: str | None, expected: str) -> None:
    assert artifact_name(runtime, precision, tag) == expected


def test_a_pipeline_hashes_what_it_runs_and_refuses_it_when_modified(tiny_bundle_copy: Path) -> None:
    """Bundle.open reads only the manifest; the artifact is hashed when it is loaded, and a file
    modified between opening and loading is still refused."""
    from cvdeploy.pipeline import Pipeline

    b = Bundle.open(tiny_bundle_copy)
    assert b._verified == {}
    with (tiny_bundle_copy / "onnx-fp32.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"onnx-fp32\.onnx does not match its recorded sha256"):
        Pipeline.from_bundle(b, "onnx-fp32")
    # another artifact, untouched, still runs: only what is loaded must be intact
    pipe = Pipeline.from_bundle(tiny_bundle_copy, "openvino-fp32")
    assert pipe.artifact is not None and pipe.artifact.name == "openvino-fp32"


def test_a_modified_file_the_engine_loads_fine_is_still_refused(tiny_bundle_copy: Path) -> None:
    """A changed but valid model, which the engine would compile and run, is refused before it is loaded."""
    import onnx

    path = tiny_bundle_copy / "onnx-fp32.onnx"
    model = onnx.load(str(path))
    model.doc_string = "changed after export"
    onnx.save(model, str(path))
    from cvdeploy.runtimes import load_runtime

    assert load_runtime("onnxruntime", path).outputs  # the engine itself has nothing against it
    b = Bundle.open(tiny_bundle_copy)
    with pytest.raises(BundleError, match=r"onnx-fp32\.onnx does not match its recorded sha256"):
        b.load_runtime("onnx-fp32")
    assert "onnx-fp32" not in b._verified
