"""ONNX Runtime's optimized graph, kept between processes: what a restart saves.

Building an ``InferenceSession`` spends most of its time in the graph optimizer (``ORT_ENABLE_ALL``:
fusions, constant folding, the NCHWc layout for this CPU's vector width). ONNX Runtime can write the
optimized graph out (``optimized_model_filepath``) and load it again with the optimizer off; measured by
``benchmarks/cold_start.py`` on zoo:n here that takes a cold start from ~43 to ~37 ms.

The graph it writes is specific to the machine and the ONNX Runtime build (ONNX Runtime warns that the
NCHWc layout is "hardware specific"), so an entry is keyed by:

- the sha256 of the model file, as the bundle has **just verified it** (only ``Bundle.load_runtime``
  passes one, after its check; a model loaded by path alone or from memory is never cached);
- the ONNX Runtime version, the CPU's full feature-flag set and architecture;
- every session setting that changes the graph or its numerics.

What runs is what was checked: an entry is stored under the sha256 of its own bytes
(``<key>/<sha256>.onnx``, written to a temporary name and renamed, so readers never see half a file),
and its bytes are hashed against that name before every load — a changed or damaged entry is deleted,
with a warning, and rebuilt from the bundle. Where the cache lives: ``$CVDEPLOY_ORT_CACHE``, else
``<cvdeploy cache>/ort`` (``$CVDEPLOY_CACHE``, ``~/.cache/cvdeploy``), created private (0700), and not
used at all (one warning) where it belongs to someone else or others may write to it;
``CVDEPLOY_ORT_CACHE=0`` turns it off. It is kept under :data:`MAX_BYTES`, least recently used first.
Encrypted and signed bundles load from memory and never reach it, so no decrypted graph is written.

Written by hand: ONNX Runtime has the file format but no cache around it (no keying, no integrity
check, no eviction).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("cvdeploy")

ENV = "CVDEPLOY_ORT_CACHE"
MAX_BYTES = 512 << 20  # a few hundred entries of a small detector; the oldest go first
_OFF = {"0", "off", "false", "no"}


def cache_root() -> Path | None:
    """The cache folder, or None when ``CVDEPLOY_ORT_CACHE`` turns it off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value)
    from cvdeploy.sources.cache import cache_dir

    return cache_dir() / "ort"


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """The CPU's architecture and every feature flag it reports (not only the ones reports show)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        flags.add(platform.processor())
    return f"{platform.machine()} {' '.join(sorted(flags))}"


_warned: set[str] = set()


def _private(root: Path) -> bool:
    """False (with one warning per folder) where someone else could plant a graph in the cache folder:
    another owner, or group/world write permission (as ssh refuses such a key folder). A folder that
    does not exist yet passes: :meth:`OptimizedGraphCache.staging` creates it 0700 and checks again."""
    if not hasattr(os, "getuid"):
        return True  # Windows: the ACLs of the user's profile folder apply
    try:
        st = root.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return True
    if str(root) not in _warned:
        _warned.add(str(root))
        whose = "another user's" if st.st_uid != os.getuid() else "writable by others"
        log.warning(
            "not using the ONNX Runtime graph cache %s: the folder is %s; point CVDEPLOY_ORT_CACHE to a "
            "folder of your own (or set it to 0)",
            root,
            whose,
        )
    return False


def sha256_path(path: Path) -> str:
    from cvdeploy.bundle import sha256_file

    return sha256_file(path)


class OptimizedGraphCache:
    """One model's entry: :meth:`lookup` a verified optimized graph, or :meth:`staging` + :meth:`commit`."""

    def __init__(self, root: Path, model_sha256: str, settings: dict[str, Any]) -> None:
        import onnxruntime as ort

        key = json.dumps(
            {
                "model": model_sha256,
                "onnxruntime": ort.__version__,
                "machine": _machine(),
                "settings": settings,
            },
            sort_keys=True,
        )
        self.root = root
        self.folder = root / hashlib.sha256(key.encode()).hexdigest()[:32]
        self.used: Path | None = None  # the entry a session was loaded from (for Execution.settings)

    @classmethod
    def open(cls, model_sha256: str | None, settings: dict[str, Any]) -> OptimizedGraphCache | None:
        root = cache_root()
        if root is None or not model_sha256 or not _private(root):
            return None
        return cls(root, model_sha256, settings)

    def lookup(self) -> Path | None:
        """A cached graph whose bytes match its name (touched as recently used), or None."""
        try:
            entries = sorted(self.folder.glob("*.onnx"))
        except OSError:
            return None
        for entry in entries:
            if entry.name.startswith("."):
                continue  # another process is still writing it
            try:
                digest = sha256_path(entry)
            except OSError:
                continue  # evicted by another process since the listing
            if digest == entry.stem:
                with contextlib.suppress(OSError):
                    os.utime(entry)  # recently used: eviction takes the oldest first
                return entry
            log.warning(
                "the cached optimized graph %s does not match its sha256 (changed or damaged on disk); "
                "deleted, rebuilding it from the bundle",
                entry,
            )
            self.discard(entry)
        return None

    def staging(self) -> Path | None:
        """A fresh temporary path inside the entry's folder for ONNX Runtime to write to (None: cannot)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not _private(self.root):  # someone else made it between the first check and now
                return None
            self.folder.mkdir(exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(prefix=".writing-", suffix=".onnx", dir=self.folder)
            os.close(fd)
            return Path(name)
        except OSError as exc:
            log.debug("ONNX Runtime graph cache not writable (%s): running without it", exc)
            return None

    def commit(self, staged: Path) -> None:
        """Store what ONNX Runtime wrote to ``staged`` under its sha256, then keep the cache in size."""
        try:
            if staged.stat().st_size == 0:
                raise OSError("ONNX Runtime wrote nothing")
            final = self.folder / f"{sha256_path(staged)}.onnx"
            os.replace(staged, final)
        except OSError as exc:
            log.debug("could not store the optimized graph: %s", exc)
            self.discard(staged)
            return
        self.evict()

    @staticmethod
    def discard(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def evict(self, max_bytes: int = MAX_BYTES) -> None:
        """Delete the least recently used entries until the whole cache fits ``max_bytes``."""
        try:
            entries = [(e.stat(), e) for e in self.root.glob("*/*.onnx")]
        except OSError:
            return
        total = sum(st.st_size for st, _ in entries)
        for st, entry in sorted(entries, key=lambda x: x[0].st_mtime):
            if total <= max_bytes:
                break
            self.discard(entry)
            total -= st.st_size
