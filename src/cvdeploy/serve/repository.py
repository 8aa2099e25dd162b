"""The model repository: several models, several versions each, loaded and swapped at run time.

A model's name is its bundle's name. Each loaded :class:`ModelVersion` owns its pipelines (one
per instance) and its :class:`DynamicBatcher`. One version per model *serves* (answers requests
that name no version); others stay loaded as rollback targets, up to
``repository.max_loaded_versions``.

Guarantees:

- a load that fails (bad bundle, sha256 mismatch, runtime error) changes nothing: the serving
  version keeps serving;
- a swap drops no request: requests hold the version they resolved (:meth:`ModelRepository.use`)
  and a retired version is closed only after its last user has finished;
- every state change — load, unload, rollback, successful or not — is reported through the one
  ``Security.emit``;
- run-time loads read only bundles under the load roots (``repository.load_roots``; by default
  the folders of the bundles served at start), and their errors name no path but the one given;
- every bundle is opened with the repository's :class:`~cvdeploy.security.bundlekeys.BundleKeys`
  (``--decrypt-key``/``--trust-key``), run-time loads included;
- an unknown model is answered with :func:`~cvdeploy.serve.errors.unknown_model`, which lists no
  other model (a caller limited to some models must not learn the others from a typo).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cvdeploy.bundle import MANIFEST, Artifact, Bundle
from cvdeploy.contract import Contract
from cvdeploy.errors import ConfigError, CvdeployError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions, TensorInfo
from cvdeploy.runtimes.registry import engine
from cvdeploy.serve.autobatch import BatchingChoice, choose_batching
from cvdeploy.serve.batching import DynamicBatcher, Feeds, Runner
from cvdeploy.serve.config import ModelConfig, ServeConfig
from cvdeploy.serve.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotReady,
    ServeError,
    unknown_model,
)
from cvdeploy.serve.metrics import ServeMetrics
from cvdeploy.serve.process import release_free_memory
from cvdeploy.serve.security import Event, Principal, Security

if TYPE_CHECKING:
    from cvdeploy.security.bundlekeys import BundleKeys

log = logging.getLogger("cvdeploy.serve.repository")

_clock = itertools.count(1)
_VERSION = re.compile(r"[0-9]{1,10}", re.ASCII)
_MAX_FAILURES = 16  # failed-load records kept per model (the index shows them)


def shown(text: str, n: int = 100) -> str:
    """A client-given name, quoted and clipped, for an error message."""
    return repr(text if len(text) <= n else text[:n] + "...")


@dataclass(eq=False)
class ModelVersion:
    """One loaded version of a model: bundle, artifact, pipelines (one per instance) and batcher."""

    name: str
    version: int
    bundle: Bundle
    artifact: Artifact
    config: ModelConfig
    pipelines: list[Pipeline]
    batcher: DynamicBatcher
    batching: BatchingChoice
    #: the inputs and outputs clients see: the loaded artifact's, before a runtime compiled for batch 1
    io: tuple[list[TensorInfo], list[TensorInfo]] | None = None
    users: int = 0
    retiring: bool = False
    last_active: int = field(default_factory=lambda: next(_clock))
    _idle: asyncio.Event | None = None

    @property
    def pipeline(self) -> Pipeline:
        """The first instance's pipeline; preprocessing and decoding are shared by all instances."""
        return self.pipelines[0]

    @property
    def contract(self) -> Contract:
        return self.pipeline.contract

    @property
    def inputs(self) -> list[TensorInfo]:
        return self.io[0] if self.io is not None else self.pipeline.runtime.inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self.io[1] if self.io is not None else self.pipeline.runtime.outputs

    @property
    def batchable(self) -> bool:
        return self.batcher.batchable

    @property
    def max_batch_size(self) -> int:
        """Rows a request may carry (Triton's ``max_batch_size``); 0 when the model has no batch dimension."""
        return max(1, self.config.max_batch_size) if self.batchable else 0

    @property
    def platform(self) -> str:
        return engine(self.artifact.runtime).triton_platform

    @property
    def resource(self) -> str:
        return f"model:{self.name}:{self.version}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "artifact": self.artifact.name,
            "path": str(self.bundle.path), "task": self.contract.task, "instances": len(self.pipelines),
            "batching": self.batching.describe(),
        }  # fmt: skip


