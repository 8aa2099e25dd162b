"""Every request document the server accepts, as pydantic models: types, ranges and names checked once.

    parse_json(data, what)                bytes → JSON value; invalid, too deep, NaN/Infinity → 400
    parse_document(Model, data, what)     bytes → a validated Model; any problem → one-line 400
    validate_document(Model, value, what) an already-parsed value (query or form fields) → Model

    V2InferenceRequest     Open Inference Protocol v2 inference header (inputs, outputs, parameters, id)
    LoadRequest            POST /v2/repository/models/NAME/load (keys at the top or in "parameters")
    UnloadRequest          POST /v2/repository/models/NAME/unload
    RollbackRequest        POST /v2/repository/models/NAME/rollback (no parameters)
    IndexRequest           POST /v2/repository/index
    Overrides              conf, iou, max_det (query, form, or Vertex "parameters")
    InstancesRequest       Vertex AI / SageMaker {"instances": [...], "parameters": {...}}

Unknown names are refused with the names that are known there; numbers are finite and in range;
whole numbers are whole (``1.9`` is not a version); JSON nesting is bounded by the parser (a
100,000-deep document is refused, not a ``RecursionError``) and so are integers (5,000 digits
are refused, not a ``ValueError``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from cvdeploy.serve.errors import BadRequest

M = TypeVar("M", bound=BaseModel)

MAX_NAME = 256  # model, tensor, artifact names and request ids
MAX_PATH = 4096
Version = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
Dim = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- Open Inference Protocol v2 --------------------------------------------------------------------


class V2InputParameters(_Doc):
    binary_data_size: Annotated[StrictInt, Field(ge=0, le=1 << 40)] | None = None


class V2Input(_Doc):
    name: Name
    shape: Annotated[list[Dim], Field(max_length=16)]
    datatype: Annotated[str, Field(max_length=16)]
    data: list[Any] | None = None
    parameters: V2InputParameters | None = None


class V2OutputParameters(_Doc):
    binary_data: StrictBool | None = None


class V2Output(_Doc):
    name: Name
    parameters: V2OutputParameters | None = None


class V2RequestParameters(_Doc):
    binary_data_output: StrictBool | None = None
    timeout: Annotated[StrictInt, Field(ge=0, le=3_600_000_000)] | None = None  # microseconds (Triton)


class V2InferenceRequest(_Doc):
    id: Annotated[str, Field(max_length=MAX_NAME)] | None = None
    inputs: Annotated[list[V2Input], Field(min_length=1, max_length=64)]
    outputs: Annotated[list[V2Output], Field(max_length=64)] | None = None
    parameters: V2RequestParameters | None = None


# ---- model repository ------------------------------------------------------------------------------


class LoadParameters(_Doc):
    path: Annotated[str, Field(min_length=1, max_length=MAX_PATH)] | None = None
    bundle: Annotated[str, Field(min_length=1, max_length=MAX_PATH)] | None = None  # an alias of path
    version: Version | None = None
    artifact: Name | None = None


class LoadRequest(LoadParameters):
    """Keys at the top level or in ``parameters`` (as tritonclient sends them); the top level wins."""

    parameters: LoadParameters | None = None

    def merged(self) -> LoadParameters:
        inner = self.parameters.model_dump(exclude_none=True) if self.parameters else {}
        outer = self.model_dump(exclude_none=True, exclude={"parameters"})
        return LoadParameters(**{**inner, **outer})


class UnloadParameters(_Doc):
    version: Version | None = None
    unload_dependents: StrictBool | None = None  # tritonclient sends it; a model here has no dependents


class UnloadRequest(UnloadParameters):
    parameters: UnloadParameters | None = None

    def merged(self) -> UnloadParameters:
        inner = self.parameters.model_dump(exclude_none=True) if self.parameters else {}
        outer = self.model_dump(exclude_none=True, exclude={"parameters"})
        return UnloadParameters(**{**inner, **outer})


class _NoParameters(_Doc):
    pass


class RollbackRequest(_Doc):
    parameters: _NoParameters | None = None


class IndexRequest(_Doc):
    ready: StrictBool | None = None


# ---- image API and cloud contracts -----------------------------------------------------------------


class Overrides(_Doc):
    """Decoding thresholds a request may change; ``conf``/``iou`` in [0, 1], ``max_det`` 1..100,000."""

    conf: Fraction | None = None
    iou: Fraction | None = None
    max_det: Annotated[int, Field(ge=1, le=100_000)] | None = None

    def values(self) -> dict[str, float | int]:
        return self.model_dump(exclude_none=True)


class InstancesRequest(_Doc):
    instances: Annotated[list[Any], Field(min_length=1)]
    parameters: Overrides | None = None


# ---- parsing ---------------------------------------------------------------------------------------


def parse_json(data: bytes | str, what: str = "request body") -> Any:
    """Parse strict JSON (no NaN/Infinity tokens, bounded nesting and number size) or answer 400."""
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON ({exc})") from None


def parse_document(model: type[M], data: bytes | str, what: str) -> M:
    """Bytes → a validated ``model``; an empty body counts as ``{}``."""
    value = parse_json(data, what) if data.strip() else {}
    return validate_document(model, value, what)


def validate_document(model: type[M], value: Any, what: str) -> M:
    """A parsed value → ``model``, or a one-line 400 naming the place, the problem and the known names."""
    if not isinstance(value, Mapping):
        raise BadRequest(f"{what} must be a JSON object; known fields: {', '.join(_known(model))}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise BadRequest(describe(exc, model, what)) from None
    except RecursionError:  # a deeply nested value that came from somewhere other than parse_json
        raise BadRequest(f"{what} is nested too deeply") from None


def describe(exc: ValidationError, model: type[BaseModel], what: str) -> str:
    """The first validation error as one line."""
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    where = _where(loc)
    if err["type"] == "extra_forbidden":
        known = _known(_model_at(model, loc[:-1]))
        return (
            f"{what}: unknown parameter '{_clip(str(loc[-1]))}'"
            + (f" in {_where(loc[:-1])}" if loc[:-1] else "")
            + f"; known: {', '.join(known) or 'none'}"
        )
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {_clip(repr(got))})"
    return f"{what}: {where + ': ' if where else ''}{msg}{shown}"


def _where(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return _clip(out)


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _known(model: type[BaseModel] | None) -> list[str]:
    return sorted(model.model_fields) if model is not None else []


def _model_at(root: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` (field names and list indices) from ``root``."""
    node: Any = root
    for part in loc:
        node = _unwrap(node)
        if isinstance(part, int):
            args = typing.get_args(node)
            node = args[0] if typing.get_origin(node) is list and args else None
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        else:
            return None
    node = _unwrap(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(node: Any) -> Any:
    """``Annotated[X, ...]`` → X; ``X | None`` → X."""
    while True:
        origin = typing.get_origin(node)
        if origin is Annotated:
            node = typing.get_args(node)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(node) if a is not type(None)]
            if len(args) != 1:
                return node
            node = args[0]
        else:
            return node
