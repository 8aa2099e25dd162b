"""What a benchmark measures: one configuration (a cell of a sweep) and the settings of a whole run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy.errors import ConfigError

BUDGET_STATS = ("p50", "p90", "p95", "p99", "mean", "max")
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration: artifact × image size × batch × threads × concurrency × device.

    ``threads`` is the runtime's intra-op thread count (``None``: the engine's default);
    ``concurrency`` requests are kept in flight over ``sessions`` loaded copies of the model.
    """

    artifact: str
    runtime: str
    precision: str
    imgsz: tuple[int, int]
    batch: int = 1
    threads: int | None = None
    concurrency: int = 1
    sessions: int = 1
    device: str = "cpu"

    @property
    def key(self) -> str:
        """A stable, readable identity used to match configurations across reports."""
        h, w = self.imgsz
        parts = [
            self.artifact,
            f"{h}x{w}",
            f"b{self.batch}",
            f"t{self.threads or 'auto'}",
            f"c{self.concurrency}",
        ]
        if self.sessions > 1:
            parts.append(f"s{self.sessions}")
        if self.device != "cpu":
            parts.append(self.device)
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["imgsz"] = list(self.imgsz)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["imgsz"] = tuple(int(v) for v in d["imgsz"])
        return cls(**kw)


@dataclass
class BenchSettings:
    """Everything ``run_bench`` can be asked to do; empty lists mean "the bundle's default".

    ``images``: a folder or list of image files (``None``: bundled sample photographs).
    ``runs``/``duration_s``: a fixed number of measured runs, a time budget per configuration, or
    both (whichever ends first). ``budget_ms``/``min_map`` ask for a recommendation.
    """

    artifacts: list[str] = field(default_factory=list)
    runtimes: list[str] = field(default_factory=list)
    imgsz: list[tuple[int, int]] = field(default_factory=list)
    batch: list[int] = field(default_factory=lambda: [1])
    threads: list[int | None] = field(default_factory=lambda: [None])
    concurrency: list[int] = field(default_factory=lambda: [1])
    sessions: int = 1
    runs: int | None = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    duration_s: float | None = None
    images: str | Path | Sequence[str | Path] | None = None
    num_images: int = 8
    device: str = "cpu"
    profile: bool = False
    profile_top: int = 15
    budget_ms: float | None = None
    min_map: float | None = None
    budget_stat: str = "p95"
    metric: str = "mAP50-95"
    spinning: str = "auto"  # auto (on for one request at a time, off under concurrency) | on | off

    def spinning_flag(self) -> bool | None:
        """``RuntimeOptions.spinning`` for this setting (None: decided by the concurrency)."""
        return {"auto": None, "on": True, "off": False}[self.spinning]

    def validate(self) -> BenchSettings:
        """Normalise aliases and refuse impossible values with a one-line reason."""
        self.runtimes = [normalize_runtime(r) for r in self.runtimes]
        if self.runs is not None and self.runs < 1:
            raise ConfigError(f"--runs must be at least 1, not {self.runs}")
        if self.runs is None and not self.duration_s:
            raise ConfigError("give a number of runs (--runs) or a time budget (--duration)")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration must be positive, not {self.duration_s}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup cannot be negative ({self.warmup})")
        for what, values in (("--batch", self.batch), ("--concurrency", self.concurrency)):
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"{what} values must be positive whole numbers, got {values}")
        if any(t is not None and t < 1 for t in self.threads):
            raise ConfigError(f"--threads values must be positive, got {self.threads}")
        if self.sessions < 1:
            raise ConfigError(f"--sessions must be at least 1, not {self.sessions}")
        if self.budget_stat not in BUDGET_STATS:
            raise ConfigError(f"--budget-stat {self.budget_stat!r}: use one of {', '.join(BUDGET_STATS)}")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise ConfigError(f"--budget-ms must be positive, not {self.budget_ms}")
        if self.min_map is not None and not 0.0 <= self.min_map <= 1.0:
            raise ConfigError(f"--min-map is in mAP points, 0-100 (e.g. 60), not {100 * self.min_map:g}")
        if self.num_images < 1:
            raise ConfigError("need at least one image")
        if self.spinning not in ("auto", "on", "off"):
            raise ConfigError(f"--spinning {self.spinning!r}: use auto, on or off")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["imgsz"] = [list(s) for s in self.imgsz]
        if self.images is not None and not isinstance(self.images, str | Path):
            d["images"] = [str(p) for p in self.images]
        elif self.images is not None:
            d["images"] = str(self.images)
        return d


def normalize_runtime(name: str) -> str:
    """``onnx``/``ort`` → ``onnxruntime``, ``ov`` → ``openvino``; unknown names are a ConfigError."""
    from cvdeploy.runtimes.registry import normalize

    return normalize(name)


def parse_sizes(value: str | None) -> list[tuple[int, int]]:
    """``"320,480,640"`` → square sizes; ``"480x640,640"`` → (480, 640) and (640, 640) as (height, width)."""
    if not value:
        return []
    sizes: list[tuple[int, int]] = []
    for token in value.split(","):
        token = token.strip().lower()
        if not token:
            continue
        parts = token.split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--imgsz: {token!r} is not a size (use 640 or 480x640)") from None
        if len(nums) not in (1, 2) or any(n <= 0 for n in nums):
            raise ConfigError(f"--imgsz: {token!r} is not a size (use 640 or 480x640)")
        sizes.append((nums[0], nums[-1]))
    return sizes
