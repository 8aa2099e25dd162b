"""Keep large buffers in the C heap between requests instead of mapping fresh pages for each one.

A request to the server moves several multi-megabyte buffers through the process — a v2 binary
tensor of one 640×640 image is 4.9 MB, and the HTTP layer, the body and the tensor each hold a
copy. glibc's ``malloc`` serves blocks that large with ``mmap`` and returns them with ``munmap``
(or trims the heap top once more than ``M_TRIM_THRESHOLD`` is free), so every request pays the
page faults and zeroing of fresh pages again: measured here, joining 4.9 MB of body chunks and
copying it once took 4.0 ms of CPU with the defaults and 0.19 ms with the thresholds below
(AMD EPYC VM; ``benchmarks/serve.py`` shows the effect on the whole server). A sequential
``predict`` loop, which frees each buffer before the next is made, is not affected.

:func:`keep_large_buffers` raises both thresholds with ``mallopt`` when the C library is glibc; it
is called once by the foreground server (``cvdeploy serve``), which owns its process. Memory that
the server once needed stays reserved for the next request (up to ``trim`` bytes of free heap are
kept); elsewhere (musl, macOS, Windows) nothing is changed. No library does this from Python
(jemalloc or tcmalloc would have to be preloaded before the interpreter starts), hence these lines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("cvdeploy.serve")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_buffers(mmap_threshold: int = 64 << 20, trim: int = 256 << 20) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from the heap and keep up to ``trim`` bytes of it
    free; True when applied (glibc), False where the C library is another one."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim)) == 1 and ok
    except (OSError, AttributeError):
        return False
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d (applied: %s)", mmap_threshold, trim, ok)
    return ok
