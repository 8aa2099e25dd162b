"""Helpers shared by the background writer threads (the audit log, monitoring)."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def take_batch(q: queue.Queue[T | None], first: T, limit: int) -> tuple[list[T], bool]:
    """``first`` plus what is already queued, up to ``limit`` items, without waiting; and whether the
    stop marker (``None``) was met on the way."""
    items, stop = [first], False
    while len(items) < limit:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            stop = True
            break
        items.append(nxt)
    return items, stop
