"""The bundle: a directory ``NAME.cvd/`` holding a manifest (``cvdeploy.yaml``) and artifacts.

Artifacts are verified against their sha256 when loaded, so a modified file is refused by name.
``zoo:n`` and ``zoo:s`` name the bundled default detectors wherever a bundle path is accepted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cvdeploy import __version__
from cvdeploy.contract import Contract
from cvdeploy.errors import BundleError, ConfigError
from cvdeploy.runtimes import registry
from cvdeploy.runtimes.base import PRECISIONS

if TYPE_CHECKING:
    from cvdeploy.runtimes import Runtime, RuntimeOptions
    from cvdeploy.security.bundlekeys import BundleKeys

SCHEMA = "cvdeploy/1"
MANIFEST = "cvdeploy.yaml"
ARTIFACT_NAME = re.compile(
    rf"^({'|'.join(registry.artifact_prefixes())})-({'|'.join(PRECISIONS)})(-[a-z0-9]+)*$"
)
ZOO_DIR = Path(__file__).parent / "zoo" / "bundles"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parity(_Model):
    """How closely an artifact's outputs match its reference on sample images."""

    reference: str  # "source" or another artifact's name
    images: int
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    box_agreement: float | None = None  # share of reference detections matched (IoU ≥ 0.9, same class)
    passed: bool = True


class Artifact(_Model):
    """One runnable model file for one runtime and precision."""

    name: str
    file: str  # path relative to the bundle; for OpenVINO the .xml
    runtime: str  # an engine of cvdeploy.runtimes.registry
    precision: str = "fp32"
    sha256: dict[str, str] = Field(default_factory=dict)  # every file of the artifact → hash
    made_by: str = "export"
    dynamic_batch: bool = False
    created: str = ""
    parity: Parity | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    # what the runtime really executed when parity was measured (precision read back, threads, CPU)
    execution: dict[str, Any] | None = None

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        if v not in registry.ENGINES:
            raise ValueError(f"unknown runtime {v!r} (known: {', '.join(registry.RUNTIMES)})")
        return v

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        if v not in PRECISIONS:
            raise ValueError(f"unknown precision {v!r} (known: {', '.join(PRECISIONS)})")
        return v


class Source(_Model):
    """Where the bundle's model came from, and the PyTorch model it keeps (bundle-relative paths).

    ``file`` is the absolute path the source was read from (a record, never read again); what later
    steps rebuild the model from lives inside the bundle: ``weights`` (a plain state dict) with
    ``factory`` (``python:`` sources) or ``architecture`` (an Ultralytics model YAML), or ``weights``
    alone as a TorchScript archive (``kind: torchscript``).
    """

    kind: Literal["onnx", "torch", "torchscript", "ultralytics", "bundle"]
    file: str | None = None
    sha256: str | None = None
    factory: str | None = None  # python:pkg.module:factory for torch modules
    weights: str | None = (
        None  # bundle-relative state dict (or TorchScript archive) kept for later optimisation
    )
    architecture: str | None = None  # bundle-relative Ultralytics model YAML (kind: ultralytics)

    @property
    def kept(self) -> bool:
        """Whether the bundle keeps a PyTorch model that re-export, pruning, distillation and QAT can load."""
        if self.kind == "torchscript":
            return bool(self.weights)
        if self.kind == "ultralytics":
            return bool(self.weights and self.architecture)
        return bool(self.factory and self.weights)


class Provenance(_Model):
    source: Source
    created: str
    tool_version: str = __version__
    environment: dict[str, Any] = Field(default_factory=dict)


class Protection(_Model):
    """How ``cvdeploy protect`` protected the bundle (see :mod:`cvdeploy.security.protect`).

    ``encryption``: every artifact file is stored AES-256-GCM encrypted as ``<file>.enc`` (the
    ``sha256`` of an artifact then lists those stored files); ``key_id`` names the model key.
    The signature, when there is one, lies beside the manifest in ``cvdeploy.yaml.sig``.
    """

    encryption: Literal["AES-256-GCM"] | None = None
    key_id: str | None = None
    obfuscated: bool = False
    protected: str = ""  # when
    notes: list[str] = Field(default_factory=list)


class Manifest(_Model):
    schema_: str = Field(SCHEMA, alias="schema")
    name: str
    version: int = 1
    contract: Contract
    artifacts: list[Artifact] = Field(default_factory=list)
    default_artifact: str = "onnx-fp32"
    provenance: Provenance
    reference_profile: str | None = None
    protection: Protection | None = None
    # sha256 of the contract (Contract.digest): the integrity check covers the contract like the artifacts
    contract_sha256: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Check(threading.Thread):
    """A check run on its own thread while the engine checks its own cache (see ``load_runtime``); a
    fresh thread each time (~0.1 ms), not a pool, so a forked server worker never waits on a thread its
    parent had."""

    def __init__(self, check: Callable[[], None]) -> None:
        super().__init__(name="cvdeploy-verify", daemon=True)
        self._check = check
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._check()
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc

    def result(self) -> None:
        self.join()
        if self._error is not None:
            raise self._error


