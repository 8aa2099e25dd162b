"""The server's monitor: the capture hook the inference service calls, and everything behind it.

    InferenceService ── image() / tensors() / failure() ──▶ Monitor (O(1): sample? queue it)
                                                              │
            BackgroundWriter (thread) ◀── Observation ────────┘
               features, thumbnails, summaries → MonitorStore (the --db database)
                                                              │
    refresh thread, every monitor.refresh_s ── window of each served model vs its profile
               → MonitorGauges (cvdeploy_drift_*, cvdeploy_output_*)
    GET /v1/models/{name}/monitor, /ui, `cvdeploy monitor report` ── summary(...) of any window

Nothing here raises into a request: a capture that cannot be queued is dropped and counted.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.monitor.capture import Observation
from cvdeploy.monitor.gauges import MonitorGauges
from cvdeploy.monitor.reference import Reference, read_profile, reference_from_profile
from cvdeploy.monitor.settings import MonitorConfig
from cvdeploy.monitor.store import ModelRecord, MonitorStore, SampleRow
from cvdeploy.monitor.window import WindowSummary, summarize
from cvdeploy.monitor.writer import BackgroundWriter
from cvdeploy.results import Result

log = logging.getLogger("cvdeploy.monitor")

Clock = Callable[[], float]
MAX_WINDOW_ROWS = 50_000  # a window's statistics use at most the latest this many requests


def _channel_axis(mv: Any) -> int | None:
    layout = str(getattr(mv.contract.input, "layout", "NCHW")).upper()
    return 1 if layout == "NCHW" else (3 if layout == "NHWC" else None)


class Monitor:
    """Capture, storage, drift and gauges for one server (see the module docstring)."""

    def __init__(
        self, store: MonitorStore, config: MonitorConfig | None = None, clock: Clock = time.time,
        seed: int | None = None, temporary: Path | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config or MonitorConfig()
        self.clock = clock
        self.started = clock()
        self.temporary = temporary  # the folder of a throwaway database, removed at stop
        self._rng = random.Random(seed)
        self.gauges: MonitorGauges | None = None
        self.writer = BackgroundWriter(store, self.config, clock, on_drop=self._count_drop)
        self._repository: Any = None
        self._refs: dict[tuple[str, int], Reference | None] = {}
        self._known: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @classmethod
    def open(cls, url: str | None, config: MonitorConfig | None = None, clock: Clock = time.time) -> Monitor:
        """The monitor of the database at ``url`` (SQLite path or postgresql:// URL); None = a throwaway
        SQLite database in a temporary folder, removed when the server stops."""
        temporary = None
        if url is None:
            temporary = Path(tempfile.mkdtemp(prefix="cvdeploy-monitor-"))
            url = str(temporary / "monitor.db")
        try:
            store = MonitorStore.open(url)
        except BaseException:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        return cls(store, config, clock, temporary=temporary)

    # ---- wiring --------------------------------------------------------------------------------
    def attach(self, repository: Any, registry: Any) -> None:
        """Watch ``repository`` (``.models``: name → entry with ``.serving`` and ``.versions``) and put
        the monitor's series on the Prometheus ``registry``."""
        self._repository = repository
        self.gauges = MonitorGauges(registry)

    def start(self) -> None:
        self.writer.start()
        for mv in self._served_versions():
            self._remember(mv)
        if self._refresher is None:
            self._stop.clear()
            self._refresher = threading.Thread(target=self._refresh_loop, name="cvdeploy-monitor-gauges",
                                               daemon=True)  # fmt: skip
            self._refresher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(10)
            self._refresher = None
        self.writer.close()
        self.store.close()
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every captured request is in the database."""
        return self.writer.flush(timeout)

    # ---- the capture hook (called by the inference service on the event loop) ----------------
    def image(
        self, mv: Any, image: np.ndarray, tensor: np.ndarray, outputs: Sequence[np.ndarray], result: Result,
        timings: Mapping[str, float], overridden: bool = False, request_id: str | None = None,
    ) -> None:  # fmt: skip
        """An image request answered: queue it (sampled ones keep their stage I/O)."""
        sampled = self._rng.random() < self.config.sample
        self._remember(mv)
        self.writer.submit(Observation(
            self.clock(), mv.name, mv.version, "image", 200, request_id, dict(timings), image,
            tensor if sampled else None, list(outputs) if sampled else None,
            [t.name for t in mv.outputs] if sampled else (), result, not overridden, sampled, _channel_axis(mv),
        ))  # fmt: skip

    def tensors(
        self, mv: Any, feeds: Mapping[str, np.ndarray], outputs: Sequence[np.ndarray],
        timings: Mapping[str, float], request_id: str | None = None,
    ) -> None:  # fmt: skip
        """A tensor request answered (no image: latency, and the tensors' summaries when sampled)."""
        sampled = self._rng.random() < self.config.sample
        self._remember(mv)
        first = next(iter(feeds.values()), None) if sampled and len(feeds) == 1 else None
        self.writer.submit(Observation(
            self.clock(), mv.name, mv.version, "tensor", 200, request_id, dict(timings), None, first,
            list(outputs) if sampled else None, [t.name for t in mv.outputs] if sampled else (), None, True,
            sampled, _channel_axis(mv),
        ))  # fmt: skip

    def failure(self, model: str, version: int | None, status: int, request_id: str | None = None) -> None:
        """A request to a served model failed with ``status``; unknown model names are not recorded."""
        if self._repository is not None and model not in self._repository.models:
            return
        self.writer.submit(Observation(self.clock(), model, version, "error", int(status), request_id))

    # ---- reading -------------------------------------------------------------------------------
    def serving(self, name: str) -> int | None:
        entry = self._repository.models.get(name) if self._repository is not None else None
        return entry.serving if entry is not None else None

    def reference(self, name: str, version: int | None) -> Reference | None:
        """The reference of a model version: from its bundle when loaded here, else from the database."""
        if version is None:
            return None
        key = (name, version)
        if key not in self._refs:
            mv = self._loaded(name, version)
            if mv is not None:
                self._remember(mv)
            else:
                rec = self.store.model(name, version)
                self._refs[key] = reference_from_profile(rec.profile) if rec is not None else None
        return self._refs.get(key)

    def summary(self, name: str, version: int | None = None, window_s: float | None = None,
                end: float | None = None) -> WindowSummary:  # fmt: skip
        """The window ending ``end`` (now) of ``name`` (its serving version by default)."""
        if version is None:
            version = self.serving(name)
        window = window_s or self.config.window_s
        end = self.clock() if end is None else end
        start = end - window
        rows = self.store.requests(name, start, end + 1e-6, version, limit=MAX_WINDOW_ROWS)
        span = min(window, max(1e-9, end - self.started))
        return summarize(name, version, rows, self.reference(name, version), self.config, start, end, span)

    def samples(self, name: str | None, limit: int = 12, window_s: float | None = None) -> list[SampleRow]:
        since = self.clock() - (window_s or self.config.window_s) if window_s else 0.0
        return self.store.samples(name, limit, since)

    def refresh(self) -> list[WindowSummary]:
        """Recompute the rolling window of every served model and set the gauges."""
        out: list[WindowSummary] = []
        if self._repository is None:
            return out
        for name in sorted(self._repository.models):
            s = self.summary(name)
            if self.gauges is not None:
                self.gauges.update(s)
            out.append(s)
        return out

    # ---- internals -----------------------------------------------------------------------------
    def _served_versions(self) -> list[Any]:
        if self._repository is None:
            return []
        return [mv for e in self._repository.models.values() for mv in e.versions.values()]

    def _loaded(self, name: str, version: int) -> Any:
        entry = self._repository.models.get(name) if self._repository is not None else None
        return entry.versions.get(version) if entry is not None else None

    def _remember(self, mv: Any) -> None:
        """Record a model version (and its profile) the first time it is seen."""
        key = (mv.name, mv.version)
        if key in self._known:
            return
        self._known.add(key)
        profile = read_profile(mv.bundle.path, mv.bundle.manifest.reference_profile)
        self._refs[key] = reference_from_profile(profile)
        if profile is None:
            log.warning("model %s version %d has no reference profile: no drift is computed for it "
                        "(re-export the bundle, or give it one with --profile-images)", mv.name, mv.version)  # fmt: skip
        rec = ModelRecord(mv.name, mv.version, self.clock(), str(mv.bundle.path), mv.artifact.name,
                          mv.contract.task, list(mv.contract.classes or []), profile)  # fmt: skip
        try:
            self.store.record_model(rec)
        except Exception:  # noted, not fatal: the report then lacks this version's profile
            log.exception("monitoring could not record model %s version %d", mv.name, mv.version)

    def _count_drop(self, reason: str, n: int) -> None:
        if self.gauges is not None:
            self.gauges.dropped.labels(reason).inc(n)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.refresh_s):
            try:
                self.refresh()
            except Exception:  # the gauges keep their last values; the next round tries again
                log.exception("monitoring could not refresh the drift gauges")
