"""The background writer: capture never waits for the database, and never grows without bound.

    request path ── submit(observation) ──▶ bounded queue (items and bytes) ──▶ writer thread
                     O(1): no copy, no          full → dropped and counted       features, thumbnails,
                     arithmetic, never raises   (cvdeploy_monitor_dropped)       summaries → one
                                                                                  transaction per batch
                                                                                  + retention pruning

The thread runs at a lower CPU priority (``nice`` +10 on Linux), so under full load the statistics
wait for the cores inference needs, not the other way round; the queue absorbs the difference and
drops (counted, never silently) when it cannot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from cvdeploy.background import take_batch
from cvdeploy.monitor.capture import Observation, to_rows
from cvdeploy.monitor.settings import MonitorConfig
from cvdeploy.monitor.store import MonitorStore, RequestRow, SampleRow

log = logging.getLogger("cvdeploy.monitor")

Clock = Callable[[], float]


class BackgroundWriter:
    """Turns queued observations into rows and writes them; prunes rows older than the retention."""

    def __init__(
        self,
        store: MonitorStore,
        config: MonitorConfig,
        clock: Clock = time.time,
        on_drop: Callable[[str, int], None] | None = None,
        max_items: int = 2048,
        max_bytes: int = 256 * 1024 * 1024,
        batch: int = 256,
        prune_every_s: float = 600.0,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.on_drop = on_drop
        self.max_bytes = max_bytes
        self.batch = batch
        self.prune_every_s = prune_every_s
        self.written = 0
        self.dropped = 0
        self._queue: queue.Queue[Observation | None] = queue.Queue(maxsize=max_items)
        self._bytes = 0
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0

    # ---- the request side ----------------------------------------------------------------------
    def submit(self, obs: Observation) -> bool:
        """Queue ``obs`` for writing; False (and counted as dropped) when the queue is full."""
        size = obs.nbytes
        with self._cond:
            if self._bytes + size > self.max_bytes:
                self._drop("queue_bytes")
                return False
            self._bytes += size
            self._pending += 1
        try:
            self._queue.put_nowait(obs)
        except queue.Full:
            with self._cond:
                self._bytes -= size
                self._pending -= 1
                self._drop("queue_full")
                self._cond.notify_all()
            return False
        return True

    def _drop(self, reason: str, n: int = 1) -> None:  # called with self._cond held
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(reason, n)
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("monitoring dropped %d observations so far (%s)", self.dropped, reason)

    # ---- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cvdeploy-monitor", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted is written (True) or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def prune(self) -> tuple[int, int]:
        """Delete what is older than the retention now; → (requests, samples) deleted."""
        cutoff = self.clock() - self.config.retention_s
        deleted = self.store.prune(cutoff)
        if any(deleted):
            log.info("monitoring retention: deleted %d requests and %d samples", *deleted)
        return deleted

    # ---- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: nice is per thread; elsewhere a no-op
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            try:
                first = self._queue.get(timeout=max(0.05, self._next_prune - time.monotonic()))
            except queue.Empty:
                self._maybe_prune()
                continue
            if first is None:
                return
            items, stop = take_batch(self._queue, first, self.batch)
            self._write(items)
            self._maybe_prune()
            if stop:
                return

    def _write(self, items: list[Observation]) -> None:
        reqs: list[RequestRow] = []
        samples: list[SampleRow] = []
        failed = 0
        for obs in items:
            try:
                row, sample = to_rows(obs, self.config.redact, self.config.thumbnail_px)
            except Exception:  # a statistic that cannot be computed must not stop the others
                log.exception("monitoring could not summarise a request of %s", obs.model)
                failed += 1
                continue
            reqs.append(row)
            if sample is not None:
                samples.append(sample)
        try:
            self.store.insert(reqs, samples)
            written = len(reqs)
        except Exception:  # the database is down: keep serving, say so, count the loss
            log.exception("monitoring could not write %d rows", len(reqs))
            written, failed = 0, len(items)
        size = sum(o.nbytes for o in items)
        with self._cond:
            self.written += written
            if failed:
                self._drop("write_failed", failed)
            self._bytes -= size
            self._pending -= len(items)
            self._cond.notify_all()

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.prune_every_s
        try:
            self.prune()
        except Exception:
            log.exception("monitoring retention pruning failed")