def artifact_digest(files: dict[str, str]) -> str:
    """One sha256 for an artifact's files (relative path → sha256): the file's own for a single file."""
    if len(files) == 1:
        return next(iter(files.values()))
    lines = "".join(f"{rel}\t{digest}\n" for rel, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+: hashes from its own buffer, ~0.7 ms less on 6 MB
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256()
        while block := fh.read(1 << 20):
            h.update(block)
        return h.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def artifact_name(runtime: str, precision: str, tag: str | None = None) -> str:
    """``<runtime>-<precision>[-<tag>]``, e.g. ``onnx-fp32``, ``openvino-int8``, ``onnx-fp32-pruned30``."""
    base = f"{registry.engine(runtime).prefix}-{precision}"
    return f"{base}-{tag}" if tag else base


def resolve_path(spec: str | Path) -> Path:
    """A bundle path, or ``zoo:NAME`` for a bundled default, to a directory path."""
    s = str(spec)
    if s.startswith("zoo:"):
        key = s[4:]
        path = ZOO_DIR / f"{key}.cvd"
        if not path.is_dir():
            have = sorted(p.stem for p in ZOO_DIR.glob("*.cvd")) if ZOO_DIR.is_dir() else []
            raise BundleError(
                f"no bundled model {s!r}; available: {', '.join('zoo:' + h for h in have) or 'none'}"
            )
        return path
    return Path(s)


class Bundle:
    """A bundle directory and its parsed manifest."""

    def __init__(self, path: Path, manifest: Manifest, keys: BundleKeys | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self._verified: dict[str, dict[str, str]] = {}  # artifact → the hashes it was verified against
        self.keys = keys

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: str | Path, verify: bool = True, keys: BundleKeys | None = None) -> Bundle:
        """Open a bundle (path or ``zoo:NAME``); with ``verify`` every artifact's sha256 is checked.

        ``keys`` (default: those of :func:`cvdeploy.security.bundlekeys.using_keys`, if any) decrypt an
        encrypted bundle when its artifacts are loaded; with a trust key the manifest's signature is
        checked first, and the artifact files always.
        """
        from cvdeploy.security.bundlekeys import current_keys

        keys = keys if keys is not None else current_keys()
        path = resolve_path(spec)
        mpath = path / MANIFEST
        if not path.exists():
            raise BundleError(f"bundle not found: {path}")
        if not mpath.is_file():
            raise BundleError(
                f"{path} is not a cvdeploy bundle (no {MANIFEST}); create one with 'cvdeploy export'"
            )
        data = mpath.read_bytes()
        trusted = keys.trusted() if keys is not None else None
        if trusted is not None:
            from cvdeploy.security.signing import verify_manifest

            verify_manifest(path, data, trusted)  # the bytes parsed below are the bytes verified here
            verify = True
        try:
            # libyaml's C loader when present: the manifest is parsed on every cold start
            raw = yaml.load(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except UnicodeDecodeError:
            raise BundleError(f"{mpath}: not UTF-8 text") from None
        except yaml.YAMLError as exc:
            raise BundleError(f"{mpath}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise BundleError(f"{mpath}: manifest must be a mapping")
        schema = raw.get("schema")
        if schema != SCHEMA:
            raise BundleError(
                f"{mpath}: unknown manifest schema {schema!r}; this cvdeploy {__version__} reads {SCHEMA!r} — "
                "upgrade cvdeploy or re-export the model"
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            raise BundleError(f"{mpath}: invalid manifest: {_first_error(exc)}") from None
        bundle = cls(path, manifest, keys)
        if bundle.encrypted and keys is not None and keys.needs_files:
            raise BundleError(
                f"{path} is an encrypted bundle and {keys.needs_files} works on model files on disk, which an "
                f"encrypted bundle never has in clear: {keys.needs_files} the unprotected bundle, then "
                "'cvdeploy protect' the result"
            )
        if verify:
            bundle.verify_contract()
            for art in manifest.artifacts:
                bundle.verify(art.name)
        return bundle

    @classmethod
    def open(cls, spec: Bundle | str | Path) -> Bundle:
        """A bundle to run one artifact of: the manifest is read now, each artifact's files are hashed
        when that artifact is loaded (:meth:`load_runtime`) — a cold start hashes only what it runs."""
        return spec if isinstance(spec, Bundle) else cls.load(spec, verify=False)

    @property
    def encrypted(self) -> bool:
        """Whether the artifact files are stored encrypted (``cvdeploy protect --encrypt``)."""
        p = self.manifest.protection
        return p is not None and p.encryption is not None

    def verify_contract(self) -> None:
        """Check the contract against its recorded sha256 (bundles written before it was recorded pass)."""
        want = self.manifest.contract_sha256
        if want is not None and self.contract.digest() != want:
            raise BundleError(
                f"bundle {self.path}: the contract in {MANIFEST} does not match its recorded sha256 — it was edited "
                "after export; re-export the model (export --contract FILE sets preprocessing) or restore the manifest"
            )

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def contract(self) -> Contract:
        return self.manifest.contract

    @property
    def artifact_names(self) -> list[str]:
        return [a.name for a in self.manifest.artifacts]

    def artifact(self, name: str | None = None) -> Artifact:
        """The artifact called ``name`` (default: the bundle's default artifact)."""
        wanted = name or self.manifest.default_artifact
        for art in self.manifest.artifacts:
            if art.name == wanted:
                return art
        if name is None and self.manifest.artifacts:
            return self.manifest.artifacts[0]
        raise ConfigError(
            f"bundle {self.name!r} has no artifact {wanted!r}; it has: {', '.join(self.artifact_names) or 'none'}"
        )

    def file(self, art: Artifact | str) -> Path:
        a = self.artifact(art) if isinstance(art, str) else art
        return self.path / a.file

    def load_runtime(
        self, art: Artifact | str | None = None, options: RuntimeOptions | None = None
    ) -> Runtime:
        """Load an artifact with its stated precision pinned and read back (see ``cvdeploy.runtimes``)."""
        from cvdeploy.runtimes import RuntimeOptions as _Options

        a = art if isinstance(art, Artifact) else self.artifact(art)
        opts = (options or _Options()).replace(precision=a.precision)
        eng = registry.engine(a.runtime)
        keys = self.keys
        if keys is None:
            from cvdeploy.security.bundlekeys import current_keys

            keys = current_keys()
        signed = keys is not None and keys.trust_key is not None
        if self.encrypted or (signed and eng.loads_from_memory):
            # read once, check against the manifest, decrypt in memory: nothing in clear on disk, and the
            # bytes that run are the bytes that were checked
            from cvdeploy.security.bundlekeys import artifact_blobs

            if not eng.loads_from_memory:
                raise BundleError(
                    f"artifact {a.name!r}: {eng.name} cannot load an encrypted model from memory"
                )
            return eng.load_memory(self.file(a), artifact_blobs(self, a, keys), opts)
        if self._verified.get(a.name) == a.sha256:
            pending = None
        elif a.sha256 and eng.runtime_class().awaits_verification:
            # the engine waits for this check before it reads the model's files, and meanwhile checks its
            # own cache of the compiled form (runtimes/compiled_cache.py): the hashes run side by side
            pending = _Check(lambda: self.verify(a.name))
        else:
            self.verify(a.name)  # what runs is what was recorded: never load an unverified file
            pending = None
        if a.sha256:
            # the artifact's digest, as being verified: an engine may key a cache of its compiled form on it
            extra = {**opts.extra, "model_sha256": artifact_digest(a.sha256)}
            if pending is not None:
                extra["verified"] = pending.result
            opts = opts.replace(extra=extra)
        try:
            runtime = eng.load(self.file(a), opts)
        except BaseException:
            if pending is not None:
                pending.result()  # a failed check explains a failed load: that is the error to report
            raise
        if pending is not None:
            pending.result()  # raises on a mismatch; the runtime, which has run nothing, is dropped
            runtime.options.extra.pop("verified", None)
        return runtime

    def verify(self, name: str) -> None:
        """Check every file of an artifact against its recorded sha256."""
        art = self.artifact(name)
        for rel, digest in art.sha256.items():
            f = self.path / rel
            if not f.is_file():
                raise BundleError(f"bundle {self.path}: artifact {art.name!r} is missing its file {rel}")
            if sha256_file(f) != digest:
                raise BundleError(
                    f"bundle {self.path}: {rel} does not match its recorded sha256 — the file was modified "
                    "after export; re-export it or restore the original"
                )
        self._verified[art.name] = dict(art.sha256)

    # ---- writing -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, manifest: Manifest, overwrite: bool = False) -> Bundle:
        p = Path(path)
        if p.exists():
            if not overwrite and any(p.iterdir()):
                raise BundleError(
                    f"{p} already exists and is not empty; pass --overwrite or choose another -o"
                )
            if overwrite and (p / MANIFEST).is_file():
                shutil.rmtree(p)
            elif overwrite and any(p.iterdir()):
                raise BundleError(f"{p} exists and is not a bundle; refusing to overwrite it")
        p.mkdir(parents=True, exist_ok=True)
        bundle = cls(p, manifest)
        bundle.save()
        return bundle

    def add_artifact(self, art: Artifact, files: list[str] | None = None) -> Artifact:
        """Record an artifact whose files already lie in the bundle; hashes them and saves."""
        rels = files or registry.engine(art.runtime).files(art.file)
        art.sha256 = {rel: sha256_file(self.path / rel) for rel in rels}
        art.created = art.created or now_iso()
        self.manifest.artifacts = [a for a in self.manifest.artifacts if a.name != art.name] + [art]
        self.save()
        return art

    def save(self) -> None:
        self.manifest.contract_sha256 = self.contract.digest()
        data = self.manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path / MANIFEST)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}"
