"""Rate limits per principal and per source address, and a slowdown after failed authentications.

:class:`RateLimiter` keeps one token bucket per principal and one per source address: each request
takes a token from both; a bucket refills at ``rate`` tokens per second up to ``burst``. An empty
bucket refuses with :class:`TooManyRequests` and ``Retry-After`` = the seconds until it holds a
token again (rounded up). :class:`FailedAuthThrottle` counts failed authentications per source in a
sliding window: after ``free`` failures, the source must wait ``base_s · 2^(n − free)`` seconds
(capped at ``max_s``) after its latest failure before it may try again — refused meanwhile with 429,
before any credential is even looked at.

Both are in memory, per server process (a restart forgets them), bounded (idle entries are pruned),
thread-safe, and take their clock as an argument so tests need no sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from cvdeploy.errors import ConfigError
from cvdeploy.security.errors import TooManyRequests

__all__ = ["FailedAuthThrottle", "Rate", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Rate:
    """``rate`` tokens per second, at most ``burst`` at once."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ConfigError(f"rate limit {self.rate}/s burst {self.burst}: rate must be > 0 and burst >= 1")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"20/s"``, ``"600/min"``, optionally ``",burst=40"`` (default burst: one second's worth, ≥ 1)."""
        head, _, tail = text.partition(",")
        try:
            count, _, unit = head.strip().partition("/")
            per = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit.strip() or "s"]
            rate = float(count) / per
            burst = float(tail.split("=", 1)[1]) if tail.strip().startswith("burst=") else max(1.0, rate)
        except (KeyError, ValueError, IndexError):
            raise ConfigError(f"rate limit {text!r}: write it as 20/s, 600/min or 20/s,burst=40") from None
        return cls(rate, burst)


class TokenBucket:
    """One bucket; ``take`` returns 0 when a token was taken, else the seconds until one is there."""

    __slots__ = ("rate", "stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.rate.burst, self.tokens + (now - self.stamp) * self.rate.rate)
            self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.rate.burst


class _Buckets:
    def __init__(self, rate: Rate, max_entries: int) -> None:
        self.rate = rate
        self.max_entries = max_entries
        self.items: OrderedDict[str, TokenBucket] = OrderedDict()

    def get(self, key: str, now: float) -> TokenBucket:
        b = self.items.get(key)
        if b is None:
            if len(self.items) >= self.max_entries:
                self._prune(now)
            b = self.items[key] = TokenBucket(self.rate, now)
        self.items.move_to_end(key)
        return b

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self.items.items() if b.full(now)]:
            del self.items[key]
        while len(self.items) >= self.max_entries:  # still full of busy clients: forget the oldest
            self.items.popitem(last=False)


class RateLimiter:
    """Token buckets per principal and per source address (either may be None: not limited)."""

    def __init__(
        self,
        per_principal: Rate | None = Rate(50, 100),
        per_source: Rate | None = Rate(100, 200),
        clock: Clock = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self._principals = _Buckets(per_principal, max_entries) if per_principal else None
        self._sources = _Buckets(per_source, max_entries) if per_source else None
        self.clock = clock
        self._lock = threading.Lock()

    def check(self, principal: str | None, source: str | None) -> None:
        """Take one token for ``principal`` and one for ``source``, or raise :class:`TooManyRequests`.

        Nothing is taken when either is refused, so a refused request does not drain the other bucket.
        """
        now = self.clock()
        with self._lock:
            buckets = []
            if self._principals is not None and principal is not None:
                buckets.append(("principal", self._principals.get(principal, now)))
            if self._sources is not None and source:
                buckets.append(("source address", self._sources.get(source, now)))
            waits = [(b.take(now), what, b) for what, b in buckets]
            refused = [(w, what) for w, what, _ in waits if w > 0]
            if refused:
                for w, _, b in waits:  # give back what was taken
                    if w == 0:
                        b.tokens += 1.0
                wait, what = max(refused)
                raise TooManyRequests(f"rate limit of this {what} reached; retry after {wait:.1f} s", wait)


class FailedAuthThrottle:
    """Slows a source down after repeated failed authentications (see the module docstring)."""

    def __init__(
        self,
        free: int = 5,
        base_s: float = 1.0,
        max_s: float = 300.0,
        window_s: float = 900.0,
        clock: Clock = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.window_s = window_s
        self.clock = clock
        self.max_entries = max_entries
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, source: str, now: float) -> deque[float]:
        q = self._failures.get(source)
        if q is None:
            return deque()
        while q and now - q[0] > self.window_s:
            q.popleft()
        if not q:
            del self._failures[source]
        return q

    def delay(self, source: str) -> float:
        """Seconds ``source`` must still wait before its next attempt (0: it may try now)."""
        now = self.clock()
        with self._lock:
            q = self._recent(source, now)
            if len(q) < self.free:
                return 0.0
            penalty = min(self.max_s, self.base_s * 2 ** (len(q) - self.free))
            return max(0.0, q[-1] + penalty - now)

    def check(self, source: str) -> None:
        """Raise :class:`TooManyRequests` while ``source`` is being slowed down."""
        wait = self.delay(source)
        if wait > 0:
            raise TooManyRequests(
                f"too many failed authentications from this address; retry after {wait:.0f} s", wait
            )

    def failure(self, source: str) -> None:
        now = self.clock()
        with self._lock:
            q = self._failures.get(source)
            if q is None:
                if len(self._failures) >= self.max_entries:
                    self._failures.popitem(last=False)
                q = self._failures[source] = deque(maxlen=64)
            q.append(now)
            self._failures.move_to_end(source)
