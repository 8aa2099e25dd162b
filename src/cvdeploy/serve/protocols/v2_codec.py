"""Open Inference Protocol v2 wire format ↔ the service's tensors, binary tensor data extension included.

Binary tensors: when the request has an ``Inference-Header-Content-Length: N`` header, its first
N bytes are the JSON header and the rest the inputs' raw little-endian bytes, in input order, each
input saying its ``parameters.binary_data_size``. Outputs requested with
``parameters.binary_data: true`` (or all, with ``parameters.binary_data_output: true``) come back
the same way. Outputs holding NaN or ±Inf are sent with ``null`` in their JSON ``data`` and
``parameters.non_finite`` (their count) on the output, and a ``parameters.warnings`` line on the
answer; binary outputs carry the IEEE values as they are, with the same flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvdeploy.serve.errors import BadRequest, PayloadTooLarge
from cvdeploy.serve.schemas import V2InferenceRequest, parse_document
from cvdeploy.serve.tensors import (
    DATATYPES,
    NUMPY_TO_DATATYPE,
    TensorInput,
    TensorRequest,
    TensorResult,
    array_from_data,
    element_count,
)

BINARY_HEADER = "inference-header-content-length"


@dataclass
class DecodedRequest:
    """A v2 request as the service takes it, plus what the answer's encoding needs."""

    id: str | None
    tensors: TensorRequest
    binary: dict[str, bool]  # output name → binary; outputs not named use binary_default
    binary_default: bool


def decode_request(
    body: bytes, header_length: str | None, max_bytes: int, max_json_bytes: int
) -> DecodedRequest:
    """The JSON header (and binary tail, when ``Inference-Header-Content-Length`` is given) → tensors."""
    if header_length is not None:
        if not header_length.isascii() or not header_length.strip().isdigit():
            raise BadRequest(f"Inference-Header-Content-Length {header_length[:40]!r} is not a number")
        n = int(header_length)
        if not 0 < n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
        head, tail = body[:n], memoryview(body)[n:]
    else:
        head, tail = body, memoryview(b"")
    if len(head) > max_json_bytes:
        raise PayloadTooLarge(
            f"JSON request header of {len(head):,} bytes is over the limit of {max_json_bytes:,} "
            "(limits.max_json_bytes); send tensors as binary data (Inference-Header-Content-Length)"
        )
    doc = parse_document(V2InferenceRequest, head, "inference request")
    offset = 0
    inputs = []
    for spec in doc.inputs:
        if spec.datatype == "BYTES":
            raise BadRequest(f"input {spec.name!r}: BYTES tensors are not supported by this server")
        if spec.datatype not in DATATYPES:
            raise BadRequest(
                f"input {spec.name!r}: unknown datatype {spec.datatype!r}; use one of {', '.join(DATATYPES)}"
            )
        size = spec.parameters.binary_data_size if spec.parameters else None
        if size is not None:
            if spec.data is not None:
                raise BadRequest(f"input {spec.name!r} has both 'data' and parameters.binary_data_size")
            dtype = DATATYPES[spec.datatype]
            count = element_count(spec.name, spec.shape, dtype.itemsize, max_bytes)
            if size != count * dtype.itemsize:
                raise BadRequest(
                    f"input {spec.name!r}: binary_data_size {size} does not match shape {spec.shape} of "
                    f"{spec.datatype} ({count * dtype.itemsize} bytes)"
                )
            if offset + size > len(tail):
                raise BadRequest(
                    f"input {spec.name!r}: binary data ends after {len(tail) - offset} of {size} bytes"
                )
            arr = np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(spec.shape)
            offset += size
        elif spec.data is not None:
            arr = array_from_data(spec.name, spec.data, spec.datatype, spec.shape, max_bytes)
        else:
            raise BadRequest(f"input {spec.name!r} has neither 'data' nor parameters.binary_data_size")
        inputs.append(TensorInput(spec.name, spec.datatype, list(spec.shape), arr))
    if offset != len(tail):
        raise BadRequest(f"binary data is {len(tail)} bytes but the inputs declare {offset}")
    params = doc.parameters
    binary_default = bool(params and params.binary_data_output)
    outputs, binary = None, {}
    if doc.outputs is not None:
        outputs = [o.name for o in doc.outputs]
        for o in doc.outputs:
            flag = o.parameters.binary_data if o.parameters else None
            binary[o.name] = binary_default if flag is None else flag
    timeout = params.timeout / 1e6 if params and params.timeout else None
    return DecodedRequest(doc.id, TensorRequest(inputs, outputs, timeout), binary, binary_default)


def encode_response(result: TensorResult, req: DecodedRequest) -> tuple[bytes, dict[str, str]]:
    """Outputs → JSON header plus binary tail; returns the body and its headers (content type first)."""
    docs, chunks, warnings = [], [], []
    for name, arr in result.outputs:
        arr = np.ascontiguousarray(arr)
        dt = NUMPY_TO_DATATYPE.get(arr.dtype.name, arr.dtype.name.upper())
        doc: dict[str, Any] = {"name": name, "datatype": dt, "shape": list(arr.shape)}
        bad = result.non_finite.get(name, 0)
        binary = req.binary.get(name, req.binary_default)
        if binary:
            raw = arr.tobytes()
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif bad:
            flat = arr.reshape(-1).astype(object)
            flat[~np.isfinite(arr.reshape(-1))] = None
            doc["data"] = flat.tolist()
        else:
            doc["data"] = arr.reshape(-1).tolist()
        if bad:
            doc.setdefault("parameters", {})["non_finite"] = bad
            warnings.append(
                f"output {name!r} holds {bad} NaN/Inf values" + ("" if binary else ", sent as null")
            )
        docs.append(doc)
    head: dict[str, Any] = {"model_name": result.model, "model_version": str(result.version), "outputs": docs}
    if req.id is not None:
        head["id"] = req.id
    if warnings:
        head["parameters"] = {"warnings": warnings}
    header = json.dumps(head, allow_nan=False).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        BINARY_HEADER: str(len(header)),
    }
