"""The dynamic batcher on its own, with fake runners: coalescing, bounds, timeouts, dropped work."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from cvdeploy.serve.batching import BatcherClosed, ClientGone, DynamicBatcher, Feeds
from cvdeploy.serve.errors import Overloaded, Timeout

from .conftest import run


class Recorder:
    """A runner that doubles its input and records the rows of every call; can be held with a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, feeds_list: Sequence[Feeds]) -> list[np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        x = np.concatenate([f["x"] for f in feeds_list])
        self.calls.append(x.shape[0])
        return [x * 2, x.sum(axis=tuple(range(1, x.ndim)))]


def feeds(rows: int, value: float, shape: tuple[int, ...] = (3,)) -> Feeds:
    return {"x": np.full((rows, *shape), value, np.float32)}


async def wait_until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.005)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_concurrent_requests_are_coalesced_and_split_back() -> None:
    async def body() -> None:
        rec = Recorder()
        b = DynamicBatcher("m", [rec], max_batch_size=8, max_queue_delay_s=5.0)
        await b.start()
        results = await asyncio.gather(*(b.infer(feeds(r, float(i))) for i, r in enumerate([1, 2, 1, 3, 1])))
        await b.stop()
        assert rec.calls == [8]  # one call, filled to max_batch_size without waiting the full delay
        for i, (r, res) in enumerate(zip([1, 2, 1, 3, 1], results, strict=True)):
            assert res.outputs[0].shape == (r, 3)
            np.testing.assert_array_equal(res.outputs[0], 2.0 * i)
            np.testing.assert_array_equal(res.outputs[1], 3.0 * i)
            assert res.batch_rows == 8
        assert b.stats.batch_rows == {8: 1} and b.stats.requests_per_batch == {5: 1}

    run(body())


def test_different_shapes_are_never_mixed() -> None:
    async def body() -> None:
        rec = Recorder()
        b = DynamicBatcher("m", [rec], max_batch_size=4, max_queue_delay_s=0.05)
        await b.start()
        jobs = [b.infer(feeds(1, 1.0, (3,))), b.infer(feeds(1, 1.0, (5,))), b.infer(feeds(1, 1.0, (3,)))]
        res = await asyncio.gather(*jobs)
        await b.stop()
        assert sorted(rec.calls) == [1, 2]
        assert [r.outputs[0].shape for r in res] == [(1, 3), (1, 5), (1, 3)]

    run(body())


@pytest.mark.parametrize("max_batch_size", [0, 1])
def test_no_batching_runs_one_request_per_call(max_batch_size: int) -> None:
    async def body() -> None:
        rec = Recorder()
        b = DynamicBatcher("m", [rec], max_batch_size=max_batch_size, max_queue_delay_s=0.05)
        await b.start()
        await asyncio.gather(*(b.infer(feeds(1, 1.0)) for _ in range(4)))
        await b.stop()
        assert rec.calls == [1, 1, 1, 1]

    run(body())


def test_full_queue_is_refused_with_retry_after() -> None:
    async def body() -> None:
        gate = threading.Event()
        rec = Recorder(gate)
        b = DynamicBatcher("m", [rec], max_batch_size=1, queue_size=2)
        await b.start()
        first = asyncio.ensure_future(b.infer(feeds(1, 1.0)))
        await wait_until(rec.entered.is_set)  # the only instance is now busy
        queued = [asyncio.ensure_future(b.infer(feeds(1, 1.0))) for _ in range(2)]
        await wait_until(lambda: b.depth == 2)
        with pytest.raises(Overloaded) as err:
            await b.infer(feeds(1, 1.0))
        assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"
        gate.set()
        await asyncio.gather(first, *queued)
        await b.stop()
        assert b.stats.rejected == 1 and len(rec.calls) == 3

    run(body())


def test_timed_out_requests_are_answered_and_never_run() -> None:
    async def body() -> None:
        gate = threading.Event()
        rec = Recorder(gate)
        b = DynamicBatcher("m", [rec], max_batch_size=1)
        await b.start()
        first = asyncio.ensure_future(b.infer(feeds(1, 1.0)))
        await wait_until(rec.entered.is_set)
        with pytest.raises(Timeout):
            await b.infer(feeds(1, 7.0), timeout_s=0.05)
        gate.set()
        await first
        await b.stop()
        assert rec.calls == [1]  # the timed-out request was dropped from the queue
        assert b.stats.timed_out >= 1

    run(body())


def test_work_is_dropped_when_the_client_has_gone() -> None:
    async def body() -> None:
        gate = threading.Event()
        rec = Recorder(gate)
        b = DynamicBatcher("m", [rec], max_batch_size=1)
        await b.start()
        first = asyncio.ensure_future(b.infer(feeds(1, 1.0)))
        await wait_until(rec.entered.is_set)
        gone: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        second = asyncio.ensure_future(b.infer(feeds(1, 2.0), gone=gone))
        await wait_until(lambda: b.depth == 1)
        gone.set_result(True)
        with pytest.raises(ClientGone):
            await second
        gate.set()
        await first
        await b.stop()
        assert rec.calls == [1] and b.stats.dropped == 1

    run(body())


def test_stop_drains_queued_requests_then_refuses_new_ones() -> None:
    async def body() -> None:
        gate = threading.Event()
        rec = Recorder(gate)
        b = DynamicBatcher("m", [rec], max_batch_size=2, max_queue_delay_s=0.0)
        await b.start()
        jobs = [asyncio.ensure_future(b.infer(feeds(1, float(i)))) for i in range(5)]
        await wait_until(rec.entered.is_set)
        stopping = asyncio.ensure_future(b.stop(drain=True))
        await asyncio.sleep(0)
        with pytest.raises(BatcherClosed):
            b.submit(feeds(1, 0.0))
        gate.set()
        await stopping
        results = await asyncio.gather(*jobs)
        assert [float(r.outputs[0][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]
        assert sum(rec.calls) == 5

    run(body())


def test_runner_errors_reach_every_request_of_the_batch() -> None:
    def broken(feeds_list: Sequence[Feeds]) -> list[np.ndarray]:
        raise RuntimeError("runtime exploded")

    async def body() -> None:
        b = DynamicBatcher("m", [broken], max_batch_size=4, max_queue_delay_s=1.0)
        await b.start()
        res = await asyncio.gather(*(b.infer(feeds(1, 1.0)) for _ in range(4)), return_exceptions=True)
        await b.stop()
        assert all(isinstance(r, RuntimeError) for r in res)

    run(body())


def test_several_instances_run_batches_side_by_side() -> None:
    async def body() -> None:
        gate = threading.Event()
        recs = [Recorder(gate), Recorder(gate)]
        b = DynamicBatcher("m", recs, max_batch_size=1)
        await b.start()
        jobs = [asyncio.ensure_future(b.infer(feeds(1, 1.0))) for _ in range(2)]
        await wait_until(lambda: all(r.entered.is_set() for r in recs))  # both busy at once
        gate.set()
        await asyncio.gather(*jobs)
        await b.stop()
        assert [len(r.calls) for r in recs] == [1, 1]

    run(body())


def test_a_lone_client_never_waits_for_company() -> None:
    async def body() -> list[float]:
        b = DynamicBatcher("m", [Recorder()], max_batch_size=8, max_queue_delay_s=30.0)
        await b.start()
        waits = [(await b.infer(feeds(1, 1.0))).queue_s for _ in range(3)]
        await b.stop()
        return waits

    assert max(run(body())) < 30.0  # sequential requests are not held for the 30 s queue delay
