"""What validation and fidelity share: evaluation pipelines, the progress bar, and task checks.

An evaluation pipeline is the bundle's one :class:`~cvdeploy.pipeline.Pipeline`, built on a
private copy of the manifest so that lowering its thresholds (conf 0.001 for mAP) can never leak
into the bundle in memory or on disk when metrics are written back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from cvdeploy.bundle import ZOO_DIR, Bundle
from cvdeploy.errors import BundleError, ConfigError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions

T = TypeVar("T")

#: Standard thresholds for measuring mAP: keep nearly every candidate box.
EVAL_CONF = 0.001
EVAL_MAX_DET = 300


def open_bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)


def eval_pipeline(
    bundle: Bundle,
    artifact: str | None = None,
    threads: int | None = None,
    device: str = "cpu",
    conf: float | None = None,
    max_det: int | None = None,
) -> Pipeline:
    """The bundle's pipeline for ``artifact`` on a copy of the contract, with ``conf``/``max_det`` overridden."""
    detached = Bundle(bundle.path, bundle.manifest.model_copy(deep=True), bundle.keys)
    pipe = Pipeline.from_bundle(detached, artifact, RuntimeOptions(threads=threads, device=device))
    if conf is not None:
        pipe.contract.output.conf = conf
    if max_det is not None:
        pipe.contract.output.max_det = max_det
    return pipe


def require_task(
    bundle: Bundle, what: str, tasks: Sequence[str] = ("detect", "segment", "pose", "obb", "classify")
) -> str:
    """The bundle's task, or a BundleError when ``what`` cannot work on it."""
    task = bundle.contract.task
    if task not in tasks:
        raise BundleError(
            f"bundle {bundle.name!r} has a {task!r} contract (outputs are not decoded), so {what} has nothing "
            "to score; re-export it with --task (detect, segment, pose, obb, classify) or --contract"
        )
    return task


def check_batch(batch: int) -> None:
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_zoo_bundle(bundle: Bundle) -> bool:
    """True for the bundled default detectors (which live inside the cvdeploy package)."""
    try:
        return bundle.path.resolve().is_relative_to(ZOO_DIR.resolve())
    except OSError:
        return False


def save_bundle(bundle: Bundle) -> None:
    """Save the manifest, turning a read-only location into a one-line BundleError."""
    try:
        bundle.save()
    except OSError as exc:
        raise BundleError(f"cannot write the manifest of {bundle.path} ({exc.strerror or exc}); copy the bundle "
                          "somewhere writable or drop --write") from None  # fmt: skip


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr over ``total`` images; yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
