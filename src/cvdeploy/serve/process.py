"""Tuning of the server's own process: keep large buffers in the heap, and leave start-up objects out
of the garbage collector's full passes. Only the foreground server (``cvdeploy serve``), which owns
its process, calls these; an in-process background server leaves its host process alone.

**Large buffers.** A request moves several multi-megabyte buffers through the process — a v2 binary
tensor of one 640×640 image is 4.9 MB, and the HTTP layer, the body and the tensor each hold a copy.
glibc's ``malloc`` serves blocks that large with ``mmap`` and returns them with ``munmap`` (or trims
the heap top once more than ``M_TRIM_THRESHOLD`` is free), so every request pays the page faults and
zeroing of fresh pages again: measured here, joining 4.9 MB of body chunks and copying it once took
4.0 ms of CPU with the defaults and 0.19 ms with the thresholds of :func:`keep_large_buffers` (AMD
EPYC VM). ``predict`` and ``bench``, which run in users' processes, do not change the allocator: they
reuse per-thread buffers instead (:class:`cvdeploy.preprocess.Preprocessor`); the server cannot, as
its tensors wait in the batching queue while the next request is decoded. Memory the server once
needed stays reserved for the next request (up to ``trim`` bytes of free heap); where the C library is
not glibc (musl, macOS, Windows) nothing is changed. No library does this from Python (jemalloc or tcmalloc would have to be preloaded before the interpreter
starts), hence these lines.

**Start-up objects.** Loading a model leaves ~73,000 long-lived Python objects (modules, the web
framework, the runtimes' bindings); every full collection walked them all — 35 ms here, once every
few hundred requests, holding the GIL and stalling every request in flight. After
:func:`freeze_startup_objects` a full collection takes 1-2 ms. A frozen object is still freed by
reference counting; only one that later becomes part of an unreachable cycle would never be freed —
an unloaded model version is not: it is freed by reference counting alone (``tests/serve/test_repository.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import platform

log = logging.getLogger("cvdeploy.serve")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one whose malloc these calls tune), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_large_buffers(mmap_threshold: int = 64 << 20, trim: int = 256 << 20) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from the heap and keep up to ``trim`` bytes of it
    free; True when applied (glibc), False where the C library is another one."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim)) == 1 and ok
    except (OSError, AttributeError):
        return False
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d (applied: %s)", mmap_threshold, trim, ok)
    return ok


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now out of the collector's passes; → how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def release_free_memory() -> bool:
    """Give the heap's free memory back to the system now (glibc ``malloc_trim``); True when done.

    Called after a large one-off allocation is freed — the batching measurement at load runs the
    model at its largest batch, and the runtime's arena for that batch (~420 MB for a 640 px
    YOLO-n at batch 8) would otherwise stay resident in a server that then never batches."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
