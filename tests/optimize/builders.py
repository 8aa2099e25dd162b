"""Small ONNX graphs built in code for the optimize tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def conv(name: str, x: str, w: str, y: str, pads: int = 0):
    from onnx import helper

    return helper.make_node("Conv", [x, w], [y], name=name, pads=[pads] * 4)


def planted_model(path: Path, outlier: float = 1000.0) -> Path:
    """A three-conv ONNX whose middle activation ``B`` has one channel ``outlier`` times larger than the rest.

    The next conv scales that channel back down, so the output is normal; a per-tensor INT8 scale
    for ``B`` rounds the seven ordinary channels to zero, and the output with them.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (8, 8, 1, 1)).astype(np.float32)
    w2[0] *= outlier
    w3 = rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32)
    w3[:, 0] /= outlier
    graph = helper.make_graph(
        [
            conv("conv1", "X", "W1", "A", pads=1),
            helper.make_node("Relu", ["A"], ["A2"], name="relu1"),
            conv("conv2", "A2", "W2", "B"),
            conv("conv3", "B", "W3", "Y"),
        ],
        "planted",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "W1"), (w2, "W2"), (w3, "W3"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def manifest_bytes(bundle: Path) -> bytes:
    return (bundle / "cvdeploy.yaml").read_bytes()
