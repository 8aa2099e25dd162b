"""Batching inside a Ray Serve replica: Ray's ``@serve.batch`` forms the batches, cvdeploy admits requests.

Under ``cvdeploy serve --engine ray`` every replica runs the regular app; each model version's
:class:`~cvdeploy.serve.batching.DynamicBatcher` is swapped for a :class:`ServeBatcher` before the
replica starts, so exactly one batcher decides what runs together::

    request ─ infer() ─▶ admission (inherited): bounded queue → 503, reserve() for several-part requests,
                            │                    per-request deadline → 504, client gone → dropped
                            ▼
                     @serve.batch, one queue per input shape   max_batch_size counted in rows
                     (batch_size_fn), batch_wait_timeout_s = max_queue_delay_ms,
                     max_concurrent_batches = instances
                            ▼
                     a free instance ─ asyncio.to_thread ─ runtime.run(batch)  (inherited ``_run``: stats,
                                                          metrics, outputs split back per request)

What differs from the single-process batcher, and why it is said here: Ray's queue forms the next
batch as soon as the previous one has been handed on, not when an instance becomes free, and it
waits ``batch_wait_timeout_s`` even for a lone request. Under saturation its batches therefore hold
what arrived within that wait rather than everything that queued up during the last batch; raise
``max_queue_delay_ms`` towards the model's batch latency to let them fill.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cvdeploy._deps import require
from cvdeploy.serve.batching import DynamicBatcher, _Item
from cvdeploy.serve.errors import NotReady

__all__ = ["ServeBatcher"]


class ServeBatcher(DynamicBatcher):
    """A :class:`DynamicBatcher` whose batches are formed by Ray Serve's ``@serve.batch``.

    Build one with :meth:`like` from the batcher the repository made, before it starts.
    """

    @classmethod
    def like(cls, other: DynamicBatcher) -> ServeBatcher:
        """The same model, runners and settings as ``other`` (which must not have started)."""
        if other.started:
            raise RuntimeError(f"batcher of {other.name} already started; swap it before the replica starts")
        return cls(
            other.name, other.runners, max_batch_size=other.max_batch_size, max_queue_delay_s=other.max_delay,
            queue_size=other.queue_size, timeout_s=other.timeout_s, batchable=other.batchable,
            metrics=other.metrics,
        )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queues: dict[tuple[Any, ...], Callable[[_Item], Coroutine[Any, Any, None]]] = {}
        self._free: asyncio.Queue[int] | None = None  # instances not running a batch
        self._handing: set[asyncio.Task[None]] = set()  # requests waiting in a @serve.batch queue

    # ---- life cycle: no worker threads of its own; Ray's batch calls run on a free instance ----
    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._free = asyncio.Queue()
        for i in range(len(self.runners)):
            self._free.put_nowait(i)

    @property
    def started(self) -> bool:
        return self._loop is not None and not self._closing

    async def stop(self, drain: bool = True) -> None:
        self._closing = True
        if not drain:
            with self._cond:
                dropped = list(self._pending)
                self._pending.clear()
            for it in dropped:
                if not it.future.done():
                    it.future.set_exception(NotReady(f"model {self.name} was unloaded"))
        if self._handing:
            await asyncio.gather(*self._handing, return_exceptions=True)
        await asyncio.sleep(0)  # results handed over last are set now

    # ---- requests: queued as usual (bound, reserve, depth), then handed to Ray's queue --------
    def submit(self, feeds: Any, timeout_s: float | None = None, reserved: bool = False) -> _Item:
        item = super().submit(feeds, timeout_s, reserved)
        assert self._loop is not None
        task = self._loop.create_task(self._hand_over(item))
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)
        return item

    def _queue_for(self, key: tuple[Any, ...]) -> Callable[[_Item], Coroutine[Any, Any, None]]:
        """The ``@serve.batch`` entry point for requests of one input shape (created on first use)."""
        fn = self._queues.get(key)
        if fn is None:
            serve = require("ray.serve", "serve --engine ray")
            fn = serve.batch(
                max_batch_size=self.max_batch_size if self.batching else 1,
                batch_wait_timeout_s=self.max_delay if self.batching else 0.0,
                max_concurrent_batches=len(self.runners),
                batch_size_fn=lambda items: sum(it.rows for it in items),
            )(self._run_batch)
            self._queues[key] = fn
        return fn

    async def _hand_over(self, item: _Item) -> None:
        try:
            await self._queue_for(item.key)(item)
        except Exception as exc:  # Ray's own refusals (e.g. a request larger than max_batch_size)
            if not item.future.done():
                item.future.set_exception(exc)
        finally:
            self._forget([item])
            if not item.future.done():  # never left waiting, whatever happened above
                await asyncio.sleep(0)  # a result handed over by the worker thread is set first
            if not item.future.done():
                item.future.set_exception(RuntimeError(f"model {self.name}: the batch was dropped"))

    async def _run_batch(self, items: list[_Item]) -> list[None]:
        """Called by ``@serve.batch`` with one batch: run the live requests on a free instance (in a
        worker thread). Each request's result reaches it through its future (set by the inherited
        ``_run``, on the event loop)."""
        assert self._free is not None
        self._forget(items)
        now = time.perf_counter()
        live = [it for it in items if self._alive(it, now, on_loop=True)]  # timed out or gone: never run
        if live:
            idx = await self._free.get()
            try:
                await asyncio.to_thread(self._run, idx, live)
            finally:
                self._free.put_nowait(idx)
        return [None] * len(items)

    def _forget(self, items: list[_Item]) -> None:
        gone = {id(it) for it in items}
        with self._cond:
            if any(id(it) in gone for it in self._pending):
                self._pending = collections.deque(it for it in self._pending if id(it) not in gone)
        self._gauge()
