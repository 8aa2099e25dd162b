"""Sweeps: which artifacts to run, every configuration to measure, and how to load each one.

runtime × artifact/precision × image size × batch × threads × concurrency. An image size the
artifact cannot take (a fixed input shape) is re-exported from the bundle's PyTorch source when it
has one, or skipped with the reason; an impossible batch is refused before anything runs.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cvdeploy.bench.config import BenchConfig, BenchSettings
from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import BundleError, ConfigError, CvdeployError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions

log = logging.getLogger("cvdeploy")

Dims = tuple[int | None, ...]


def select_artifacts(
    bundle: Bundle, artifacts: list[str] | None = None, runtimes: list[str] | None = None
) -> list[Artifact]:
    """The artifacts to benchmark: those named, those of the given runtimes, or all of them.

    A runtime with no artifact in the bundle is an error that lists what the bundle has.
    """
    have = bundle.manifest.artifacts
    if not have:
        raise BundleError(f"bundle {bundle.name!r} has no artifacts to benchmark; export one first")
    listing = ", ".join(f"{a.name} ({a.runtime})" for a in have)
    chosen = [bundle.artifact(name) for name in artifacts] if artifacts else list(have)
    if runtimes:
        for rt in runtimes:
            if not any(a.runtime == rt for a in have):
                raise ConfigError(
                    f"bundle {bundle.name!r} has no artifact for runtime {rt!r}; it has: {listing}"
                )
        wrong = [a.name for a in chosen if a.runtime not in runtimes]
        if artifacts and wrong:
            raise ConfigError(
                f"artifact(s) {', '.join(wrong)} do not run on {', '.join(runtimes)}; "
                f"the bundle has: {listing}"
            )
        chosen = [a for a in chosen if a.runtime in runtimes]
    seen: set[str] = set()
    return [a for a in chosen if not (a.name in seen or seen.add(a.name))]  # type: ignore[func-returns-value]


def input_dims(path: Path, runtime: str) -> Dims | None:
    """The model input's dimensions without compiling it (``None`` where a dimension is dynamic).

    Returns ``None`` when the shape cannot be read cheaply (then loading the model will tell).
    """
    from cvdeploy.runtimes.registry import engine

    return engine(runtime).input_dims(path)


def check_batches(bundle: Bundle, arts: list[Artifact], batches: list[int]) -> None:
    """Refuse a batch size that an artifact with a fixed batch cannot run, before measuring anything."""
    for art in arts:
        if art.dynamic_batch:
            continue
        dims = input_dims(bundle.file(art), art.runtime)
        fixed = dims[0] if dims else None
        if fixed is None:
            continue
        bad = [b for b in batches if b != fixed]
        if bad:
            raise ConfigError(
                f"artifact {art.name} has a fixed batch of {fixed}, so --batch {bad[0]} is impossible; "
                f"use --batch {fixed} or re-export with 'cvdeploy export --dynamic-batch'"
            )


def enumerate_configs(bundle: Bundle, arts: list[Artifact], settings: BenchSettings) -> list[BenchConfig]:
    """Every configuration of the sweep, artifact-major, in a stable order."""
    spec = bundle.contract.input
    sizes = settings.imgsz or [(spec.height, spec.width)]
    configs = []
    for art, size, batch, threads, conc in itertools.product(
        arts, sizes, settings.batch, settings.threads, settings.concurrency
    ):
        configs.append(
            BenchConfig(
                artifact=art.name,
                runtime=art.runtime,
                precision=art.precision,
                imgsz=(int(size[0]), int(size[1])),
                batch=int(batch),
                threads=threads,
                concurrency=int(conc),
                sessions=settings.sessions if conc > 1 else 1,
                device=settings.device,
            )
        )
    return configs


class SkipConfig(CvdeployError):
    """This configuration cannot be measured; the message says why (reported, not fatal)."""


@dataclass
class Resolved:
    """How to load one configuration's pipeline, and facts about the artifact actually run."""

    load: Callable[[], Pipeline]
    bundle: Bundle
    artifact: Artifact
    source: str  # "bundle" | "re-exported"
    size_mb: float | None
    notes: list[str]


