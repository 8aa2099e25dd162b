"""JSON output for reports: numpy values, dataclasses and paths made serialisable, written atomically."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, dataclasses, tuples and paths to JSON types.

    Non-finite floats become ``None`` (JSON has no NaN).
    """
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a core dependency
        return str(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """``obj`` (or ``obj.to_dict()``) as a JSON string."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(obj: Any, path: str | Path, indent: int | None = 2) -> Path:
    """Write ``obj`` (or ``obj.to_dict()``) as JSON to ``path``, creating parent folders."""
    return write_text(dumps(obj, indent), path)


def write_text(text: str, path: str | Path) -> Path:
    """Write text through a temporary file and rename, so a reader never sees half a report."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
    return p
