"""Known faults planted into a copy of a deployment, to show that ``doctor`` names them.

The test suite and ``benchmarks/doctor.py`` plant each fault the finding ids describe and check
that it comes out as the top finding. Each helper writes what a faulty deployment would leave
behind — its results, its input tensors, its model file, its images, its manifest — in the formats
``doctor`` reads; nothing here is used by ``doctor`` itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from cvdeploy.bundle import Bundle
from cvdeploy.contract import Contract
from cvdeploy.decode import Decoder
from cvdeploy.images import read_image
from cvdeploy.preprocess import Preprocessor
from cvdeploy.results import Detections, Result
from cvdeploy.runtimes import Runtime

RunFn = Callable[[np.ndarray], list[np.ndarray]]


def deviant(contract: Contract, **changes: Any) -> Contract:
    """A copy of ``contract`` with input settings changed (``color="BGR"``, ``pad_value=0`` …)."""
    c = contract.model_copy(deep=True)
    for k, v in changes.items():
        setattr(c.input, k, v)
    return c


def results(run: RunFn, contract: Contract, images: Sequence[Path], output_names: Sequence[str] = ()) -> dict[str, Result]:  # fmt: skip
    """What a deployment preprocessing as ``contract`` says and running ``run`` returns, per image stem."""
    pre, dec = Preprocessor(contract.input), Decoder(contract, list(output_names))
    out: dict[str, Result] = {}
    for p in images:
        tensor, geoms = pre([read_image(p)])
        out[p.stem] = dec(run(tensor), geoms)[0]
    return out


def write_predict_json(found: dict[str, Result], images: Sequence[Path], path: Path) -> Path:
    """``cvdeploy predict --json`` output for ``found``."""
    docs = [{"image": str(p), "detections": found[p.stem].to_list()} for p in images if p.stem in found]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(docs), encoding="utf-8")
    return path


def write_save_txt(found: dict[str, Result], images: Sequence[Path], folder: Path, conf: bool = True) -> Path:
    """Ultralytics ``save_txt`` files (``class cx cy w h [conf]``, normalised; none for an empty image)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in images:
        res = found[p.stem]
        if not isinstance(res, Detections) or not len(res):
            continue
        h, w = read_image(p).shape[:2]
        lines = []
        for (x1, y1, x2, y2), c, k in zip(res.xyxy.tolist(), res.confidence.tolist(), res.class_id.tolist(), strict=True):
            row = f"{k} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            lines.append(row + (f" {c:.6f}" if conf else ""))
        (folder / f"{p.stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def permute_classes(found: dict[str, Result], mapping: dict[int, int]) -> dict[str, Result]:
    """The same detections with class ids renamed through ``mapping`` (others unchanged)."""
    out: dict[str, Result] = {}
    for stem, r in found.items():
        if isinstance(r, Detections):
            ids = np.asarray([mapping.get(int(k), int(k)) for k in r.class_id], np.int64)
            r = Detections(r.xyxy, r.confidence, ids, r.class_names)
        out[stem] = r
    return out


def write_tensors(contract: Contract, images: Sequence[Path], folder: Path, nonfinite: bool = False) -> Path:
    """The tensors a deployment preprocessing as ``contract`` feeds its model, one ``.npy`` per image."""
    folder.mkdir(parents=True, exist_ok=True)
    pre = Preprocessor(contract.input)
    for k, p in enumerate(images):
        t, _ = pre([read_image(p)])
        if nonfinite and k % 2 == 0:
            t = t.copy()
            t[..., :4, :] = np.nan  # a normalisation that divided by zero on the top rows
        np.save(folder / f"{p.stem}.npy", t)
    return folder


def edit_onnx(src: Path, dst: Path, mode: str = "scale", factor: float = 1.5, position: float = 0.5) -> str:
    """Copy an ONNX model with one convolution's weights changed; returns the changed initializer's name.

    ``mode``: ``"scale"`` multiplies the weights by ``factor`` (a corrupted or wrong checkpoint);
    ``"nan"`` puts NaN into them (a broken conversion). ``position`` picks the convolution (0 first, 1 last).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits]
    node = convs[min(len(convs) - 1, int(position * len(convs)))]
    init = inits[node.input[1]]
    w = numpy_helper.to_array(init).copy()
    if mode == "nan":
        w.reshape(-1)[:: max(1, w.size // 8)] = np.nan
    else:
        w *= factor
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst))
    return init.name


def shift_images(images: Sequence[Path], folder: Path, brightness: float = 0.35, blur: int = 0, quality: int = 90) -> list[Path]:  # fmt: skip
    """Darker (``brightness`` × every pixel), optionally blurred copies: what a new camera or night shift sends."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in images:
        img = read_image(p).astype(np.float32) * brightness
        if blur:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        dst = folder / (p.stem + ".jpg")
        cv2.imwrite(str(dst), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(dst)
    return out


def relabel(data_yaml: Path, out_dir: Path, mapping: dict[int, int]) -> Path:
    """A copy of a YOLO dataset whose label files write class ids through ``mapping`` (names unchanged)."""
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(data.get("path") or data_yaml.parent)
    dst = out_dir.resolve()
    for sub in ("images", "labels"):
        if (root / sub).is_dir():
            shutil.copytree(root / sub, dst / sub, dirs_exist_ok=True)
    for f in (dst / "labels").rglob("*.txt"):
        rows = []
        for line in f.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if parts:
                parts[0] = str(mapping.get(int(parts[0]), int(parts[0])))
                rows.append(" ".join(parts))
        f.write_text("\n".join(rows) + ("\n" if rows else ""), encoding="utf-8")
    data["path"] = str(dst)
    out = dst / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def copy_bundle(src: Bundle | str | Path, dst: Path) -> Bundle:
    """A private copy of a bundle (``zoo:n`` included) that a plant may change."""
    b = src if isinstance(src, Bundle) else Bundle.load(src)
    shutil.copytree(b.path, dst)
    return Bundle.load(dst)


def record_environment(bundle: Bundle, precision: str = "bf16", **libraries: str) -> Bundle:
    """Pretend the default artifact was validated executing ``precision``, with other library versions."""
    art = bundle.artifact()
    art.execution = {**(art.execution or {}), "precision": precision,
                     "evidence": "INFERENCE_PRECISION_HINT left at the CPU plugin's default"}  # fmt: skip
    libs = bundle.manifest.provenance.environment.setdefault("libraries", {})
    libs.update(libraries)
    bundle.save()
    return bundle


class SlowStart(Runtime):
    """A runtime whose first ``runs`` inferences take ``seconds`` longer (a lazily compiled engine)."""

    def __init__(self, inner: Runtime, seconds: float = 1.0, runs: int = 1) -> None:
        super().__init__(inner.path, inner.options)
        self.inner, self.seconds, self.left = inner, seconds, runs
        self.name = inner.name

    @property
    def inputs(self) -> Any:
        return self.inner.inputs

    @property
    def outputs(self) -> Any:
        return self.inner.outputs

    @property
    def device_used(self) -> str:
        return self.inner.device_used

    def execution(self) -> Any:
        return self.inner.execution()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.left > 0:
            import time

            self.left -= 1
            time.sleep(self.seconds)
        return self.inner.run(feeds)
