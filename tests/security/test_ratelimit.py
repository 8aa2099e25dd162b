"""Token buckets per principal and per source (429 + Retry-After), and the failed-authentication slowdown."""

from __future__ import annotations

import pytest

from cvdeploy.errors import ConfigError
from cvdeploy.security.errors import TooManyRequests
from cvdeploy.security.ratelimit import FailedAuthThrottle, Rate, RateLimiter


def test_bucket_allows_the_burst_then_refuses_with_the_computed_retry_after(clock) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(Rate(2, 4), None, clock)
    for _ in range(4):
        limiter.check("key:a", "1.1.1.1")
    with pytest.raises(TooManyRequests) as err:
        limiter.check("key:a", "1.1.1.1")
    assert err.value.status == 429 and err.value.headers == {"Retry-After": "1"}  # 1 token at 2/s: 0.5 s → 1
    clock.advance(0.5)
    limiter.check("key:a", "1.1.1.1")
    limiter.check("key:b", "1.1.1.1")  # another principal has its own bucket


def test_retry_after_rounds_up_the_wait(clock) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(Rate(0.2, 1), None, clock)  # one request per 5 s
    limiter.check("p", None)
    clock.advance(1.5)
    with pytest.raises(TooManyRequests) as err:
        limiter.check("p", None)
    assert err.value.retry_after_s == 4  # 3.5 s left → 4


def test_per_source_limit_spans_principals_and_a_refusal_takes_nothing(clock) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(Rate(100, 100), Rate(1, 2), clock)
    limiter.check("key:a", "6.6.6.6")
    limiter.check("key:b", "6.6.6.6")
    with pytest.raises(TooManyRequests, match="source address"):
        limiter.check("key:c", "6.6.6.6")
    limiter.check("key:c", "7.7.7.7")
    # key:c's own bucket was not drained by the refused request: 100 more fit from another address
    for i in range(99):
        limiter.check("key:c", f"10.0.0.{i}")


def test_anonymous_callers_are_limited_per_source_only(clock) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(Rate(1, 1), Rate(1, 1), clock)
    limiter.check(None, "1.1.1.1")
    limiter.check(None, "2.2.2.2")  # no shared 'anonymous' bucket to exhaust
    with pytest.raises(TooManyRequests):
        limiter.check(None, "1.1.1.1")


def test_idle_buckets_are_pruned_so_memory_stays_bounded(clock) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(Rate(10, 10), None, clock, max_entries=50)
    for i in range(500):
        limiter.check(f"key:{i}", None)
        clock.advance(0.01)
    assert limiter._principals is not None and len(limiter._principals.items) <= 50


@pytest.mark.parametrize(("text", "rate", "burst"), [("20/s", 20, 20), ("600/min", 10, 10), ("20/s,burst=40", 20, 40),
                                                     ("1/h", 1 / 3600, 1)])  # fmt: skip
def test_rate_parsing(text: str, rate: float, burst: float) -> None:
    r = Rate.parse(text)
    assert r.rate == pytest.approx(rate) and r.burst == burst


@pytest.mark.parametrize("text", ["fast", "10/week", "0/s", "5/s,burst=0"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ConfigError):
        Rate.parse(text)


def test_failed_authentications_slow_a_source_down_exponentially(clock) -> None:  # type: ignore[no-untyped-def]
    t = FailedAuthThrottle(free=3, base_s=1, max_s=8, window_s=600, clock=clock)
    for _ in range(3):
        t.check("9.9.9.9")
        t.failure("9.9.9.9")
        clock.advance(0.1)
    delays = []
    for _ in range(5):
        with pytest.raises(TooManyRequests) as err:
            t.check("9.9.9.9")
        delays.append(t.delay("9.9.9.9"))
        assert err.value.headers["Retry-After"] == str(max(1, int(-(-delays[-1] // 1))))
        clock.advance(delays[-1])
        t.check("9.9.9.9")  # allowed again once the penalty passed
        t.failure("9.9.9.9")
    assert delays == pytest.approx([0.9, 2, 4, 8, 8])  # doubling, capped at max_s
    t.check("8.8.8.8")  # other sources are unaffected
    clock.advance(601)
    t.check("9.9.9.9")  # failures leave the window
    assert t.delay("9.9.9.9") == 0
