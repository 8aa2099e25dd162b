"""Calibration images for post-training quantization, run through the bundle's own preprocessing.

The calibration set decides every INT8 scale, so it is checked before any work: no readable image
is an error, an unreadable file among them is an error naming the file (a silently skipped file
hides a broken data pipeline), fewer than ``WARN_UNDER`` images, duplicates and blank images are
warnings that go into the report.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.contract import Contract
from cvdeploy.errors import ImageError, InputError
from cvdeploy.images import find_images, read_image
from cvdeploy.preprocess import Preprocessor

log = logging.getLogger("cvdeploy")

DEFAULT_LIMIT = 300
WARN_UNDER = 100


@dataclass
class CalibrationSet:
    """Preprocessed calibration tensors, each ``(1, 3, H, W)`` float32, and what was noticed."""

    tensors: list[np.ndarray]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tensors)

    def describe(self) -> dict[str, object]:
        return {"images": len(self.tensors), "warnings": list(self.warnings)}


def load_calibration(
    sources: str | Path | Sequence[str | Path] | None,
    contract: Contract,
    limit: int = DEFAULT_LIMIT,
    warn_under: int = WARN_UNDER,
    profile: dict[str, Any] | None = None,
) -> CalibrationSet:
    """Find, read, check and preprocess up to ``limit`` calibration images (evenly spread over the set).

    Raises :class:`InputError` when nothing usable is found, :class:`ImageError` for an unreadable file.
    ``profile``: the bundle's reference profile; calibration images far from it (brightness,
    contrast) are reported, since INT8 ranges from unrepresentative images clip real inputs.
    """
    if sources is None or (isinstance(sources, Sequence) and not isinstance(sources, str) and not sources):
        raise InputError("no calibration images given; pass --images with a folder of representative images")
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    files = find_images(items)
    if not files:
        raise InputError(
            f"no calibration images found in {', '.join(str(s) for s in items)} "
            "(looked for .jpg .png .bmp …); pass a folder of representative images"
        )
    if len(files) > limit:  # spread the pick over the whole folder, not its alphabetical start
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in sorted(set(idx.tolist()))]
    pre = Preprocessor(contract.input)
    tensors: list[np.ndarray] = []
    digests: set[str] = set()
    duplicates = blanks = 0
    stats: list[tuple[float, float]] = []
    for f in files:
        try:
            img = read_image(f)
        except InputError as exc:
            raise ImageError(
                f"calibration image {f} cannot be read ({exc}); remove or replace it and run again"
            ) from None
        digest = hashlib.sha1(img.tobytes()).hexdigest()
        duplicates += digest in digests
        digests.add(digest)
        blanks += float(img.std()) < 2.0
        gray = img.mean(axis=2)
        stats.append((float(gray.mean()), float(gray.std())))
        t, _ = pre([img])
        tensors.append(np.ascontiguousarray(t, dtype=np.float32))
    warnings: list[str] = []
    if len(tensors) < warn_under:
        warnings.append(
            f"only {len(tensors)} calibration images (fewer than {warn_under}): INT8 ranges may not cover "
            "real inputs; use a few hundred representative images"
        )
    if duplicates:
        warnings.append(f"{duplicates} calibration images are exact duplicates of others")
    if blanks:
        warnings.append(f"{blanks} calibration images are nearly uniform (blank) and carry no signal")
    warnings.extend(profile_mismatch(stats, profile))
    for w in warnings:
        log.warning(w)
    return CalibrationSet(tensors, [str(f) for f in files], warnings)


def profile_mismatch(stats: Sequence[tuple[float, float]], profile: dict[str, Any] | None) -> list[str]:
    """Warnings when the calibration images' mean brightness/contrast lie far (> 2 std) from the profile's."""
    if not profile or not stats:
        return []
    out = []
    arr = np.asarray(stats)
    for k, name in enumerate(("brightness", "contrast")):
        ref = (profile.get("input") or {}).get(name) or {}
        mean, std = ref.get("mean"), ref.get("std")
        if mean is None or std is None:
            continue
        got = float(arr[:, k].mean())
        if abs(got - mean) > 2 * max(std, 1.0):
            out.append(
                f"calibration images differ from the model's reference images in {name} "
                f"({got:.0f} vs {mean:.0f} ± {std:.0f}); use images like the ones the model will see"
            )
    return out


class TensorReader:
    """An ONNX Runtime ``CalibrationDataReader`` over preprocessed tensors (one image per batch)."""

    def __init__(self, tensors: Sequence[np.ndarray], input_name: str) -> None:
        self.tensors = list(tensors)
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(self.tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        t = next(self._it, None)
        return None if t is None else {self.input_name: t}

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for t in self.tensors:
            yield {self.input_name: t}

    def rewind(self) -> None:
        self._it = iter(self.tensors)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.tensors[start_index:end_index])