@dataclass(eq=False)
class ModelEntry:
    """All that is known of one model name: loaded versions, the serving one, and where each came from."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    serving: int | None = None
    history: list[int] = field(default_factory=list)  # versions in the order they started serving
    paths: dict[int, Path] = field(default_factory=dict)  # every version ever loaded → its bundle path
    failures: dict[int, str] = field(default_factory=dict)  # version → why its last load failed


def batchable(pipe: Pipeline) -> bool:
    """True when every input's first dimension is dynamic, i.e. requests can be stacked."""
    ins = pipe.runtime.inputs
    return bool(ins) and all(len(t.shape) > 0 and not isinstance(t.shape[0], int) for t in ins)


def make_runner(pipe: Pipeline) -> Runner:
    """A function for a worker thread: several requests' feeds → outputs of one runtime call."""
    copy_readonly = engine(pipe.runtime.name).writable_inputs  # e.g. OpenVINO wants writable host memory

    def run(feeds_list: Sequence[Feeds]) -> list[np.ndarray]:
        if len(feeds_list) == 1:
            feeds = feeds_list[0]
        else:
            feeds = {k: np.concatenate([f[k] for f in feeds_list]) for k in feeds_list[0]}
        if copy_readonly:
            feeds = {k: v if v.flags.writeable else v.copy() for k, v in feeds.items()}
        if len(feeds) == 1 and pipe.input_name in feeds:
            return pipe.infer(feeds[pipe.input_name])
        return pipe.runtime.run(feeds)

    return run


