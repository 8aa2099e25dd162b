"""Engines' compiled forms kept between processes (ONNX Runtime's optimized graph, OpenVINO's compiled
blob): keyed on the verified model, checked before every load, identical results, the precision read back,
rebuilt when damaged, off on request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bundle import Bundle
from cvdeploy.errors import BundleError
from cvdeploy.runtimes import RuntimeOptions, engine
from cvdeploy.runtimes.base import Runtime


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "engine-cache"
    monkeypatch.setenv("CVDEPLOY_ENGINE_CACHE", str(root))
    return root


def _entries(root: Path, suffix: str = ".onnx") -> list[Path]:
    return sorted(p for p in root.glob(f"*/*{suffix}") if not p.name.startswith("."))


def _tensor(b: Bundle) -> np.ndarray:
    from cvdeploy.images import sample_images
    from cvdeploy.preprocess import Preprocessor

    return Preprocessor(b.contract.input)(sample_images(2))[0]


def _images(n: int) -> list[np.ndarray]:
    from cvdeploy.images import sample_images

    return list(sample_images(n))


def _run(rt: Runtime, x: np.ndarray) -> list[np.ndarray]:
    return rt.run({rt.inputs[0].name: x})


def test_second_load_runs_the_cached_graph_with_identical_outputs(cache: Path) -> None:
    """On the trained zoo:n (real activations): the cached graph gives the same bits as a fresh build."""
    b = Bundle.load("zoo:n")
    x = _tensor(b)
    first = b.load_runtime("onnx-fp32")
    assert "optimized_graph" not in first.execution().settings
    [entry] = _entries(cache)
    again = Bundle.load("zoo:n").load_runtime("onnx-fp32")
    assert "optimized_graph" in again.execution().settings
    assert again.cached_graph == entry  # type: ignore[attr-defined]
    assert again.execution().precision == "fp32"
    want, got = _run(first, x), _run(again, x)
    assert want[0].max() > 0.5  # real detections, not a dead output
    for a, c in zip(want, got, strict=True):
        np.testing.assert_array_equal(c, a)
    # another thread count or spinning only schedules the graph: the same entry serves it
    Bundle.load("zoo:n").load_runtime("onnx-fp32", RuntimeOptions(threads=1, concurrency=4))
    assert _entries(cache) == [entry]


def test_a_changed_cache_entry_is_deleted_and_rebuilt(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = Bundle.load("zoo:n")
    x = _tensor(b)
    want = _run(b.load_runtime("onnx-fp32"), x)
    [entry] = _entries(cache)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight byte: still a loadable graph, no longer the one written
    entry.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="cvdeploy"):
        rt = Bundle.load("zoo:n").load_runtime("onnx-fp32")
    assert "does not match its sha256" in caplog.text
    assert "optimized_graph" not in rt.execution().settings  # built from the bundle again
    for a, c in zip(want, _run(rt, x), strict=True):
        np.testing.assert_array_equal(c, a)
    assert len(_entries(cache)) == 1 and _entries(cache)[0].read_bytes() != bytes(data)


def test_a_modified_bundle_is_refused_even_with_its_graph_cached(tiny_bundle_copy: Path, cache: Path) -> None:
    Bundle.load(tiny_bundle_copy).load_runtime("onnx-fp32")
    assert len(_entries(cache)) == 1
    model = tiny_bundle_copy / Bundle.load(tiny_bundle_copy).artifact("onnx-fp32").file
    data = bytearray(model.read_bytes())
    data[-10] ^= 0x01
    model.write_bytes(bytes(data))
    for opened in (Bundle.open, Bundle.load):  # hashed beside the cache check, or when the bundle is read
        with pytest.raises(BundleError, match="does not match its recorded sha256"):
            opened(tiny_bundle_copy).load_runtime("onnx-fp32")


def test_only_a_verified_file_is_cached_and_the_cache_can_be_turned_off(
    tiny_bundle_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = Bundle.load(tiny_bundle_path)
    engine("onnxruntime").load(b.file("onnx-fp32"))  # a path alone: nothing says what it should be
    assert not _entries(cache)
    monkeypatch.setenv("CVDEPLOY_ENGINE_CACHE", "0")
    b.load_runtime("onnx-fp32")
    b.load_runtime("openvino-fp32")
    assert not cache.exists()
    monkeypatch.setenv("CVDEPLOY_ENGINE_CACHE", str(cache))
    b.load_runtime("onnx-fp32")
    assert len(_entries(cache)) == 1


def test_an_unwritable_cache_is_skipped(
    tiny_bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CVDEPLOY_ENGINE_CACHE", str(blocker / "engines"))
    rt = Bundle.load(tiny_bundle_path).load_runtime("onnx-fp32")
    assert rt.execution().precision == "fp32"


def test_eviction_keeps_the_cache_in_size_least_recently_used_first(cache: Path) -> None:
    from cvdeploy.runtimes.compiled_cache import CompiledCache

    c = CompiledCache(cache, "onnxruntime", "0" * 64, {}, ".onnx")
    c.folder.mkdir(parents=True)
    old, new = c.folder / "a.onnx", c.folder / "b.onnx"
    old.write_bytes(b"x" * 600)
    new.write_bytes(b"y" * 600)
    os.utime(old, (1, 1))
    c.evict(max_bytes=1000)
    assert not old.exists() and new.exists()
    shutil.rmtree(c.folder)


@pytest.mark.parametrize("warm", [False, True], ids=["cache-empty", "cache-hit"])
def test_no_session_is_built_before_the_bundle_check_ends(
    tiny_bundle_path: Path, cache: Path, warm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundle hashes the model on a second thread while ONNX Runtime's runtime checks its cache entry;
    no session (on the model or on the entry) may be built before that hash has matched."""
    import threading
    import time

    import onnxruntime as ort

    if warm:
        Bundle.load(tiny_bundle_path).load_runtime("onnx-fp32")
    done = threading.Event()
    real_verify, real_session = Bundle.verify, ort.InferenceSession
    built: list[bool] = []

    def slow_verify(self: Bundle, name: str) -> None:
        time.sleep(0.2)  # a slow disk: the check ends well after the runtime has started
        real_verify(self, name)
        done.set()

    def session(*args: object, **kwargs: object) -> object:
        built.append(done.is_set())
        return real_session(*args, **kwargs)

    monkeypatch.setattr(Bundle, "verify", slow_verify)
    monkeypatch.setattr(ort, "InferenceSession", session)
    rt = Bundle.open(tiny_bundle_path).load_runtime("onnx-fp32")  # the cold-start path: hashed at load
    assert built == [True]
    assert ("optimized_graph" in rt.execution().settings) is warm
    assert "verified" not in rt.options.extra