class ArtifactResolver:
    """Finds a loadable artifact for an (artifact, image size) pair, re-exporting when it must.

    Re-exported bundles live in a temporary folder for the duration of the sweep (``close()``).
    """

    def __init__(
        self,
        bundle: Bundle,
        say: Callable[[str], None] | None = None,
        runtimes: tuple[str, ...] = ("onnxruntime",),
    ) -> None:
        self.bundle = bundle
        from cvdeploy.export import FORMATS
        from cvdeploy.runtimes.registry import engine

        # export formats are named by engine prefix: re-export to every format the swept runtimes read
        self.formats = tuple(
            dict.fromkeys(["onnx", *(p for r in runtimes if (p := engine(r).prefix) in FORMATS)])
        )
        self.say = say or (lambda msg: log.info(msg))
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._exports: dict[tuple[int, int], Bundle] = {}
        self._dims: dict[str, Dims | None] = {}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _fixed_size(self, art: Artifact) -> tuple[int, int] | None:
        if art.name not in self._dims:
            self._dims[art.name] = input_dims(self.bundle.file(art), art.runtime)
        dims = self._dims[art.name]
        if not dims or len(dims) != 4:
            return None
        layout = self.bundle.contract.input.layout
        h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
        return (h, w) if h is not None and w is not None else None

    def resolve(self, config: BenchConfig, options: RuntimeOptions) -> Resolved:
        """The loader for ``config``; raises :class:`SkipConfig` when the size cannot be run."""
        art = self.bundle.artifact(config.artifact)
        spec = self.bundle.contract.input
        native = (spec.height, spec.width)
        size = tuple(config.imgsz)
        imgsz = None if size == native else (int(size[0]), int(size[1]))
        fixed = self._fixed_size(art)
        if imgsz is not None and (imgsz[0] % spec.stride or imgsz[1] % spec.stride):
            raise SkipConfig(f"{size[0]}x{size[1]} is not a multiple of the model stride {spec.stride}")
        if imgsz is None or fixed is None or fixed == imgsz:
            bundle = self.bundle
            return Resolved(
                lambda: Pipeline.from_bundle(bundle, art.name, options, imgsz),
                bundle,
                art,
                "bundle",
                artifact_size_mb(bundle, art),
                [],
            )
        # a fixed input of another size: re-export from the PyTorch source, or skip
        why = self._why_not_reexport(art)
        if why:
            raise SkipConfig(
                f"{art.name} has a fixed {fixed[0]}x{fixed[1]} input and cannot be re-exported at "
                f"{size[0]}x{size[1]} ({why}); export with --dynamic-shape to sweep image sizes"
            )
        rebundle = self._reexport(imgsz)
        reart = rebundle.artifact(art.name)
        note = (
            f"re-exported from the bundle's PyTorch source at {size[0]}x{size[1]} "
            "(the artifact's input is fixed)"
        )
        return Resolved(
            lambda: Pipeline.from_bundle(rebundle, reart.name, options),
            rebundle,
            reart,
            "re-exported",
            artifact_size_mb(rebundle, reart),
            [note],
        )

    def _why_not_reexport(self, art: Artifact) -> str:
        src = self.bundle.manifest.provenance.source
        if not src.kept:
            return "the bundle has no PyTorch source (it was made from ONNX)"
        from cvdeploy.bundle import artifact_name

        if art.name != artifact_name(art.runtime, "fp32") or art.made_by not in ("export", "import"):
            return f"it was made by {art.made_by}, not by a plain export"
        return ""

    def _reexport(self, imgsz: tuple[int, int]) -> Bundle:
        have = self._exports.get(imgsz)
        if have is not None:
            return have
        from cvdeploy.export import ExportOptions, export

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cvdeploy-bench-")
        out = Path(self._tmp.name) / f"{self.bundle.name}-{imgsz[0]}x{imgsz[1]}.cvd"
        source = str(self.bundle.path.resolve())  # the PyTorch model the bundle keeps, never a path from cwd
        self.say(f"re-exporting {self.bundle.name} at {imgsz[0]}x{imgsz[1]}")
        opts = ExportOptions(
            formats=self.formats,
            imgsz=imgsz,
            dynamic_batch=True,
            overwrite=True,
            parity_count=2,
            name=self.bundle.name,
        )
        self._exports[imgsz] = export(source, out, opts, step=lambda m: log.info(m))
        return self._exports[imgsz]


def artifact_size_mb(bundle: Bundle, art: Artifact) -> float | None:
    """Size on disk of every file of the artifact (e.g. OpenVINO's .xml + .bin), in MB (10^6 bytes)."""
    files = [bundle.path / rel for rel in art.sha256] or [bundle.file(art)]
    sizes = [f.stat().st_size for f in files if f.is_file()]
    return sum(sizes) / 1e6 if sizes else None


def metrics_for(bundle: Bundle, art: Artifact, config: BenchConfig, source: str) -> dict[str, object]:
    """Accuracy recorded in the manifest, when it applies to this configuration's image size."""
    if source != "bundle" or not art.metrics:
        return {}
    spec = bundle.contract.input
    measured_at = art.metrics.get("imgsz")
    if isinstance(measured_at, int | float):
        native: tuple[int, int] = (int(measured_at), int(measured_at))
    elif isinstance(measured_at, list | tuple) and len(measured_at) == 2:
        native = (int(measured_at[0]), int(measured_at[1]))
    else:
        native = (spec.height, spec.width)
    if tuple(config.imgsz) != native:
        return {}
    return {k: v for k, v in art.metrics.items() if isinstance(v, int | float | str | bool)}
