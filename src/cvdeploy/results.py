"""The result types every adapter produces and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Detections:
    """Detections for one image, in original-image pixels.

    xyxy: ``(n, 4)`` float32 x1, y1, x2, y2; confidence: ``(n,)`` float32; class_id: ``(n,)`` int64;
    class_names: the bundle's class list, used to name ``class_id``.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_names: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, class_names: list[str] | None = None) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0,), np.int64),
            class_names or [],
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def name(self, i: int) -> str:
        k = int(self.class_id[i])
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    def to_list(self, decimals: int = 2) -> list[dict[str, Any]]:
        """JSON-ready ``[{"box": [x1, y1, x2, y2], "confidence", "class_id", "class_name"}, ...]``."""
        return [
            {
                "box": [round(float(v), decimals) for v in self.xyxy[i]],
                "confidence": round(float(self.confidence[i]), 5),
                "class_id": int(self.class_id[i]),
                "class_name": self.name(i),
            }
            for i in range(len(self))
        ]

    def filter(self, mask: np.ndarray) -> Detections:
        return Detections(
            self.xyxy[mask], self.confidence[mask], self.class_id[mask], self.class_names, self.data
        )


@dataclass
class Classification:
    """Class probabilities for one image. probs: ``(nc,)`` float32 summing to 1."""

    probs: np.ndarray
    class_names: list[str] = field(default_factory=list)
    top_k: int = 5

    @property
    def top(self) -> list[int]:
        return [int(i) for i in np.argsort(-self.probs, kind="stable")[: self.top_k]]

    @property
    def class_id(self) -> int:
        return int(np.argmax(self.probs))

    def name(self, k: int) -> str:
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    def to_list(self, decimals: int = 5) -> list[dict[str, Any]]:
        """JSON-ready top-k: ``[{"class_id", "class_name", "confidence"}, ...]``."""
        return [
            {"class_id": k, "class_name": self.name(k), "confidence": round(float(self.probs[k]), decimals)}
            for k in self.top
        ]


@dataclass
class RawOutput:
    """Output tensors as the model produced them, for ``raw`` contracts."""

    tensors: list[np.ndarray]
    names: list[str] = field(default_factory=list)

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "shape": list(t.shape), "dtype": str(t.dtype), "data": t.tolist()}
            for n, t in zip(
                self.names or [f"output{i}" for i in range(len(self.tensors))], self.tensors, strict=False
            )
        ]


Result = Detections | Classification | RawOutput
