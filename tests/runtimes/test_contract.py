"""The contract every runtime must pass: load, run, pinned precision, threads, profile, per-thread copies.

Parametrized over every engine in the registry that is installed here, so a new engine gets the same
checks by adding its declaration (and, for a new file format, one line in ``_artifact`` below).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from cvdeploy import env
from cvdeploy.bundle import Bundle
from cvdeploy.errors import ConfigError, ModelError
from cvdeploy.export import batches
from cvdeploy.runtimes import ENGINES, RuntimeOptions, engine, load_runtime

INSTALLED = [name for name, e in ENGINES.items() if e.available()]


@pytest.fixture(scope="module")
def tensor(tiny_bundle_path: Path, photos: list[np.ndarray]) -> np.ndarray:
    """Two real photographs through the bundle's preprocessing, ``(2, 3, 320, 320)``."""
    b = Bundle.load(tiny_bundle_path)
    (t,), _ = batches(b.contract, photos[:2], 2)
    return t


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from cvdeploy.zoo.model import build_n

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.trace(build_n().eval(), torch.zeros(1, 3, 320, 320)).save(str(path))
    return path


def _artifact(name: str, tiny_bundle_path: Path, torchscript_file: Path | None) -> Path:
    b = Bundle.load(tiny_bundle_path)
    if name == "torch":
        assert torchscript_file is not None
        return torchscript_file
    if name == "tensorrt":  # a GPU engine: built from the tiny bundle's ONNX on this GPU
        from cvdeploy.runtimes.tensorrt import build_engine, gpu_missing

        if reason := gpu_missing():
            pytest.skip(reason)
        path = tiny_bundle_path.parent / "tensorrt-fp32.engine"
        if not path.is_file():
            build_engine(b.file("onnx-fp32"), path, "fp32")
        return path
    if name == "litert":  # a converter cannot share this environment: LiteRT's own schema writes the model
        from .tflite_builder import build

        path = tiny_bundle_path.parent / "litert-fp32.tflite"
        return path if path.is_file() else build(path, 320, 320, len(b.contract.classes))
    return b.file(f"{engine(name).prefix}-fp32")


@pytest.fixture(params=INSTALLED)
def artifact(request: pytest.FixtureRequest, tiny_bundle_path: Path) -> tuple[str, Path]:
    name = request.param
    ts = request.getfixturevalue("torchscript_file") if name == "torch" else None
    return name, _artifact(name, tiny_bundle_path, ts)


def test_every_engine_declares_what_the_rest_of_cvdeploy_reads() -> None:
    prefixes = [e.prefix for e in ENGINES.values()]
    assert len(set(prefixes)) == len(prefixes)
    for e in ENGINES.values():
        assert engine(e.name) is e and engine(e.prefix) is e
        assert all(engine(a) is e for a in e.aliases)
        assert "fp32" in e.precisions
        assert e.triton_platform and e.triton_backend and e.suffix.startswith(".")
        assert e.files(f"x/model{e.suffix}")[0] == f"x/model{e.suffix}"
        assert e.unsupported("int4") is not None  # a precision no engine declares is refused with a reason
    assert ENGINES["openvino"].files("openvino-fp32/model.xml") == [
        "openvino-fp32/model.xml",
        "openvino-fp32/model.bin",
    ]
    with pytest.raises(ConfigError, match="unknown runtime 'tensorflow'"):
        engine("tensorflow")


def test_load_and_run_at_pinned_fp32_with_the_requested_threads(
    artifact: tuple[str, Path], tensor: np.ndarray
) -> None:
    name, path = artifact
    rt = load_runtime(name, path, RuntimeOptions(precision="fp32", threads=1))
    outs = rt.run({rt.inputs[0].name: tensor})
    assert outs and outs[0].shape[0] == 2 and np.isfinite(outs[0]).all()
    ex = rt.execution()
    assert ex.precision == "fp32", ex.evidence
    assert ex.threads == 1 or (name == "tensorrt" and ex.threads is None)  # a GPU engine uses no CPU threads
    assert rt.describe()["precision"] == "fp32"


def test_default_threads_are_the_cpus_this_process_may_use(artifact: tuple[str, Path]) -> None:
    name, path = artifact
    if name == "torch":
        pytest.skip("the torch reference keeps the process-wide torch thread setting unless told")
    if name == "tensorrt":
        pytest.skip("a GPU engine has no intra-op CPU thread pool to size")
    assert load_runtime(name, path).execution().threads == env.available_cpus()


def test_spinning_is_off_when_several_requests_run_at_once(artifact: tuple[str, Path]) -> None:
    name, path = artifact
    assert RuntimeOptions(concurrency=4).resolved_spinning() is False
    assert RuntimeOptions(concurrency=1).resolved_spinning() is True
    ex = load_runtime(name, path, RuntimeOptions(concurrency=4)).execution()
    assert ex.spinning in (False, None)  # None: the engine has no spin control (recorded as such)


def test_per_thread_copies_give_the_same_outputs(artifact: tuple[str, Path], tensor: np.ndarray) -> None:
    name, path = artifact
    rt = load_runtime(name, path, RuntimeOptions(threads=1, concurrency=4))
    feed = {rt.inputs[0].name: tensor}
    expected = rt.run(feed)[0]
    got: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            copy = rt.thread_copy()
            for _ in range(3):
                got.append(copy.run({k: v.copy() for k, v in feed.items()})[0])
        except BaseException as exc:  # reported below; a thread's exception would be lost otherwise
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == 12
    for g in got:
        np.testing.assert_array_equal(g, expected)


def test_operator_profile_or_a_clear_refusal(artifact: tuple[str, Path], tensor: np.ndarray) -> None:
    name, path = artifact
    rt = load_runtime(name, path, RuntimeOptions(threads=1, profile=True))
    for _ in range(3):
        rt.run({rt.inputs[0].name: tensor})
    if engine(name).profiler is None:
        with pytest.raises(ModelError, match="no operator profiler"):
            rt.profile_runs()
        return
    runs = rt.profile_runs()
    assert len(runs) == 3
    for run in runs:
        assert run, "every inference has operator timings"
        assert all(isinstance(n, str) and isinstance(t, str) and us >= 0 for n, t, us, _ in run)
        assert any(t in ("Conv", "Convolution") for _, t, _, _ in run)


def test_input_dims_are_read_without_compiling(artifact: tuple[str, Path]) -> None:
    name, path = artifact
    dims = engine(name).input_dims(path)
    if name in ("torch", "tensorrt"):
        assert dims is None  # TorchScript does not state its input; an engine needs its GPU to be read
        return
    assert dims is not None and tuple(dims[1:]) == (3, 320, 320)