class ModelRepository:
    """Loads bundles into serving versions and changes them at run time, reporting every change."""

    def __init__(
        self, config: ServeConfig, security: Security, metrics: ServeMetrics, keys: BundleKeys | None = None
    ) -> None:
        """``keys``: what every bundle is opened with (default: those of ``using_keys``, e.g. the CLI's
        ``--decrypt-key``/``--trust-key``), kept here because run-time loads run in worker threads."""
        from cvdeploy.security.bundlekeys import current_keys

        self.config = config
        self.security = security
        self.metrics = metrics
        self.keys = keys if keys is not None else current_keys()
        self.models: dict[str, ModelEntry] = {}
        self._lock: asyncio.Lock | None = None
        self._started = False
        self._retiring: set[asyncio.Task[None]] = set()
        roots = config.repository.load_roots
        self._roots: list[Path] = [Path(r).resolve() for r in roots] if roots is not None else []
        self._default_roots = roots is None  # then the folders of the bundles added at start

    @property
    def load_roots(self) -> list[Path]:
        """The folders run-time loads may read bundles from."""
        return list(self._roots)

    # ---- start-up (synchronous, before the server listens) ----------------------------------
    def add(self, spec: str | Path, artifact: str | None = None) -> ModelVersion:
        """Load a bundle named on the command line or in the config; the highest version serves."""
        mv = self._build(spec, expect_name=None, version=None, artifact=artifact)
        entry = self.models.setdefault(mv.name, ModelEntry(mv.name))
        if mv.version in entry.versions:
            other = entry.versions[mv.version].bundle.path
            raise ConfigError(
                f"{mv.bundle.path} and {other} are both version {mv.version} of model {mv.name!r}; "
                "give one a different version in its manifest, or serve only one"
            )
        entry.versions[mv.version] = mv
        entry.paths[mv.version] = Path(mv.bundle.path)
        if entry.serving is None or mv.version > entry.serving:
            entry.serving = mv.version
        entry.history = sorted(entry.versions)
        parent = Path(mv.bundle.path).resolve().parent
        if self._default_roots and parent not in self._roots:
            self._roots.append(parent)
        self._emit("load", mv.resource, Principal.system(), "success", mv.describe())
        return mv

    async def start(self) -> None:
        """Start every loaded version's batcher on the running loop."""
        self._lock = asyncio.Lock()
        for entry in self.models.values():
            for mv in entry.versions.values():
                await mv.batcher.start()
        self._started = True

    async def stop(self) -> None:
        """Drain and close every version."""
        versions = [mv for e in self.models.values() for mv in e.versions.values()]
        for e in self.models.values():
            e.versions.clear()
            e.serving = None
        await asyncio.gather(*(mv.batcher.stop(drain=True) for mv in versions), return_exceptions=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self._started = False

    @property
    def ready(self) -> bool:
        return (
            self._started and bool(self.models) and all(e.serving is not None for e in self.models.values())
        )

    # ---- lookup ------------------------------------------------------------------------------
    def get(self, name: str, version: str | int | None = None) -> ModelVersion:
        """The serving version of ``name``, or the loaded ``version``; 404 / 503 with what is available."""
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(unknown_model(name))
        if version is None or version == "":
            if entry.serving is None:
                raise NotReady(
                    f"model {name!r} has no version loaded; "
                    f"load one with POST /v2/repository/models/{name}/load"
                )
            return entry.versions[entry.serving]
        if isinstance(version, str) and not _VERSION.fullmatch(version):
            raise NotFound(f"model {name!r} has no version {shown(version)}: versions are whole numbers")
        v = int(version)
        mv = entry.versions.get(v)
        if mv is None:
            have = ", ".join(str(k) for k in sorted(entry.versions)) or "none"
            raise NotFound(f"version {v} of model {name!r} is not loaded; loaded versions: {have}")
        return mv

    @contextlib.contextmanager
    def use(self, name: str, version: str | int | None = None) -> Iterator[ModelVersion]:
        """Resolve a version and hold it for the whole request, so a swap cannot close it underneath."""
        mv = self.get(name, version)
        mv.users += 1
        try:
            yield mv
        finally:
            mv.users -= 1
            if mv.users == 0 and mv._idle is not None:
                mv._idle.set()

    def default_model(self) -> str:
        """The model cloud endpoints use: ``server.default_model`` or the only/first model."""
        want = self.config.server.default_model
        if want:
            if want not in self.models:
                raise NotFound(f"default model {want!r} is not loaded")
            return want
        if not self.models:
            raise NotReady("no model is loaded")
        return next(iter(self.models))

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every known version with its state, as the v2 repository extension lists them."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self.models):
            e = self.models[name]
            for v in sorted(set(e.paths) | set(e.versions) | set(e.failures)):
                if v in e.versions:
                    state, reason = "READY", ("serving" if v == e.serving else "loaded")
                else:
                    state, reason = "UNAVAILABLE", e.failures.get(v, "unloaded")
                if ready_only and state != "READY":
                    continue
                rows.append({"name": name, "version": str(v), "state": state, "reason": reason})
        return rows

    # ---- run-time changes --------------------------------------------------------------------
    async def load(
        self, name: str, path: str | None = None, version: int | None = None, artifact: str | None = None,
        principal: Principal | None = None, request_id: str | None = None,
    ) -> ModelVersion:  # fmt: skip
        """Load (or reload) a version and make it serve; on any failure the serving version is untouched."""
        principal = principal or Principal.system()
        assert self._lock is not None, "repository not started"
        resource = f"model:{name}" + (f":{version}" if version is not None else "")
        details: dict[str, Any] = {"path": path, "version": version, "artifact": artifact}
        async with self._lock:
            try:
                source = self._load_source(name, path, version)
                details["path"] = str(source)
                loop = asyncio.get_running_loop()
                mv = await loop.run_in_executor(None, self._build, source, name, version, artifact)
                await mv.batcher.start()
            except ServeError as exc:
                self._failed(name, version, str(exc), resource, principal, details, request_id)
                raise
            except CvdeployError as exc:
                self._failed(name, version, str(exc), resource, principal, details, request_id)
                raise BadRequest(f"cannot load {name!r}: {exc}") from None
            except Exception as exc:
                self._failed(name, version, "internal error", resource, principal, details, request_id)
                raise RuntimeError(f"loading {name!r} failed") from exc
            entry = self.models.setdefault(name, ModelEntry(name))
            old = entry.versions.get(mv.version)
            entry.versions[mv.version] = mv
            entry.paths[mv.version] = Path(mv.bundle.path)
            entry.failures.pop(mv.version, None)
            self._serve(entry, mv.version)
            if old is not None:
                self._retire_later(old)
            self._evict(entry)
            self._emit("load", mv.resource, principal, "success", {**details, **mv.describe()}, request_id)
            log.info("model %s version %d loaded and serving", name, mv.version)
            return mv

    async def unload(
        self, name: str, version: int | None = None, principal: Principal | None = None,
        request_id: str | None = None,
    ) -> list[int]:  # fmt: skip
        """Unload one version (or all); the next most recently serving version takes over. Drains first."""
        principal = principal or Principal.system()
        assert self._lock is not None, "repository not started"
        resource = f"model:{name}" + (f":{version}" if version is not None else "")
        async with self._lock:
            entry = self.models.get(name)
            try:
                if entry is None:
                    raise NotFound(unknown_model(name))
                if version is not None and version not in entry.versions:
                    have = ", ".join(str(v) for v in sorted(entry.versions)) or "none"
                    raise NotFound(
                        f"version {version} of model {name!r} is not loaded; loaded versions: {have}"
                    )
            except NotFound as exc:
                self._emit("unload", resource, principal, "failure", {"error": str(exc)}, request_id)
                raise
            gone = [version] if version is not None else sorted(entry.versions)
            retired = [entry.versions.pop(v) for v in gone]
            entry.history = [v for v in entry.history if v not in gone]
            if entry.serving in gone:
                entry.serving = next((v for v in reversed(entry.history) if v in entry.versions), None)
                if entry.serving is None and entry.versions:
                    entry.serving = max(entry.versions)
        await asyncio.gather(*(self._retire(mv) for mv in retired))
        self._emit(
            "unload", resource, principal, "success", {"versions": gone, "serving": entry.serving}, request_id
        )
        return gone

    async def rollback(
        self, name: str, principal: Principal | None = None, request_id: str | None = None
    ) -> int:
        """Serve the version that served before the current one (it must still be loaded)."""
        principal = principal or Principal.system()
        assert self._lock is not None, "repository not started"
        async with self._lock:
            try:
                entry = self.models.get(name)
                if entry is None:
                    raise NotFound(unknown_model(name))
                current = entry.serving
                earlier = [v for v in entry.history if v != current and v in entry.versions]
                if not earlier:
                    raise Conflict(
                        f"model {name!r} has no earlier version loaded to roll back to "
                        f"(serving {current}; loaded "
                        f"{', '.join(str(v) for v in sorted(entry.versions)) or 'none'})"
                    )
            except (NotFound, Conflict) as exc:
                self._emit("rollback", f"model:{name}", principal, "failure", {"error": str(exc)}, request_id)
                raise
            target = earlier[-1]
            entry.history = [v for v in entry.history if v != current]
            entry.serving = target
            entry.versions[target].last_active = next(_clock)
        self._emit(
            "rollback",
            f"model:{name}:{target}",
            principal,
            "success",
            {"from": current, "to": target},
            request_id,
        )
        return target

    # ---- helpers -------------------------------------------------------------------------------
    def _load_source(self, name: str, path: str | None, version: int | None) -> Path:
        entry = self.models.get(name)
        if path:
            return self._contained(path)
        if entry is not None:
            if version is not None and version in entry.paths:
                return entry.paths[version]
            if version is None and entry.serving is not None:
                return entry.paths[entry.serving]
            if version is None and entry.paths:
                return entry.paths[max(entry.paths)]
        if entry is None and name not in self.models:
            raise NotFound(
                f'unknown model {shown(name)}: name a bundle with {{"parameters": {{"path": "..."}}}}'
            )
        raise BadRequest(f'no bundle is known for version {version} of {name!r}; name one with "path"')

    def _contained(self, path: str) -> Path:
        """The bundle folder ``path`` names under a load root (relative paths are taken from each root).

        Nothing is expanded (``~user`` is a folder name like any other); links are resolved before
        the containment check. A path outside every root is refused the same way whether it exists
        or not, so errors tell nothing about the rest of the file system.
        """
        if "\x00" in path:
            raise BadRequest("path must not contain NUL characters")
        raw = Path(path)
        candidates = [raw] if raw.is_absolute() else [root / raw for root in self._roots]
        inside = False
        for cand in candidates:
            try:
                real = cand.resolve()
            except (OSError, RuntimeError, ValueError):
                continue
            if not any(real == root or real.is_relative_to(root) for root in self._roots):
                continue
            inside = True
            try:
                if (real / MANIFEST).is_file():
                    return real
            except (OSError, ValueError):
                pass
        if inside:
            raise NotFound(f"no bundle at {shown(path)} under this server's load roots")
        raise Forbidden(
            f"{shown(path)} is outside the allowed load roots of this server "
            "(repository.load_roots; by default the folders of the bundles it was started with)"
        )

    def _build(
        self, spec: str | Path, expect_name: str | None, version: int | None, artifact: str | None
    ) -> ModelVersion:
        """Open, verify and load a bundle into a not-yet-started version (runs in a worker thread)."""
        bundle = Bundle.load(spec, keys=self.keys)
        name = bundle.name
        if expect_name is not None and name != expect_name:
            raise BadRequest(
                f"{bundle.path} holds model {name!r}, not {expect_name!r}; "
                "a model's name is its bundle's name"
            )
        cfg = self.config.model(name)
        art = bundle.artifact(artifact or cfg.artifact)
        options = RuntimeOptions(threads=cfg.threads, device=cfg.device, concurrency=cfg.instances,
                                 spinning=bool(cfg.spinning))  # fmt: skip
        first = Pipeline.from_bundle(bundle, art.name, options)
        v = int(version) if version is not None else int(bundle.manifest.version)
        key = (str(Path(bundle.path).resolve()), art.name, tuple(sorted(art.sha256.items())), options.threads,
               options.spinning, options.device, cfg.max_batch_size)  # fmt: skip
        stacks = batchable(first)
        declared = (first.runtime.inputs, first.runtime.outputs)  # what clients see, dynamic batch kept
        # not batching: compile for batch 1, where a request of several rows can still be run row by row
        # (Pipeline.infer: a model with one input; make_runner hands several inputs to the runtime whole)
        per_image = stacks and first.runtime.compiles_for_batch and len(first.runtime.inputs) == 1
        one: Pipeline | None = None
        if per_image and cfg.batching == "auto" and cfg.max_batch_size > 1:
            # batch 1 is measured as it would run without batching: compiled for one image
            one = Pipeline.from_bundle(bundle, art.name, options.replace(batch=1))
        choice = choose_batching(first, cfg.batching, cfg.max_batch_size, stacks, make_runner(first), key,
                                 single_runner=make_runner(one) if one is not None else None)  # fmt: skip
        # the other instances are loaded once the choice is made, as it will serve
        if not choice.enabled and per_image:
            # one request per runtime call: compile for batch 1 (OpenVINO runs a static shape ~10 % faster);
            # a request of several rows still runs, one row after another (Pipeline.infer), and clients
            # still see the bundle's dynamic batch
            options = options.replace(batch=1)
            pipes = [one if one is not None else Pipeline.from_bundle(bundle, art.name, options)]
            release_free_memory()
        elif choice.measurement is not None and not choice.enabled:
            # the measurement ran batch max_batch_size on the first pipeline: its runtime's memory arena now
            # holds that batch's buffers, which a server that does not batch never uses (zoo:n at 640,
            # batch 8: 570 MB resident instead of 150 MB); a fresh runtime gives them back
            pipes = [Pipeline.from_bundle(bundle, art.name, options)]
            release_free_memory()
        else:
            pipes = [first]
        pipes += [Pipeline.from_bundle(bundle, art.name, options) for _ in range(cfg.instances - 1)]
        runners = [make_runner(p) for p in pipes]
        log.info("model %s version %d: batching %s", name, v, choice.describe())
        batcher = DynamicBatcher(
            name, runners,
            max_batch_size=choice.max_batch_size, max_queue_delay_s=cfg.max_queue_delay_ms / 1000.0,
            queue_size=cfg.queue_size, timeout_s=cfg.timeout_s, batchable=stacks,
            metrics=self.metrics,
        )  # fmt: skip
        return ModelVersion(name, v, bundle, art, cfg, pipes, batcher, choice, io=declared)

    def _serve(self, entry: ModelEntry, version: int) -> None:
        entry.serving = version
        entry.history = [v for v in entry.history if v != version] + [version]
        entry.versions[version].last_active = next(_clock)

    def _evict(self, entry: ModelEntry) -> None:
        limit = self.config.repository.max_loaded_versions
        while len(entry.versions) > limit:
            candidates = [mv for v, mv in entry.versions.items() if v != entry.serving]
            if not candidates:
                return
            oldest = min(candidates, key=lambda mv: mv.last_active)
            del entry.versions[oldest.version]
            entry.history = [v for v in entry.history if v != oldest.version]
            self._retire_later(oldest)

    def _retire_later(self, mv: ModelVersion) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(mv))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, mv: ModelVersion) -> None:
        """Wait for the version's last request, then drain and close its batcher."""
        mv.retiring = True
        mv._idle = asyncio.Event()
        if mv.users > 0:
            await mv._idle.wait()
        await mv.batcher.stop(drain=True)
        log.info("model %s version %d closed", mv.name, mv.version)

    def _failed(
        self, name: str, version: int | None, why: str, resource: str, principal: Principal,
        details: dict[str, Any], request_id: str | None,
    ) -> None:  # fmt: skip
        entry = self.models.get(name)
        if entry is not None and version is not None and version not in entry.versions:
            entry.failures.pop(version, None)
            entry.failures[version] = f"load failed: {why}"
            while len(entry.failures) > _MAX_FAILURES:  # bounded, whatever versions callers name
                entry.failures.pop(next(iter(entry.failures)))
        self._emit("load", resource, principal, "failure", {**details, "error": why}, request_id)

    def _emit(
        self, action: str, resource: str, principal: Principal, outcome: str, details: dict[str, Any],
        request_id: str | None = None,
    ) -> None:  # fmt: skip
        self.security.emit(Event(action, resource, principal.id, outcome, details, request_id))  # type: ignore[arg-type]
