"""Tensors as every protocol hands them to the service: named arrays with a datatype, checked against
the model's inputs (the contract), and the answer with its count of non-finite values.

Datatype names are the Open Inference Protocol's (``FP32``, ``INT64``, ...): a small, transport-free
vocabulary that Triton, KServe and the cloud contracts share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvdeploy.runtimes import TensorInfo
from cvdeploy.serve.errors import BadRequest, PayloadTooLarge

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}  # fmt: skip
NUMPY_TO_DATATYPE = {dt.name: name for name, dt in DATATYPES.items()}


def datatype(dtype: str) -> str:
    """``"float32"`` → ``"FP32"``; unknown numpy types keep their name upper-cased."""
    try:
        return NUMPY_TO_DATATYPE.get(np.dtype(dtype).name, dtype.upper())
    except TypeError:
        return dtype.upper()


def dims(shape: Sequence[int | str | None]) -> list[int]:
    """A model's shape with every dynamic dimension as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


@dataclass
class TensorInput:
    """One input: ``array`` has ``shape`` and the numpy type of ``datatype``."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class TensorRequest:
    """Inputs, the outputs wanted (None: all, in the model's order) and an optional own timeout."""

    inputs: list[TensorInput]
    outputs: list[str] | None = None
    timeout_s: float | None = None


@dataclass
class TensorResult:
    """The outputs asked for, in order, with how many values of each are NaN or ±Inf."""

    model: str
    version: int
    outputs: list[tuple[str, np.ndarray]]
    non_finite: dict[str, int] = field(default_factory=dict)


def element_count(name: str, shape: Sequence[int], itemsize: int, max_bytes: int) -> int:
    """Values a shape holds; an empty tensor, or one larger than ``max_bytes``, is refused here, before
    anything is allocated or reshaped (Python integers: a 2**64 dimension cannot overflow)."""
    if any(d == 0 for d in shape):
        raise BadRequest(f"input {name!r} is empty (shape {list(shape)})")
    count = math.prod(shape)
    if count * itemsize > max_bytes:
        raise PayloadTooLarge(
            f"input {name!r} of shape {list(shape)} would take {count * itemsize:,} bytes, "
            f"over the request limit of {max_bytes:,} (limits.max_body_bytes)"
        )
    return count


def array_from_data(name: str, data: Any, dt: str, shape: Sequence[int], max_bytes: int) -> np.ndarray:
    """JSON ``data`` (flat or nested, row-major) → an array of ``shape``; 400 when it does not fit."""
    if dt not in DATATYPES:
        raise BadRequest(f"input {name!r}: unknown datatype {dt!r}; use one of {', '.join(DATATYPES)}")
    dtype = DATATYPES[dt]
    count = element_count(name, shape, dtype.itemsize, max_bytes)
    try:
        arr = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"input {name!r}: 'data' is not a list of {dt} values") from None
    if arr.size != count:
        raise BadRequest(
            f"input {name!r}: 'data' holds {arr.size} values but shape {list(shape)} needs {count}"
        )
    return arr.reshape(shape)


def validate_inputs(
    req: TensorRequest, model: str, inputs: Sequence[TensorInfo], max_batch: int
) -> dict[str, np.ndarray]:
    """Check names, datatypes and shapes against the model's inputs; → feeds.

    ``max_batch`` is the rows one request may carry (0: the model has no batch dimension); more is
    refused with 413 saying the limit, before anything is queued.
    """
    expected = {t.name: t for t in inputs}
    given = [inp.name for inp in req.inputs]
    unknown = [n for n in given if n not in expected]
    if unknown:
        raise BadRequest(
            f"model {model!r} has no input {unknown[0]!r}; its inputs are: {', '.join(expected)}"
        )
    if len(set(given)) != len(given):
        raise BadRequest("an input is given twice")
    missing = [n for n in expected if n not in given]
    if missing:
        raise BadRequest(
            f"model {model!r} needs input {missing[0]!r} too; its inputs are: {', '.join(expected)}"
        )
    feeds: dict[str, np.ndarray] = {}
    batch: int | None = None
    for inp in req.inputs:
        info = expected[inp.name]
        want_type = datatype(info.dtype)
        if inp.datatype != want_type:
            raise BadRequest(f"input {inp.name!r} must be {want_type}, got {inp.datatype}")
        want = dims(info.shape)
        if len(inp.shape) != len(want) or any(
            w >= 0 and w != g for w, g in zip(want, inp.shape, strict=True)
        ):
            raise BadRequest(f"input {inp.name!r} must have shape {want} (-1: any), got {inp.shape}")
        if max_batch:
            rows = inp.shape[0]
            if rows > max_batch:
                raise PayloadTooLarge(
                    f"input {inp.name!r}: a batch of {rows} rows is over this model's limit of {max_batch} "
                    "per request (max_batch_size); split the request"
                )
            if batch is not None and rows != batch:
                raise BadRequest(f"inputs disagree on the batch size ({batch} vs {rows})")
            batch = rows
        feeds[inp.name] = inp.array
    return feeds


def count_non_finite(arrays: Sequence[tuple[str, np.ndarray]]) -> dict[str, int]:
    """``{name: number of NaN/±Inf values}`` for the float arrays that hold any."""
    out: dict[str, int] = {}
    for name, arr in arrays:
        if arr.dtype.kind in "fc" and arr.size and not np.isfinite(arr).all():
            out[name] = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    return out
