"""Dynamic batching: concurrent requests of the same shape coalesced into one runtime call.

Per model version, one :class:`DynamicBatcher` owns a bounded queue and ``instances`` runners
(one runtime session each), every runner driven by its own worker thread so the event loop never
blocks on inference::

    request ─ infer() ─▶ bounded queue ─────────▶ worker thread (one per instance):
      (event loop)        │ full → 503              take the oldest live request + same-shaped
                          ▼                         ones (≤ max_batch_size rows, waiting ≤
                   timeout / client gone            max_queue_delay while traffic is concurrent)
                   → dropped, never run             ─ runtime.run(batch) ─ split the outputs back
                                                    ─▶ results handed to the event loop

The worker takes its next batch itself, straight after the last one, under the queue's lock: the
instance never sits idle waiting for the event loop to schedule it (on a busy machine, a round
trip through the loop between two runtime calls cost ~12 % of the throughput). The loop only
queues requests and receives results (one ``call_soon_threadsafe`` per batch).

A batch waits for more requests only while traffic is concurrent (recent batches held several
requests, or others are already queued): a lone client then pays no queue delay at all.
Inputs are ``{name: (rows, ...)}``; outputs of a batchable model must have the batch as their
first dimension so they can be split back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvdeploy.serve.errors import NotReady, Overloaded, Timeout
from cvdeploy.serve.metrics import ServeMetrics

log = logging.getLogger("cvdeploy.serve.batching")

Feeds = dict[str, np.ndarray]
Runner = Callable[
    [Sequence[Feeds]], list[np.ndarray]
]  # several requests' feeds → outputs of their concatenation


class BatcherClosed(Exception):
    """The batcher is stopping (its version is being unloaded); the caller may retry another version."""


class ClientGone(Exception):
    """The client disconnected before its result was ready; the work was dropped."""


@dataclass
class BatchResult:
    """One request's share of a batch: outputs ``(rows, ...)`` each, and where its time went."""

    outputs: list[np.ndarray]
    queue_s: float
    inference_s: float
    batch_rows: int


