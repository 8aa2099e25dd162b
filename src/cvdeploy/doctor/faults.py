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
from cvdeploy.doctor.deployment import Deployment, open_deployment
from cvdeploy.doctor.run import Doctor, DoctorOptions
from cvdeploy.doctor.timing import SpeedSettings, load_deployed
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


def results(run: RunFn, contract: Contract, images: Sequence[Path], output_names: Sequence[str] = (),
            decode: Callable[[Path], np.ndarray] = read_image) -> dict[str, Result]:  # fmt: skip
    """What a deployment decoding images with ``decode``, preprocessing as ``contract`` says and running
    ``run`` returns, per image stem."""
    pre, dec = Preprocessor(contract.input), Decoder(contract, list(output_names))
    out: dict[str, Result] = {}
    for p in images:
        tensor, geoms = pre([decode(p)])
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
        for (x1, y1, x2, y2), c, k in zip(
            res.xyxy.tolist(), res.confidence.tolist(), res.class_id.tolist(), strict=True
        ):
            row = (
                f"{k} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
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


def tag_orientation(images: Sequence[Path], folder: Path, orientation: int = 6) -> list[Path]:
    """Copies whose pixels are unchanged but whose EXIF says to rotate them (6: 90° clockwise), as phones write."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in images:
        with Image.open(p) as im:
            exif = im.getexif()
            exif[0x0112] = orientation
            dst = folder / (p.stem + ".jpg")
            im.convert("RGB").save(dst, quality=95, exif=exif)
        out.append(dst)
    return out


def shift_images(images: Sequence[Path], folder: Path, brightness: float = 0.35, blur: int = 0, quality: int = 90) -> list[Path]:  # fmt: skip
    """Darker (``brightness`` × every pixel), optionally blurred copies: what a new camera or night shift sends."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in images:
        img: np.ndarray = read_image(p).astype(np.float32) * brightness
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


# ---- the catalogue: one plant per finding id ---------------------------------------------------------

#: zoo classes rotated in two cycles: circle→square→triangle→circle, star→cross→ring→star
ZOO_PERMUTATION = {0: 1, 1: 2, 2: 0, 3: 4, 4: 5, 5: 3}


class Planter:
    """Plants each fault of :data:`cvdeploy.doctor.findings.FINDINGS` into a deployment of ``doctor``'s bundle.

    ``plant(finding_id)`` returns the Doctor to run (the same one, or one on changed images or a changed
    bundle copy) and the options that carry the evidence a faulty deployment leaves behind.
    ``tensors=True`` plants preprocessing faults in the input tensors instead of the results (for a
    model whose detections mean nothing); ``drift_images`` are the known-good images the data-drift
    plant darkens and blurs (a two-sample test needs more than a handful); ``bigger`` builds a
    bundle that deploys a bigger model while holding a smaller one as accurate (``speed.model_size``);
    ``seed`` is that of the fresh images with large objects the ``speed.input_size`` plant generates.
    """

    def __init__(self, doctor: Doctor, workdir: Path, drift_images: Sequence[Path] | None = None, tensors: bool = False,
                 speed: dict[str, Any] | None = None, bigger: Callable[[Path], Bundle] | None = None,
                 data_yaml: Path | None = None, seed: int = 9191, sample: int = 8) -> None:  # fmt: skip
        self.doctor = doctor
        self.tmp = workdir
        self.drift_images = list(drift_images or doctor.images.paths)
        self.tensors = tensors
        self.speed = speed or {"runs": 6, "warmup": 2, "images": 3}
        self.bigger = bigger or zoo_with_smaller_model
        self.data_yaml = data_yaml
        self.seed = seed  # of the images a plant generates (speed.input_size)
        self.sample = sample  # images whose every stage is captured (DoctorOptions.sample)

    # -- helpers
    def _dep(self) -> Deployment:
        return open_deployment(self.doctor.bundle)

    def _dir(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def observed(
        self, run: RunFn | None = None, mapping: dict[int, int] | None = None, **changes: Any
    ) -> Path:
        dep = self._dep()
        found = results(run or dep.run, deviant(self.doctor.bundle.contract, **changes), self.doctor.images.paths,
                        [o.name for o in dep.runtime.outputs])  # fmt: skip
        if mapping:
            found = permute_classes(found, mapping)
        return write_predict_json(found, self.doctor.images.paths, self._dir("observed") / "observed.json")

    def _preprocess(self, **changes: Any) -> tuple[Doctor, DoctorOptions]:
        if self.tensors:
            return self.doctor, DoctorOptions(inputs=write_tensors(deviant(self.doctor.bundle.contract, **changes),
                                                                   self.doctor.images.paths, self._dir("tensors")))  # fmt: skip
        run = None
        if "height" in changes:
            rm = self.doctor.workspace.resizable(self._dep())
            if rm is None:
                raise ValueError("this deployment cannot run other input sizes; plant input_size in tensors")
            run = rm.run
        return self.doctor, DoctorOptions(observed=self.observed(run, **changes))

    def _speed(self, doctor: Doctor | None = None, **settings: Any) -> tuple[Doctor, DoctorOptions]:
        return doctor or self.doctor, DoctorOptions(speed=SpeedSettings(**{**self.speed, **settings}))

    # -- the plants
    def plant(self, finding: str) -> tuple[Doctor, DoctorOptions]:
        """The Doctor and options of a deployment with the fault ``finding`` planted."""
        spec = self.doctor.bundle.contract.input
        half = max(spec.stride, (spec.height * 3 // 4) // spec.stride * spec.stride)
        simple: dict[str, Callable[[], tuple[Doctor, DoctorOptions]]] = {
            "preprocess.channel_order": lambda: self._preprocess(
                color="BGR" if spec.color == "RGB" else "RGB"
            ),
            "preprocess.resize": lambda: self._preprocess(
                resize="stretch" if spec.resize != "stretch" else "letterbox"
            ),
            "preprocess.normalization": lambda: (
                self._preprocess(scale=1.0)
                if self.tensors
                else self._preprocess(scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
            ),
            "preprocess.pad_value": lambda: self._preprocess(pad_value=0 if spec.pad_value else 114),
            "preprocess.input_size": lambda: self._preprocess(height=half, width=half),
            "data.drift": self._drift,
            "labels.class_mapping": self._class_mapping,
            "conversion.divergence": lambda: (self.doctor, DoctorOptions(model=self._model("scale"))),
            "env.mismatch": self._env,
            "numerics.nonfinite": lambda: (self.doctor, DoctorOptions(model=self._model("nan"))),
            "speed.warmup": self._slow_start,
            "speed.threads": lambda: self._speed(threads=4 * _cpus()),
            "speed.precision": self._fp16,
            "speed.provider_fallback": lambda: self._speed(device="cuda"),
            "speed.preprocessing": self._big_uploads,
            "speed.input_size": self._close_ups,
            "speed.model_size": lambda: self._speed(self._doctor_on(self.bigger(self.tmp / "bigger.cvd"))),
            "speed.concurrency": lambda: self._speed(concurrency=4, spinning=True),
        }
        doctor, options = simple[finding]()
        options.sample = self.sample
        return doctor, options

    def clean(self, data_yaml: Path | None = None, speed: bool = True) -> DoctorOptions:
        """Options of a correct deployment: its results, tensors and the true labels (and --speed)."""
        dep = self._dep()
        found = results(
            dep.run,
            self.doctor.bundle.contract,
            self.doctor.images.paths,
            [o.name for o in dep.runtime.outputs],
        )
        return DoctorOptions(
            observed=write_predict_json(
                found, self.doctor.images.paths, self._dir("clean") / "observed.json"
            ),
            inputs=write_tensors(
                self.doctor.bundle.contract, self.doctor.images.paths, self._dir("clean-tensors")
            ),
            labels=data_yaml or self.data_yaml,
            speed=SpeedSettings(**self.speed) if speed else None,
        )

    def _doctor_on(self, bundle: Bundle | Path, images: Sequence[Path] | None = None) -> Doctor:
        return Doctor(bundle, images or self.doctor.images.paths)

    def _model(self, mode: str) -> Path:
        dst = self._dir("model") / f"deployed-{mode}.onnx"
        edit_onnx(self.doctor.bundle.file(self.doctor.bundle.artifact()), dst, mode=mode)
        return dst

    def _env(self) -> tuple[Doctor, DoctorOptions]:
        b = copy_bundle(self.doctor.bundle, self.tmp / "env.cvd")
        record_environment(b, "bf16", onnxruntime="1.16.3")
        return self._doctor_on(b), DoctorOptions()

    def _drift(self) -> tuple[Doctor, DoctorOptions]:
        from cvdeploy.pipeline import Pipeline
        from cvdeploy.profile import build_profile, load_profile

        bundle = self.doctor.bundle
        if load_profile(bundle.path, bundle.manifest.reference_profile) is None:
            # no profile yet: give the bundle one built from known-good images first
            bundle = copy_bundle(bundle, self.tmp / "profiled.cvd")
            doc = build_profile(Pipeline.from_bundle(bundle), self.drift_images)
            (bundle.path / "profile.json").write_text(json.dumps(doc))
            bundle.manifest.reference_profile = "profile.json"
            bundle.save()
        shifted = shift_images(self.drift_images, self._dir("night"), brightness=0.3, blur=3)
        return self._doctor_on(bundle, shifted), DoctorOptions()

    def _class_mapping(self) -> tuple[Doctor, DoctorOptions]:
        n = len(self.doctor.bundle.contract.classes)
        if self.data_yaml is not None and not self.tensors:  # labels written with another class order
            mapping = ZOO_PERMUTATION if n == 6 else {k: (k + 1) % n for k in range(n)}
            return self.doctor, DoctorOptions(
                labels=relabel(self.data_yaml, self._dir("relabelled"), mapping)
            )
        return self.doctor, DoctorOptions(observed=self.observed(mapping={k: (k + 1) % n for k in range(n)}))

    def _slow_start(self) -> tuple[Doctor, DoctorOptions]:
        dep = self._dep()

        def load(options: Any) -> Any:
            pipe = load_deployed(dep, options)
            pipe.runtime = SlowStart(pipe.runtime, seconds=1.5)
            return pipe

        return self._speed(loader=load)

    def _fp16(self) -> tuple[Doctor, DoctorOptions]:
        from cvdeploy.optimize.fp16 import convert_fp16

        dst = self._dir("model") / "fp16.onnx"
        convert_fp16(self.doctor.bundle.file(self.doctor.bundle.artifact()), dst)
        return self.doctor, DoctorOptions(model=dst, speed=SpeedSettings(**self.speed))

    def _big_uploads(self) -> tuple[Doctor, DoctorOptions]:
        out = self._dir("uploads")
        for p in self.doctor.images.paths[:3]:
            img = cv2.resize(read_image(p), (4000, 3000), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(out / f"{p.stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        return self._speed(self._doctor_on(self.doctor.bundle, sorted(out.glob("*.jpg"))))

    def _close_ups(self) -> tuple[Doctor, DoctorOptions]:
        """Fresh images whose objects are all at least 10 % of the image side, and a reference profile that agrees."""
        from cvdeploy.pipeline import Pipeline
        from cvdeploy.profile import build_profile

        data = shapes_dataset(
            self.tmp / "large-objects", self.seed, max(20, len(self.drift_images)), min_object=0.1
        )
        images = sorted((data.parent / "images" / "val").glob("*.jpg"))
        bundle = copy_bundle(self.doctor.bundle, self.tmp / "closeups.cvd")
        (bundle.path / "profile.json").write_text(
            json.dumps(build_profile(Pipeline.from_bundle(bundle), images))
        )
        bundle.manifest.reference_profile = "profile.json"
        bundle.save()
        return self._speed(self._doctor_on(bundle, images))


def _cpus() -> int:
    from cvdeploy import env

    return env.available_cpus()


def zoo_with_smaller_model(dst: Path) -> Bundle:
    """zoo:s deployed while its bundle also holds zoo:n's model, recorded as more accurate (both real records)."""
    from cvdeploy.bundle import Artifact

    small = Bundle.load("zoo:n")
    b = copy_bundle("zoo:s", dst)
    (b.path / "onnx-fp32-n.onnx").write_bytes(small.file(small.artifact()).read_bytes())
    b.add_artifact(Artifact(name="onnx-fp32-n", file="onnx-fp32-n.onnx", runtime="onnxruntime", dynamic_batch=True,
                            metrics=dict(small.artifact().metrics)))  # fmt: skip
    return b


def shapes_dataset(root: Path, seed: int, images: int, min_object: float | None = None) -> Path:
    """A YOLO dataset of generated shapes, every image squashed to 640x480 or 480x640 (so letterbox pads).

    YOLO labels are normalised, so they stay valid under the resize. ``min_object``: the smallest object
    side as a fraction of the image side (the generator's default is 0.025). Returns the ``data.yaml``.
    """
    from cvdeploy.zoo import dataset as generator

    default = generator._MIN_FRAC
    generator._MIN_FRAC = (
        min_object or default
    )  # generated in this process (workers=1), so the change applies
    try:
        data = generator.generate_dataset(
            root, images=images, seed=seed, splits=(0, 1, 0), progress=False, workers=1
        )
    finally:
        generator._MIN_FRAC = default
    for k, f in enumerate(sorted((root / "images" / "val").glob("*.jpg"))):
        img = read_image(f)
        size = (640, 480) if k % 2 == 0 else (480, 640)
        cv2.imwrite(
            str(f), cv2.resize(img, size, interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
    return data
