"""The transport-neutral inference service: every protocol is a thin adapter over it.

    protocol adapter (HTTP today: v2, image API, SageMaker, Vertex AI; others later)
        │  wire format → plain arguments, plus a Call: principal, request id, "caller gone" future
        ▼
    InferenceService      authorize, once per action and resource of a call (Security: the pluggable
        │                 authorizer — RBAC, scopes, rate limits — + the anonymous-admin policy)
        │                 → check against the model (names, types, shapes, limits) → batch → result
        │                 → an inference summary to the event sink (audit log): who, model, outcome, counts
        ▼
    ModelRepository (versions, load/unload/rollback, every change reported) · DynamicBatcher · Pipeline

Validation, authorization, limits and metrics happen here, once, whatever the transport; an
authentication backend only has to turn a connection into a :class:`Principal`. A principal
limited to some models (``Principal.models``) sees only those in indexes and listings, and a model
outside its scope is answered exactly like a missing one. Monitoring hooks in as an :class:`Observer`
that sees every answered or failed inference once. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from cvdeploy.decode import Decoder
from cvdeploy.errors import CvdeployError, ImageError, ImageTooLarge
from cvdeploy.images import ImageInfo, decode_image_strict
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.results import Classification, Detections, RawOutput, Result
from cvdeploy.serve.batching import BatcherClosed, ClientGone
from cvdeploy.serve.config import Platform, ServeConfig
from cvdeploy.serve.errors import BadRequest, PayloadTooLarge, ServeError
from cvdeploy.serve.limits import check_image
from cvdeploy.serve.logs import run_with_context
from cvdeploy.serve.metrics import ServeMetrics
from cvdeploy.serve.repository import ModelEntry, ModelRepository, ModelVersion
from cvdeploy.serve.schemas import LoadParameters
from cvdeploy.serve.security import Event, Principal, Security
from cvdeploy.serve.tensors import TensorRequest, TensorResult, count_non_finite, datatype, validate_inputs

log = logging.getLogger("cvdeploy.serve")
T = TypeVar("T")
#: The tasks the image API has a route of their own for (``/v1/models/NAME/<task>``); others use predict.
ROUTED_TASKS = ("detect", "segment", "pose", "obb", "classify")


@dataclass(frozen=True)
class Call:
    """Who calls, and what the transport knows of the call: the request id for logs and audit, a
    future that completes when the caller has gone (its queued work is then dropped), and the
    ledger of ``(action, resource)`` already authorized for this request — Calls of one request
    share it, so an adapter that authorizes before reading a body does not count the request twice."""

    principal: Principal = field(default_factory=Principal.anonymous)
    request_id: str | None = None
    gone: asyncio.Future[Any] | None = None
    authorized: set[tuple[str, str]] = field(default_factory=set, compare=False)


class Observer(Protocol):
    """Sees every inference once, after it is answered or has failed (monitoring plugs in here).

    Called on the event loop: must return at once (queue, do not compute) and should not raise —
    the service logs and ignores an observer's exception, the request is never failed by it.
    ``image``: the decoded BGR image ``(h, w, 3)``, the model input ``(1, ...)``, the raw outputs and
    the decoded result; ``timings``: stage → seconds; ``overridden``: the request changed thresholds.
    """

    def image(self, mv: ModelVersion, image: np.ndarray, tensor: np.ndarray, outputs: Sequence[np.ndarray],
              result: Result, timings: Mapping[str, float], overridden: bool = False,
              request_id: str | None = None) -> None: ...  # fmt: skip

    def tensors(self, mv: ModelVersion, feeds: Mapping[str, np.ndarray], outputs: Sequence[np.ndarray],
                timings: Mapping[str, float], request_id: str | None = None) -> None: ...  # fmt: skip

    def failure(
        self, model: str, version: int | None, status: int, request_id: str | None = None
    ) -> None: ...


@dataclass
class ImagePrediction:
    """One image's result (in original-image pixels), what its header said, and where the time went."""

    model: ModelVersion
    result: Result
    info: ImageInfo
    timings: dict[str, float]
    non_finite: int = 0


@dataclass
class InstancesResult:
    """The answers to a request of several instances, in order: an image's prediction or output arrays."""

    model: ModelVersion
    answers: list[ImagePrediction | dict[str, np.ndarray]]


