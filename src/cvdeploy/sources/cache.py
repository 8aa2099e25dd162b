"""Bundles made on the fly for model files (``cvdeploy predict model.onnx ...``), cached by content.

``predict``/``val`` accept a model file where a bundle is expected, as Ultralytics users type
``yolo predict model=x.onnx``: the file is exported once (with its parity check, like any export)
into ``$CVDEPLOY_CACHE`` (default ``~/.cache/cvdeploy``) under a name derived from its sha256, and
reused while the file is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cvdeploy import __version__
from cvdeploy.bundle import Bundle, resolve_path, sha256_file
from cvdeploy.errors import BundleError
from cvdeploy.sources import detect_kind


def cache_dir() -> Path:
    """Where cached bundles live: ``$CVDEPLOY_CACHE``, else ``$XDG_CACHE_HOME/cvdeploy``, else ``~/.cache/cvdeploy``."""
    if os.environ.get("CVDEPLOY_CACHE"):
        return Path(os.environ["CVDEPLOY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cvdeploy"


def open_model(spec: str, say: Callable[[str], None] | None = None) -> tuple[Bundle, str | None]:
    """A bundle for ``spec`` (a bundle, ``zoo:NAME``, or a model file), and a one-line note when a
    model file was exported into (or found in) the cache."""
    if spec.startswith("zoo:") or Path(spec).is_dir() or spec.rstrip("/").endswith(".cvd"):
        return Bundle.load(spec), None  # a bundle, or a one-line "bundle not found / not a bundle"
    kind = detect_kind(spec)  # a URL, a missing path or an unknown file type fails here, in one line
    if kind == "bundle":
        return Bundle.load(resolve_path(spec)), None
    path = Path(spec)
    digest = sha256_file(path)[:16] if path.is_file() else spec.replace(":", "_").replace("/", "_")
    target = cache_dir() / "bundles" / f"{path.stem}-{digest}-v{__version__}.cvd"
    if (target / "cvdeploy.yaml").is_file():
        try:
            return Bundle.load(target), f"{spec}: using the cached bundle {target}"
        except BundleError:
            pass  # a damaged cache entry is rebuilt below
    from cvdeploy.export import ExportOptions, export

    target.parent.mkdir(parents=True, exist_ok=True)
    bundle = export(spec, target, ExportOptions(overwrite=True, parity_count=4), step=say)
    return bundle, f"{spec}: exported into the cached bundle {target} (parity checked; reused next time)"
