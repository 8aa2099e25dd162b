"""Engines' compiled forms, kept between processes: what a restart saves.

Most of a cold start is the engine preparing the model for this CPU, the same work every time:

- ONNX Runtime's graph optimizer (``ORT_ENABLE_ALL``: fusions, constant folding, the NCHWc layout for
  this CPU's vector width). ONNX Runtime writes the optimized graph out (``optimized_model_filepath``)
  and loads it again with the optimizer off: ~6 ms of a ~30 ms zoo:n start here.
- OpenVINO's compilation. A compiled model exports to a blob (``export_model``) that ``import_model``
  loads back: zoo:n 130 → 65 ms in FP32, 254 → 76 ms in INT8 here.

What is written is specific to the machine and the engine's build (ONNX Runtime warns that its NCHWc
layout is "hardware specific"), so an entry is keyed by:

- the sha256 of the artifact's files as the bundle **is verifying them** (only ``Bundle.load_runtime``
  passes one; a model loaded by path alone or from memory is never cached);
- the engine and its version, the CPU's full feature-flag set and architecture;
- every setting that changes the compiled form or its numerics (for OpenVINO the whole compile config,
  the pinned precision among it).

What runs is what was checked:

- An entry is stored under the sha256 of its own bytes (``<engine>-<key>/<sha256><suffix>``), written to a
  temporary name and renamed, so readers never see half a file.
- Its bytes are hashed against that name before every load; a changed or damaged entry is deleted, with
  a warning, and rebuilt from the bundle.
- The engines read back the precision they execute from what they loaded, as without the cache.

Where the cache lives: ``$CVDEPLOY_ENGINE_CACHE``, else ``<cvdeploy cache>/engines`` (``$CVDEPLOY_CACHE``,
``~/.cache/cvdeploy``), created private (0700), and not used at all (one warning) where it belongs to
someone else or others may write to it; ``CVDEPLOY_ENGINE_CACHE=0`` turns it off. It is kept under
:data:`MAX_BYTES`, least recently used first. Encrypted and signed bundles load from memory and never
reach it, so no decrypted model is written. It guards against damage, not against someone who can
already write to the folder: they can store any file under its own hash.

Written by hand: the engines have the file formats but no cache around them that keys on a verified
model, checks an entry's bytes before loading it, and keeps a size limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("cvdeploy")

ENV = "CVDEPLOY_ENGINE_CACHE"
MAX_BYTES = 1 << 30  # some hundreds of entries of a small detector; the oldest go first
_OFF = {"0", "off", "false", "no"}


def cache_root() -> Path | None:
    """The cache folder, or None when ``CVDEPLOY_ENGINE_CACHE`` turns it off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()  # "~/…" from an env file that no shell expanded
    from cvdeploy.sources.cache import cache_dir

    try:
        return cache_dir() / "engines"
    except (RuntimeError, KeyError, OSError):  # no home directory (a container's arbitrary user): no cache
        return None


def _machine() -> str:
    """The CPU's architecture and every feature flag it reports (not only the ones reports show)."""
    from cvdeploy import env

    flags = env.cpu_flags() or {platform.processor()}
    return f"{platform.machine()} {' '.join(sorted(flags))}"


_warned: set[str] = set()


def _private(root: Path) -> bool:
    """False (with one warning per folder) where someone else could plant an entry in the cache folder:
    another owner, or group/world write permission (as ssh refuses such a key folder). A folder that
    does not exist yet passes: :meth:`CompiledCache.staging` creates it 0700 and checks again."""
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
            "not using the engine cache %s: the folder is %s; point CVDEPLOY_ENGINE_CACHE to a "
            "folder of your own (or set it to 0)",
            root,
            whose,
        )
    return False


def sha256_path(path: Path) -> str:
    from cvdeploy.bundle import sha256_file

    return sha256_file(path)


class CompiledCache:
    """One artifact's entry for one engine: :meth:`lookup` a verified entry, or store one (:meth:`store`,
    or :meth:`staging` + :meth:`commit` for an engine that writes the file itself)."""

    def __init__(
        self, root: Path, engine: str, model_sha256: str, settings: dict[str, Any], suffix: str
    ) -> None:
        key = json.dumps(
            {"engine": engine, "model": model_sha256, "machine": _machine(), "settings": settings},
            sort_keys=True,
            default=str,
        )
        self.root = root
        self.folder = root / f"{engine}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
        self.suffix = suffix
        self.used: Path | None = None  # the entry the engine loaded (None: compiled from the model)

    @classmethod
    def open(
        cls, engine: str, model_sha256: str | None, settings: dict[str, Any], suffix: str
    ) -> CompiledCache | None:
        """The entry for a verified artifact, or None (no digest given, the cache off or not private)."""
        root = cache_root()
        if root is None or not model_sha256 or not _private(root):
            return None
        return cls(root, engine, model_sha256, settings, suffix)

    def lookup(self) -> Path | None:
        """A cached entry whose bytes match its name (touched as recently used), or None."""
        try:
            entries = sorted(self.folder.glob(f"*{self.suffix}"))
        except OSError:
            return None
        for entry in entries:
            if entry.name.startswith("."):
                continue  # another process is still writing it
            try:
                digest = sha256_path(entry)
            except OSError:
                continue  # evicted by another process since the listing
            if digest == entry.name[: -len(self.suffix)]:
                with contextlib.suppress(OSError):
                    os.utime(entry)  # recently used: eviction takes the oldest first
                return entry
            log.warning(
                "the engine cache entry %s does not match its sha256 (changed or damaged on disk); "
                "deleted, rebuilding it from the bundle",
                entry,
            )
            self.discard(entry)
        return None

    def staging(self) -> Path | None:
        """A fresh temporary path inside the entry's folder for the engine to write to (None: cannot)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not _private(self.root):  # someone else made it between the first check and now
                return None
            self.folder.mkdir(exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(prefix=".writing-", suffix=self.suffix, dir=self.folder)
            os.close(fd)
            return Path(name)
        except OSError as exc:
            log.debug("engine cache not writable (%s): running without it", exc)
            return None

    def commit(self, staged: Path) -> None:
        """Store what the engine wrote to ``staged`` under its sha256, then keep the cache in size."""
        try:
            if staged.stat().st_size == 0:
                raise OSError("the engine wrote nothing")
            final = self.folder / f"{sha256_path(staged)}{self.suffix}"
            os.replace(staged, final)
        except OSError as exc:
            log.debug("could not store the engine cache entry: %s", exc)
            self.discard(staged)
            return
        self.evict()

    def store(self, data: bytes) -> None:
        """Store ``data`` (an engine's export) as this artifact's entry; skipped quietly where it cannot."""
        staged = self.staging()
        if staged is None:
            return
        try:
            staged.write_bytes(data)
        except OSError as exc:
            log.debug("could not write the engine cache entry: %s", exc)
            self.discard(staged)
            return
        self.commit(staged)

    @staticmethod
    def discard(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def evict(self, max_bytes: int = MAX_BYTES) -> None:
        """Delete the least recently used entries until the whole cache fits ``max_bytes``."""
        try:
            entries = [(e.stat(), e) for e in self.root.glob("*/*") if e.is_file()]
        except OSError:
            return
        total = sum(st.st_size for st, _ in entries)
        for st, entry in sorted(entries, key=lambda x: x[0].st_mtime):
            if total <= max_bytes:
                break
            self.discard(entry)
            total -= st.st_size