@pytest.mark.parametrize("warm", [False, True], ids=["cache-empty", "cache-hit"])
def test_openvino_reads_nothing_before_the_bundle_check_ends(
    tiny_bundle_path: Path, cache: Path, warm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for OpenVINO: neither the IR nor a cached blob is read before the bundle's hashes match."""
    import threading
    import time

    import openvino as ov

    if warm:
        Bundle.load(tiny_bundle_path).load_runtime("openvino-fp32")
    done = threading.Event()
    real_verify = Bundle.verify
    read: list[tuple[str, bool]] = []

    def slow_verify(self: Bundle, name: str) -> None:
        time.sleep(0.2)
        real_verify(self, name)
        done.set()

    def spy(method: str) -> object:
        real = getattr(ov.Core, method)

        def call(self: object, *args: object, **kwargs: object) -> object:
            read.append((method, done.is_set()))
            return real(self, *args, **kwargs)

        return call

    monkeypatch.setattr(Bundle, "verify", slow_verify)
    for method in ("read_model", "import_model"):
        monkeypatch.setattr(ov.Core, method, spy(method))
    rt = Bundle.open(tiny_bundle_path).load_runtime("openvino-fp32")
    assert read == [("import_model" if warm else "read_model", True)]
    assert (rt.cached_graph is not None) is warm  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_cache_folder_others_can_write_is_not_used(
    tiny_bundle_path: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared folder (CVDEPLOY_CACHE on /tmp, say) could be planted with a graph: refused, loudly."""
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    with caplog.at_level("WARNING", logger="cvdeploy"):
        rt = Bundle.load(tiny_bundle_path).load_runtime("onnx-fp32")
    assert "writable by others" in caplog.text
    assert rt.execution().precision == "fp32" and not any(cache.iterdir())


# ---- OpenVINO's compiled blob ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_openvino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained zoo:n in OpenVINO, FP32 and NNCF INT8 (real activations: the artifact users run)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.images import sample_images
    from cvdeploy.optimize import quantize_int8

    root = tmp_path_factory.mktemp("zoo-ov")
    calib = root / "calib"
    calib.mkdir()
    import cv2

    for i, img in enumerate(sample_images(8)):
        cv2.imwrite(str(calib / f"{i}.jpg"), img)
    out = root / "n.cvd"
    export("zoo:n", out, ExportOptions(formats=("openvino",), dynamic_batch=True, parity_count=2))
    quantize_int8(out, calib, runtime="openvino")
    return out


@pytest.mark.parametrize("artifact", ["openvino-fp32", "openvino-int8"])
def test_openvino_imports_its_verified_blob_with_identical_outputs(
    zoo_openvino: Path, cache: Path, artifact: str
) -> None:
    b = Bundle.open(zoo_openvino)
    x = _tensor(b)
    first = b.load_runtime(artifact)
    assert "compiled_blob" not in first.execution().settings
    [entry] = _entries(cache, ".blob")
    again = Bundle.open(zoo_openvino).load_runtime(artifact)
    assert again.cached_graph == entry  # type: ignore[attr-defined]
    assert "compiled_blob" in again.execution().settings
    # the precision is read back from the imported model, as from a compiled one
    assert again.execution().precision == first.execution().precision == artifact.split("-")[1]
    assert again.execution().evidence == first.execution().evidence
    want, got = _run(first, x), _run(again, x)
    assert want[0][:, 4:].max() > 0.5  # real detections
    for a, c in zip(want, got, strict=True):
        np.testing.assert_array_equal(c, a)


@pytest.mark.parametrize("artifact", ["openvino-fp32", "openvino-int8"])
def test_openvino_compiles_a_dynamic_batch_for_one_image_when_told(
    zoo_openvino: Path, cache: Path, artifact: str
) -> None:
    """``RuntimeOptions(batch=1)`` (predict --batch 1, bench at batch 1): OpenVINO compiles the dynamic-batch
    IR for batch 1 (a static shape runs faster), says so, keeps its own cache entry, runs the precision asked
    for and gives the dynamic model's results; a pipeline runs a larger batch one image after another."""
    from cvdeploy.parity import detection_agreement
    from cvdeploy.pipeline import Pipeline

    b = Bundle.open(zoo_openvino)
    x = _tensor(b)
    dyn = b.load_runtime(artifact)
    one = b.load_runtime(artifact, RuntimeOptions(batch=1))
    assert dyn.inputs[0].static_batch is None and one.inputs[0].static_batch == 1
    assert (
        "batch" not in dyn.execution().settings and "one image per call" in one.execution().settings["batch"]
    )
    assert one.execution().precision == dyn.execution().precision == artifact.split("-")[1]
    assert len(_entries(cache, ".blob")) == 2  # the batch-1 form is its own entry, not the dynamic one's
    assert _run(dyn, x)[0][:, 4:].max() > 0.5  # real detections in these images
    for row in range(len(x)):
        want, got = _run(dyn, x[row : row + 1]), _run(one, x[row : row + 1])
        for a, c in zip(want, got, strict=True):
            assert c.shape == a.shape
            np.testing.assert_allclose(c, a, rtol=0, atol=1e-3 * float(np.abs(a).max()))
    again = Bundle.open(zoo_openvino).load_runtime(artifact, RuntimeOptions(batch=1))
    assert again.cached_graph is not None and again.inputs[0].static_batch == 1  # type: ignore[attr-defined]
    images = _images(3)
    batched = Pipeline.from_bundle(b, artifact).predict(images)
    single = Pipeline.from_bundle(b, artifact, RuntimeOptions(batch=1))
    assert single.static_batch == 1
    assert detection_agreement(batched, single.predict(images)) == 1.0


def test_onnxruntime_ignores_the_one_image_batch(tiny_bundle_path: Path, cache: Path) -> None:
    rt = Bundle.open(tiny_bundle_path).load_runtime("onnx-fp32", RuntimeOptions(batch=1))
    assert rt.inputs[0].static_batch is None and "batch" not in rt.execution().settings


def test_openvino_config_is_part_of_the_key_and_a_damaged_blob_is_recompiled(
    zoo_openvino: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = Bundle.open(zoo_openvino)
    b.load_runtime("openvino-fp32")
    b.load_runtime("openvino-fp32", RuntimeOptions(concurrency=4))  # THROUGHPUT: another compiled model
    entries = _entries(cache, ".blob")
    assert len(entries) == 2 and entries[0].parent != entries[1].parent
    for entry in entries:
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="cvdeploy"):
        rt = Bundle.open(zoo_openvino).load_runtime("openvino-fp32")
    assert "does not match its sha256" in caplog.text
    assert rt.cached_graph is None and rt.execution().precision == "fp32"  # type: ignore[attr-defined]


def test_no_home_directory_means_no_cache_not_a_failure(
    tiny_bundle_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container running as a user without a passwd entry or $HOME: loading still works."""
    for var in ("CVDEPLOY_ENGINE_CACHE", "CVDEPLOY_CACHE", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(var, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    rt = Bundle.open(tiny_bundle_path).load_runtime("onnx-fp32")
    assert rt.cached_graph is None and rt.execution().precision == "fp32"  # type: ignore[attr-defined]


def test_a_tilde_in_the_cache_setting_means_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CVDEPLOY_ENGINE_CACHE=~/cache`` from an env file no shell expanded: not a folder named "~"."""
    from cvdeploy.runtimes.compiled_cache import cache_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CVDEPLOY_ENGINE_CACHE", "~/engine-cache")
    assert cache_root() == tmp_path / "engine-cache"
