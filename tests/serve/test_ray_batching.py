"""The Ray engine's batcher on its own (no cluster): Ray's ``@serve.batch`` forms the batches, the
inherited admission keeps the server's bounds, deadlines and dropped work."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")

from cvdeploy.serve.batching import DynamicBatcher
from cvdeploy.serve.errors import Overloaded, Timeout
from cvdeploy.serve.ray_batching import ServeBatcher

from .conftest import run
from .test_batching import Recorder, feeds, wait_until


@pytest.fixture(autouse=True)
def outside_a_replica(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``@serve.batch`` reads the replica's ``max_ongoing_requests`` only to log a warning; outside a
    replica there is none to read, so that one check is skipped here (batching itself is Ray's code)."""
    import ray.serve.batching as rb

    monkeypatch.setattr(
        rb._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None
    )
    yield


def make(rec: Recorder, **kw: object) -> ServeBatcher:
    return ServeBatcher.like(DynamicBatcher("m", [rec], **kw))  # type: ignore[arg-type]


def test_ray_forms_row_bounded_batches_and_results_are_split_back() -> None:
    async def body() -> None:
        rec = Recorder()
        b = make(rec, max_batch_size=4, max_queue_delay_s=0.2)
        await b.start()
        rows = [1, 2, 1, 3, 1]
        results = await asyncio.gather(*(b.infer(feeds(r, float(i))) for i, r in enumerate(rows)))
        await b.stop()
        assert sum(rec.calls) == 8 and max(rec.calls) <= 4 and len(rec.calls) >= 2  # rows, not requests
        for i, (r, res) in enumerate(zip(rows, results, strict=True)):
            assert res.outputs[0].shape == (r, 3)
            np.testing.assert_array_equal(res.outputs[0], 2.0 * i)
            np.testing.assert_array_equal(res.outputs[1], 3.0 * i)
        assert b.stats.requests == 5 and b.stats.rows == 8 and b.stats.batches == len(rec.calls)
        assert b.depth == 0

    run(body())


def test_different_shapes_go_to_different_queues() -> None:
    async def body() -> None:
        rec = Recorder()
        b = make(rec, max_batch_size=4, max_queue_delay_s=0.05)
        await b.start()
        res = await asyncio.gather(
            b.infer(feeds(1, 1.0, (3,))), b.infer(feeds(1, 1.0, (5,))), b.infer(feeds(1, 1.0, (3,)))
        )
        await b.stop()
        assert sorted(rec.calls) == [1, 2]
        assert [r.outputs[0].shape for r in res] == [(1, 3), (1, 5), (1, 3)]

    run(body())


def test_the_queue_bound_still_answers_503_and_a_late_request_never_runs() -> None:
    async def body() -> None:
        gate = threading.Event()
        rec = Recorder(gate)
        b = make(rec, max_batch_size=1, queue_size=2, timeout_s=30.0)
        await b.start()
        first = asyncio.ensure_future(b.infer(feeds(1, 1.0)))
        await wait_until(rec.entered.is_set)  # the one instance is busy
        late = asyncio.ensure_future(b.infer(feeds(1, 2.0), timeout_s=0.05))
        queued = asyncio.ensure_future(b.infer(feeds(1, 3.0)))
        await wait_until(lambda: b.depth == 2)
        with pytest.raises(Overloaded):
            await b.infer(feeds(1, 4.0))
        with pytest.raises(Timeout):
            await late
        gate.set()
        assert (await first).outputs[0][0, 0] == 2.0
        assert (await queued).outputs[0][0, 0] == 6.0
        await b.stop()
        assert rec.calls == [1, 1]  # the timed-out request was dropped before it ran
        assert b.stats.rejected == 1 and b.stats.timed_out == 1

    run(body())


def test_a_started_batcher_cannot_be_swapped() -> None:
    async def body() -> None:
        b = DynamicBatcher("m", [Recorder()])
        await b.start()
        with pytest.raises(RuntimeError, match="already started"):
            ServeBatcher.like(b)
        await b.stop()

    run(body())
