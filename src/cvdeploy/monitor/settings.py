"""How monitoring behaves: the ``monitor:`` section of the server configuration, and durations.

    monitor:
      sample: 0.05          share of requests whose stage I/O is stored (--monitor-sample)
      retention: 7d         rows older than this are deleted (--monitor-retention)
      redact: false         never store pixels of a request, not even a thumbnail (--redact)
      window: 15m           the rolling window the gauges and the console compare with the profile
      refresh_s: 15         how often the drift and output gauges are recomputed
      alpha: 0.01           significance level of a drift test (Holm-adjusted over the features)
      min_effect: 0.3       smallest Cramér's V that counts as drift (0.1 small, 0.3 medium, 0.5 large)
      min_requests: 20      a window with fewer images is not tested
      thumbnail_px: 256     longest side of a stored thumbnail

Durations are written ``90s``, ``15m``, ``24h``, ``7d`` or ``2w`` (a bare number is seconds).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cvdeploy.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.ASCII)
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """``"15m"`` → 900.0 seconds; a bad value raises one-line :class:`ConfigError` naming ``what``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if m is None:
            raise ConfigError(f"{what} {str(text)[:40]!r} is not a duration: write e.g. 90s, 15m, 24h or 7d")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not seconds > 0:
        raise ConfigError(f"{what} must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """900 → ``"15m"``; the largest unit that divides the value, else seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class MonitorConfig(BaseModel):
    """The ``monitor:`` section (see the module docstring); flags win over the file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    sample: float = Field(0.05, ge=0.0, le=1.0)
    retention: str = "7d"
    redact: bool = False
    window: str = "15m"
    refresh_s: float = Field(15.0, ge=1.0, le=3600.0)
    alpha: float = Field(0.01, gt=0.0, lt=0.5)
    min_effect: float = Field(0.3, ge=0.0, le=1.0)
    min_requests: int = Field(20, ge=2, le=100_000)
    thumbnail_px: int = Field(256, ge=32, le=1024)

    @field_validator("retention", "window")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def retention_s(self) -> float:
        return parse_duration(self.retention, "monitor.retention")

    @property
    def window_s(self) -> float:
        return parse_duration(self.window, "monitor.window")
