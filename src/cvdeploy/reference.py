"""Every bundle carries a reference profile (``profile.json``), so any bundle can be monitored and doctored.

    export            the parity photographs, or ``--profile-images DIR`` when given
    optimize -o       the copy keeps the source's profile; one is written when the source had none
    zoo packager      the recording split (:mod:`cvdeploy.zoo.package`)

The profile (:func:`cvdeploy.profile.build_profile`) runs the images through the bundle's default
artifact with its contract and keeps histograms of the images' features and of the outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Bundle
from cvdeploy.errors import CvdeployError, InputError

log = logging.getLogger("cvdeploy")

PROFILE = "profile.json"
MAX_IMAGES = 500  # images read from --profile-images (a profile needs hundreds, not millions)


def profile_images(
    sources: Sequence[str | Path] | None, fallback: Callable[[], list[np.ndarray]]
) -> list[Any]:
    """Image files under ``sources`` (at most :data:`MAX_IMAGES`), or ``fallback()`` when none is given."""
    if not sources:
        return list(fallback())
    from cvdeploy.images import find_images

    files = find_images(sources)
    if not files:
        raise InputError(f"no images found in {', '.join(str(p) for p in sources)} (--profile-images)")
    return list(files[:MAX_IMAGES])


def write_profile(bundle: Bundle | str | Path, images: Sequence[Any], step: Callable[[str], None] | None = None
                  ) -> Path | None:  # fmt: skip
    """Build the profile of ``images`` (arrays or paths) with the bundle's default artifact, write
    ``profile.json`` and name it in the manifest; None (and a note) for a model that takes no image."""
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.profile import build_profile

    say = step or log.info
    b = (
        Bundle.load(bundle, verify=False)
        if not isinstance(bundle, Bundle)
        else Bundle.load(bundle.path, verify=False)
    )
    say(f"writing the reference profile from {len(images)} images")
    try:
        profile = build_profile(Pipeline.from_bundle(b), images)
    except CvdeployError as exc:  # e.g. a model with several inputs: no image pipeline to profile
        say(f"no reference profile: {exc}")
        return None
    path = b.path / PROFILE
    path.write_text(json.dumps(profile, indent=1), encoding="utf-8")
    b.manifest.reference_profile = PROFILE
    b.save()
    return path


def has_profile(bundle: Bundle) -> bool:
    rel = bundle.manifest.reference_profile
    if not rel:
        return False
    try:
        doc = json.loads((bundle.path / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("schema", "")).startswith("cvdeploy-profile/")


def ensure_profile(bundle: Bundle | str | Path, step: Callable[[str], None] | None = None) -> Path | None:
    """Keep a readable profile; write one from the bundled sample photographs when there is none."""
    from cvdeploy.images import sample_images

    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, verify=False)
    if has_profile(b):
        return b.path / str(b.manifest.reference_profile)
    return write_profile(b, sample_images(8), step)


def export_profile(bundle: Bundle, options: Any, step: Callable[[str], None] | None = None) -> Path | None:
    """The export flow's last step: ``options.profile_images`` or the parity photographs."""
    from cvdeploy.images import read_image, sample_images

    def parity() -> list[np.ndarray]:
        if options.parity_images:
            return [
                read_image(f) for f in profile_images(options.parity_images, list)[: options.parity_count]
            ]
        return sample_images(options.parity_count)

    return write_profile(bundle, profile_images(getattr(options, "profile_images", None), parity), step)