class InferenceService:
    """Serves the repository's models to any protocol; see the module docstring."""

    def __init__(
        self, config: ServeConfig, platform: Platform, security: Security, metrics: ServeMetrics
    ) -> None:
        self.config = config
        self.platform = platform
        self.security = security
        self.metrics = metrics
        self.repository = ModelRepository(config, security, metrics)
        self.workers: ThreadPoolExecutor | None = None
        self.observer: Observer | None = None  # monitoring (cvdeploy.monitor.Monitor), when on

    # ---- life cycle ---------------------------------------------------------------------------
    def add(self, spec: str | Path) -> ModelVersion:
        """Load a bundle at start-up (before serving)."""
        return self.repository.add(spec)

    async def start(self) -> None:
        self.workers = ThreadPoolExecutor(
            max_workers=self.config.server.workers, thread_name_prefix="cvdeploy-cpu"
        )
        await self.repository.start()

    async def stop(self) -> None:
        await self.repository.stop()
        if self.workers is not None:
            self.workers.shutdown(wait=False)

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (image decode, preprocess, decode, big JSON) in a worker thread, off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, run_with_context(fn, *args))

    # ---- the one gate -------------------------------------------------------------------------
    def authorize(self, call: Call, action: str, resource: str) -> None:
        """Every operation passes here first; each ``(action, resource)`` of a call is decided (rate
        limited, audited when refused) once, however many times the adapter and the service ask."""
        key = (action, resource)
        if key in call.authorized:
            return
        self.security.authorize(call.principal, action, resource)
        call.authorized.add(key)

    def visible(self, call: Call, names: Sequence[str] | None = None) -> list[str]:
        """The models (of ``names``, default all) the caller may know of, sorted."""
        return self.security.visible(call.principal, self.repository.models if names is None else names)

    @contextlib.contextmanager
    def _summary(self, call: Call, name: str, counts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Report one inference to the event sink (the audit log) when it ends: principal, model,
        outcome and ``counts`` (filled in by the caller) — never the payload or an error text."""
        try:
            yield counts
        except BaseException as exc:
            status = (
                exc.status if isinstance(exc, ServeError) else 400 if isinstance(exc, CvdeployError) else 500
            )
            if isinstance(exc, ClientGone | asyncio.CancelledError):
                status = 499
            self.security.emit(Event("infer", f"model:{name}", call.principal.id, "failure",
                                     {**counts, "status": status}, call.request_id))  # fmt: skip
            raise
        self.security.emit(
            Event("infer", f"model:{name}", call.principal.id, "success", counts, call.request_id)
        )

    # ---- reads --------------------------------------------------------------------------------
    def live(self, call: Call) -> bool:
        self.authorize(call, "health", "server")
        return True

    def ready(self, call: Call) -> bool:
        self.authorize(call, "health", "server")
        return self.repository.ready

    def server_info(self, call: Call) -> None:
        self.authorize(call, "read", "server")

    def model(
        self, call: Call, name: str, version: str | int | None = None, action: str = "read"
    ) -> ModelVersion:
        """A loaded version of a model (the serving one when ``version`` is None)."""
        self.authorize(call, action, f"model:{name}")
        return self.repository.get(name, version)

    def versions(self, call: Call, name: str) -> list[ModelVersion]:
        """Every loaded version of a model, oldest first."""
        self.authorize(call, "read", f"model:{name}")
        self.repository.get(name)
        entry = self.repository.models[name]
        return [entry.versions[v] for v in sorted(entry.versions)]

    def models(self, call: Call) -> list[ModelEntry]:
        """Every model the caller may know of."""
        self.authorize(call, "read", "repository")
        return [self.repository.models[n] for n in self.visible(call)]

    def index(self, call: Call, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index, limited to the models the caller may know of."""
        self.authorize(call, "read", "repository")
        return [row for row in self.repository.index(ready_only) if call.principal.may_see(row["name"])]

    def metrics_text(self, call: Call) -> bytes:
        self.authorize(call, "metrics", "server")
        return self.metrics.render()

    def default_model(self) -> str:
        return self.repository.default_model()

    # ---- inference ----------------------------------------------------------------------------
    async def infer(
        self, call: Call, name: str, version: str | int | None, req: TensorRequest
    ) -> TensorResult:
        """Tensors in, tensors out: checked against the model's inputs, batched with other requests."""
        self.authorize(call, "infer", f"model:{name}")
        with (
            self._summary(call, name, {"tensors": len(req.inputs)}) as counts,
            self._watch(call, name, version),
            self.repository.use(name, version) as mv,
        ):
            counts["version"] = mv.version
            feeds = validate_inputs(req, mv.name, mv.inputs, mv.max_batch_size)
            names = [t.name for t in mv.outputs]
            wanted = req.outputs if req.outputs is not None else names
            for out in wanted:
                if out not in names:
                    raise BadRequest(
                        f"model {mv.name!r} has no output {out!r}; its outputs are: {', '.join(names)}"
                    )
            if len(set(wanted)) != len(wanted):
                raise BadRequest("an output is requested twice")
            batch = await mv.batcher.infer(feeds, timeout_s=req.timeout_s, gone=call.gone)
            by_name = dict(zip(names, batch.outputs, strict=False))
            outputs = [(n, by_name[n]) for n in wanted]
            result = TensorResult(mv.name, mv.version, outputs, count_non_finite(outputs))
            counts["rows"] = int(next(iter(feeds.values())).shape[0]) if mv.batchable and feeds else 1
        self._count_non_finite(mv, sum(result.non_finite.values()))
        self._observe("tensors", mv, feeds, batch.outputs, _batch_timings(batch), call.request_id)
        return result

    async def predict_image(
        self, call: Call, name: str, version: str | int | None, data: bytes,
        overrides: Mapping[str, float | int] | None = None, task: str | None = None,
    ) -> ImagePrediction:  # fmt: skip
        """An encoded image through the one pipeline: structure and size check, strict decode and
        preprocess (worker thread), batched inference, decode; ``task`` must match the model's."""
        self.authorize(call, "infer", f"model:{name}")
        with (
            self._summary(call, name, {"images": 1}) as counts,
            self._watch(call, name, version),
            self.repository.use(name, version) as mv,
        ):
            counts["version"] = mv.version
            if task is not None and mv.contract.task != task:
                use = "predict" if mv.contract.task not in ROUTED_TASKS else mv.contract.task
                raise BadRequest(
                    f"model {name!r} is a {mv.contract.task} model, not {task}; use /v1/models/{name}/{use}"
                )
            pred = await self._image(call, mv, data, overrides or {}, call.gone)
            counts["results"] = _result_count(pred.result)
            return pred

    async def predict_instances(
        self, call: Call, instances: Sequence[bytes | Mapping[str, Any] | list[Any]],
        overrides: Mapping[str, float | int] | None = None, name: str | None = None,
    ) -> InstancesResult:  # fmt: skip
        """Several instances of one request (images as bytes, tensors as nested lists without the batch
        dimension, or ``{input name: tensor}``), batched together. All of them are admitted to the
        queue or none: a request larger than the queue is refused up front (413), never half run."""
        name = name or self.default_model()
        self.authorize(call, "infer", f"model:{name}")
        n, limit = len(instances), self.config.limits.max_instances
        with (
            self._summary(call, name, {"instances": n}) as counts,
            self._watch(call, name, None),
            self.repository.use(name) as mv,
        ):
            counts["version"] = mv.version
            cap = min(limit, mv.batcher.queue_size)
            if n > cap:
                which = "limits.max_instances" if limit <= mv.batcher.queue_size else "the model's queue_size"
                raise PayloadTooLarge(
                    f"request holds {n} instances; this server takes at most {cap} per request ({which}); split it"
                )
            feeds = [
                None if isinstance(x, bytes) else self._instance_tensors(mv, i, x)
                for i, x in enumerate(instances)
            ]
            with mv.batcher.reserve(n):

                async def one(
                    i: int, inst: Any, fd: dict[str, np.ndarray] | None
                ) -> ImagePrediction | dict[str, np.ndarray]:
                    if fd is None:
                        try:
                            return await self._image(
                                call, mv, inst, overrides or {}, call.gone, reserved=True
                            )
                        except BadRequest as exc:
                            raise BadRequest(f"instances[{i}]: {exc.message}") from None
                    res = await mv.batcher.infer(fd, gone=call.gone, reserved=True)
                    outs = [
                        (t.name, o[0] if mv.batchable else o)
                        for t, o in zip(mv.outputs, res.outputs, strict=False)
                    ]
                    self._count_non_finite(mv, sum(count_non_finite(outs).values()))
                    self._observe("tensors", mv, fd, res.outputs, _batch_timings(res), call.request_id)
                    return dict(outs)

                answers = await asyncio.gather(
                    *(one(i, x, f) for i, (x, f) in enumerate(zip(instances, feeds, strict=True)))
                )
        return InstancesResult(mv, list(answers))

    # ---- model state (the repository reports every change) ------------------------------------
    async def load(self, call: Call, name: str, params: LoadParameters) -> ModelVersion:
        self.authorize(call, "load", f"model:{name}")
        return await self.repository.load(
            name, params.path or params.bundle, params.version, params.artifact,
            principal=call.principal, request_id=call.request_id,
        )  # fmt: skip

    async def unload(self, call: Call, name: str, version: int | None = None) -> tuple[list[int], int | None]:
        """Unload one version (or all); → the versions unloaded and the one serving now."""
        self.authorize(call, "unload", f"model:{name}")
        gone = await self.repository.unload(
            name, version, principal=call.principal, request_id=call.request_id
        )
        entry = self.repository.models.get(name)
        return gone, entry.serving if entry else None

    async def rollback(self, call: Call, name: str) -> int:
        self.authorize(call, "rollback", f"model:{name}")
        return await self.repository.rollback(name, principal=call.principal, request_id=call.request_id)

    # ---- helpers ------------------------------------------------------------------------------
    async def _image(self, call: Call, mv: ModelVersion, data: bytes, overrides: Mapping[str, float | int],
                     gone: asyncio.Future[Any] | None, reserved: bool = False) -> ImagePrediction:  # fmt: skip
        limits = self.config.limits
        info = check_image(data, limits)
        if len(mv.inputs) != 1:
            raise BadRequest(
                f"model {mv.name!r} takes {len(mv.inputs)} inputs; send tensors to the v2 infer endpoint"
            )
        clock = time.perf_counter
        t0 = clock()
        tensor, geoms, img = await self.run_cpu(_preprocess, mv, data, info, limits.max_image_pixels)
        t1 = clock()
        batch = await mv.batcher.infer({mv.pipeline.input_name: tensor}, gone=gone, reserved=reserved)
        t2 = clock()
        result = await self.run_cpu(_decode, mv, batch.outputs, geoms, overrides)
        t3 = clock()
        self.metrics.observe_stage(mv.name, "preprocess", t1 - t0)
        self.metrics.observe_stage(mv.name, "postprocess", t3 - t2)
        timings = {
            "preprocess": t1 - t0,
            "queue": batch.queue_s,
            "inference": batch.inference_s,
            "postprocess": t3 - t2,
        }
        bad = _result_non_finite(result)
        self._count_non_finite(mv, bad)
        self._observe(
            "image", mv, img, tensor, batch.outputs, result, timings, bool(overrides), call.request_id
        )
        return ImagePrediction(mv, result, info, timings, bad)

    def _instance_tensors(self, mv: ModelVersion, i: int, inst: Any) -> dict[str, np.ndarray]:
        """One example (without batch dimension) per input → feeds with a batch of one."""
        if isinstance(inst, Mapping):
            values = inst
        elif isinstance(inst, list):
            if len(mv.inputs) != 1:
                raise BadRequest(
                    f"instances[{i}]: model {mv.name!r} has several inputs; give {{input name: tensor}}"
                )
            values = {mv.inputs[0].name: inst}
        else:
            raise BadRequest(f"instances[{i}] must be an image {{'b64': ...}} or a tensor (nested list)")
        extra = set(values) - {t.name for t in mv.inputs}
        if extra:
            raise BadRequest(
                f"instances[{i}]: unknown input {sorted(extra)[0]!r}; known: {', '.join(t.name for t in mv.inputs)}"
            )
        feeds = {}
        for t in mv.inputs:
            if t.name not in values:
                raise BadRequest(f"instances[{i}]: missing input {t.name!r}")
            try:
                arr = np.asarray(values[t.name], dtype=np.dtype(t.dtype))
            except (TypeError, ValueError, OverflowError, RecursionError):
                raise BadRequest(
                    f"instances[{i}]: input {t.name!r} is not a {datatype(t.dtype)} tensor"
                ) from None
            want = list(t.shape[1:]) if mv.batchable else list(t.shape)
            if (
                arr.ndim != len(want)
                or any(isinstance(w, int) and w >= 0 and w != g for w, g in zip(want, arr.shape, strict=True))
                or arr.size == 0
            ):
                shown = [w if isinstance(w, int) else -1 for w in want]
                raise BadRequest(
                    f"instances[{i}]: input {t.name!r} must have shape {shown}, got {list(arr.shape)}"
                )
            feeds[t.name] = arr[None] if mv.batchable else arr
        return feeds

    def _observe(self, kind: str, *args: Any) -> None:
        """Hand an answered request to the observer; an observer's bug never fails a request."""
        if self.observer is None:
            return
        try:
            getattr(self.observer, kind)(*args)
        except Exception:
            log.exception("the monitoring observer failed on a %s request", kind)

    @contextlib.contextmanager
    def _watch(self, call: Call, name: str, version: str | int | None) -> Iterator[None]:
        """Report a failed inference (with the status it is answered with) to the observer."""
        try:
            yield
        except Exception as exc:
            if self.observer is not None:
                entry = self.repository.models.get(name)
                v = int(version) if isinstance(version, int) or (isinstance(version, str) and version.isdigit()) else (
                    entry.serving if entry is not None else None)  # fmt: skip
                try:
                    self.observer.failure(name, v, _status(exc), call.request_id)
                except Exception:
                    log.exception("the monitoring observer failed on a failed request")
            raise

    def _count_non_finite(self, mv: ModelVersion, n: int) -> None:
        if n:
            self.metrics.non_finite.labels(mv.name).inc()
            log.warning("model %s version %d produced %d NaN/Inf output values", mv.name, mv.version, n)


def _preprocess(
    mv: ModelVersion, data: bytes, info: ImageInfo, max_pixels: int
) -> tuple[np.ndarray, list[Geometry], np.ndarray]:
    """→ the model input, the geometry of each image, and the decoded image ``(h, w, 3)`` BGR."""
    try:
        img = decode_image_strict(data, "image", info, max_pixels)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except ImageError as exc:
        raise BadRequest(str(exc)) from None
    tensor, geoms = mv.pipeline.preprocess([img])
    return tensor, geoms, img


def _batch_timings(batch: Any) -> dict[str, float]:
    return {"queue": batch.queue_s, "inference": batch.inference_s}


def _status(exc: BaseException) -> int:
    """The status a failed inference is answered with (as the app's error handlers answer it)."""
    if isinstance(exc, ServeError):
        return exc.status
    if isinstance(exc, CvdeployError):
        return 400
    if isinstance(exc, ClientGone):
        return 499
    if isinstance(exc, BatcherClosed):
        return 503
    return 500


def _decode(mv: ModelVersion, outputs: list[np.ndarray], geoms: list[Geometry],
            overrides: Mapping[str, float | int]) -> Result:  # fmt: skip
    if not overrides:
        return mv.pipeline.decode(outputs, geoms)[0]
    contract = mv.contract.model_copy(deep=True)
    for key, value in overrides.items():
        setattr(contract.output, key, value)
    return Decoder(contract, mv.pipeline.decoder.output_names)(outputs, geoms)[0]


def _result_count(result: Result) -> int:
    """How many things a result holds (detections, classes ranked, output tensors) — for the audit."""
    if isinstance(result, Detections):
        return len(result.xyxy)
    if isinstance(result, Classification):
        return 1
    if isinstance(result, RawOutput):
        return len(result.tensors)
    return 0  # pragma: no cover - Result is one of the three


def _result_non_finite(result: Result) -> int:
    if isinstance(result, Detections):
        arrays = [("xyxy", result.xyxy), ("confidence", result.confidence)]
    elif isinstance(result, Classification):
        arrays = [("probs", result.probs)]
    elif isinstance(result, RawOutput):
        arrays = [(str(i), t) for i, t in enumerate(result.tensors)]
    else:  # pragma: no cover - Result is one of the three
        arrays = []
    return sum(count_non_finite(arrays).values())