@dataclass
class BatcherStats:
    """Counters since start; ``batch_rows`` maps rows per runtime call to how often it happened."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    dropped: int = 0
    timed_out: int = 0
    rejected: int = 0
    inference_s: float = 0.0
    batch_rows: collections.Counter[int] = field(default_factory=collections.Counter)
    requests_per_batch: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def max_batch_rows(self) -> int:
        return max(self.batch_rows, default=0)


@dataclass(eq=False)
class _Item:
    feeds: Feeds
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[BatchResult]
    enqueued: float
    deadline: float
    context: contextvars.Context  # the request's (its id tags the runtime's log lines)


class DynamicBatcher:
    """Queues requests for one model version and runs them in batches on its instances."""

    def __init__(
        self,
        name: str,
        runners: Sequence[Runner],
        *,
        max_batch_size: int = 8,
        max_queue_delay_s: float = 0.002,
        queue_size: int = 64,
        timeout_s: float = 30.0,
        batchable: bool = True,
        metrics: ServeMetrics | None = None,
    ) -> None:
        if not runners:
            raise ValueError("a batcher needs at least one runner")
        self.name = name
        self.runners = list(runners)
        self.max_batch_size = max(1, int(max_batch_size))
        self.batching = batchable and self.max_batch_size > 1
        self.batchable = batchable
        self.max_delay = max(0.0, float(max_queue_delay_s))
        self.queue_size = int(queue_size)
        self.timeout_s = float(timeout_s)
        self.metrics = metrics
        self.stats = BatcherStats()
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()  # guards _pending; workers wait on it for requests
        self._stats_lock = threading.Lock()  # the counters workers update side by side
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[threading.Thread] = []
        self._closing = False
        self._multi = 0.0  # moving share of recent batches that held more than one request
        self._reserved = 0  # queue places promised to requests of several parts (see reserve())

    # ---- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start one worker thread per instance; results are handed to the running event loop."""
        if self._workers:
            return
        self._loop = asyncio.get_running_loop()
        self._workers = [
            threading.Thread(target=self._work, args=(i,), name=f"infer-{self.name}_{i}", daemon=True)
            for i in range(len(self.runners))
        ]
        for t in self._workers:
            t.start()

    @property
    def started(self) -> bool:
        return any(t.is_alive() for t in self._workers) and not self._closing

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests; with ``drain`` finish what is queued, else fail it as not ready."""
        self._closing = True
        if not self._workers:
            return
        with self._cond:
            dropped = [] if drain else list(self._pending)
            if not drain:
                self._pending.clear()
            self._cond.notify_all()
        for it in dropped:
            if not it.future.done():
                it.future.set_exception(NotReady(f"model {self.name} was unloaded"))
        for t in self._workers:
            await asyncio.to_thread(t.join)
        await asyncio.sleep(0)  # the results the workers handed over last are set now

    # ---- the request side (event loop) -----------------------------------------------------
    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        """Hold ``n`` queue places for one request of ``n`` parts (all or nothing), so it is never half
        run: ``Overloaded`` now if they are not free; parts then pass ``reserved=True`` to :meth:`infer`."""
        if n > self.queue_size:
            raise ValueError("a reservation larger than the queue can never be granted")
        if self._closing:
            raise BatcherClosed(self.name)
        if len(self._pending) + self._reserved + n > self.queue_size:
            self._purge()
        busy = len(self._pending) + self._reserved
        if busy + n > self.queue_size:
            self.stats.rejected += 1
            self._count_drop("queue_full")
            raise Overloaded(
                f"model {self.name} is busy: {busy} of {self.queue_size} queue places taken, "
                f"this request needs {n}"
            )
        self._reserved += n
        try:
            yield
        finally:
            self._reserved -= n

    async def infer(
        self,
        feeds: Feeds,
        timeout_s: float | None = None,
        gone: asyncio.Future[Any] | None = None,
        reserved: bool = False,
    ) -> BatchResult:
        """Queue one request and wait for its outputs.

        Raises ``Overloaded`` (queue full), ``Timeout``, :class:`ClientGone` when ``gone`` completes
        first (the request is dropped if it has not started), or :class:`BatcherClosed`.
        """
        item = self.submit(feeds, timeout_s, reserved)
        wait_for: set[asyncio.Future[Any]] = {item.future}
        if gone is not None:
            wait_for.add(gone)
        remaining = item.deadline - time.perf_counter()
        done, _ = await asyncio.wait(
            wait_for, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
        )
        if item.future in done:
            return item.future.result()
        item.future.cancel()  # a queued item is skipped; a running one has its result discarded
        if gone is not None and gone in done:
            self.stats.dropped += 1
            self._count_drop("client_gone")
            raise ClientGone("client disconnected")
        self.stats.timed_out += 1
        self._count_drop("timeout")
        raise Timeout(
            f"model {self.name}: no result within {item.deadline - item.enqueued:.3g} s; try again later"
        )

    def submit(self, feeds: Feeds, timeout_s: float | None = None, reserved: bool = False) -> _Item:
        """Queue a request without waiting; its ``future`` resolves to a :class:`BatchResult`.

        ``reserved``: the place was held with :meth:`reserve`, so only the queue itself bounds it.
        """
        if self._closing:
            raise BatcherClosed(self.name)
        if self._loop is None:
            raise NotReady(f"model {self.name} is not started")
        first = next(iter(feeds.values()))
        rows = int(first.shape[0]) if self.batchable and first.ndim else 1
        key = tuple(
            (k, v.shape[1:] if self.batchable else v.shape, v.dtype.str) for k, v in sorted(feeds.items())
        )
        now = time.perf_counter()
        wait = min(timeout_s, self.timeout_s) if timeout_s else self.timeout_s
        item = _Item(
            feeds, rows, key, self._loop.create_future(), now, now + wait, contextvars.copy_context()
        )
        held = 0 if reserved else self._reserved
        with self._cond:
            live = len(self._pending) + held
            if live >= self.queue_size:
                self._purge_locked()
                live = len(self._pending) + held
            if live >= self.queue_size:
                self.stats.rejected += 1
                self._count_drop("queue_full")
                raise Overloaded(
                    f"model {self.name} is busy: {live} requests queued (queue_size {self.queue_size})"
                )
            self._pending.append(item)
            self._cond.notify()
        self.stats.requests += 1
        self._gauge()
        return item

    def _purge(self) -> None:
        with self._cond:
            self._purge_locked()

    def _purge_locked(self) -> None:
        now = time.perf_counter()
        self._pending = collections.deque(it for it in self._pending if self._alive(it, now, on_loop=True))

    def _expire(self, it: _Item) -> None:
        """(event loop) Answer a request that timed out in the queue, unless it was answered already."""
        if not it.future.done():
            it.future.set_exception(Timeout(f"model {self.name}: timed out in the queue; try again later"))
            self.stats.timed_out += 1
            self._count_drop("timeout")

    def _settle(self, answers: list[tuple[_Item, BatchResult | BaseException]]) -> None:
        """(event loop) Hand a batch's results to the requests still waiting for them."""
        for it, answer in answers:
            if it.future.done():
                continue
            if isinstance(answer, BaseException):
                it.future.set_exception(answer)
            else:
                it.future.set_result(answer)

    # ---- the worker side (one thread per instance) -----------------------------------------
    def _alive(self, it: _Item, now: float, on_loop: bool = False) -> bool:
        """Whether a queued request still wants an answer; one past its deadline is answered (on the loop)."""
        if it.future.done():  # a plain read of the future's state: safe from a worker thread
            return False
        if now > it.deadline:
            if on_loop:
                self._expire(it)
            elif self._loop is not None:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                    self._loop.call_soon_threadsafe(self._expire, it)
            return False
        return True

    def _work(self, idx: int) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(idx, batch)

    def _next_batch(self) -> list[_Item] | None:
        """The next batch: the oldest live request plus same-shaped ones, waiting while worthwhile;
        None once the batcher is closing and nothing is left to run."""
        with self._cond:
            while True:
                first = self._pop_live()
                if first is not None:
                    break
                if self._closing:
                    return None
                self._cond.wait()
            batch, rows = [first], first.rows
            if self.batching and rows < self.max_batch_size:
                worth_waiting = self.max_delay > 0 and (self._multi > 0.1 or bool(self._pending))
                # the delay counts from now, when an instance is free: a request that already waited
                # for a busy instance may still gather the requests that were answered meanwhile
                deadline = time.perf_counter() + self.max_delay
                while True:
                    rows = self._take_matching(batch, rows)
                    remaining = deadline - time.perf_counter()
                    if rows >= self.max_batch_size or not worth_waiting or self._closing or remaining <= 0:
                        break
                    self._cond.wait(remaining)
        self._gauge()
        return batch

    def _pop_live(self) -> _Item | None:
        now = time.perf_counter()
        while self._pending:
            it = self._pending.popleft()
            if self._alive(it, now):
                return it
        return None

    def _take_matching(self, batch: list[_Item], rows: int) -> int:
        if not self._pending:
            return rows
        key, now = batch[0].key, time.perf_counter()
        keep: collections.deque[_Item] = collections.deque()
        for it in self._pending:
            if not self._alive(it, now):
                continue
            if it.key == key and rows + it.rows <= self.max_batch_size:
                batch.append(it)
                rows += it.rows
            else:
                keep.append(it)
        self._pending = keep
        return rows

    def _run(self, idx: int, batch: list[_Item]) -> None:
        """Run one batch on instance ``idx`` and hand every request its share (or the error)."""
        live = [it for it in batch if not it.future.done()]
        if not live:
            return
        rows = sum(it.rows for it in live)
        start = time.perf_counter()
        st = self.stats
        with self._stats_lock:
            st.batches += 1
            st.rows += rows
            st.batch_rows[rows] += 1
            st.requests_per_batch[len(live)] += 1
            self._multi = 0.8 * self._multi + 0.2 * (len(live) > 1)
        if self.metrics is not None:
            self.metrics.batch_size.labels(self.name).observe(rows)
            for it in live:
                self.metrics.observe_stage(self.name, "queue", start - it.enqueued)
        answers: list[tuple[_Item, BatchResult | BaseException]]
        try:
            outputs = live[0].context.run(self.runners[idx], [it.feeds for it in live])
        except Exception as exc:
            # each request's handler logs the traceback with its request id
            log.warning("model %s: a batch of %d rows failed: %s", self.name, rows, type(exc).__name__)
            answers = [(it, exc) for it in live]
        else:
            took = time.perf_counter() - start
            with self._stats_lock:
                st.inference_s += took
            if self.metrics is not None:
                self.metrics.observe_stage(self.name, "inference", took)
            answers = self._split(live, outputs, rows, start, took)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._settle, answers)

    def _split(
        self, live: list[_Item], outputs: list[np.ndarray], rows: int, start: float, took: float
    ) -> list[tuple[_Item, BatchResult | BaseException]]:
        if len(live) == 1:
            return [(live[0], BatchResult(outputs, start - live[0].enqueued, took, rows))]
        bad = [o.shape for o in outputs if o.ndim == 0 or o.shape[0] != rows]
        if bad:
            err = RuntimeError(f"model {self.name}: outputs {bad} have no batch dimension of {rows} to split")
            return [(it, err) for it in live]
        answers: list[tuple[_Item, BatchResult | BaseException]] = []
        offset = 0
        for it in live:
            share = [o[offset : offset + it.rows] for o in outputs]
            answers.append((it, BatchResult(share, start - it.enqueued, took, rows)))
            offset += it.rows
        return answers

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(len(self._pending))

    def _count_drop(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dropped.labels(self.name, reason).inc()
