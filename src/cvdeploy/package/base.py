"""What every deployment target shares: the options, the context a target writes through, the result.

A target is one module under :mod:`cvdeploy.package` with a module-level ``TARGET`` (a
:class:`Target`): its name, one line saying what it makes, what it needs, and ``write(ctx)``, which
writes files through the :class:`Context` (templates, the trimmed bundle, pinned requirements).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy import __version__
from cvdeploy.bundle import MANIFEST, Artifact, Bundle
from cvdeploy.errors import ConfigError
from cvdeploy.runtimes import registry

#: Where a baked-in bundle lives inside every container image cvdeploy writes.
MODEL_ROOT = "/models"
#: The port every container listens on (SageMaker and Vertex AI require 8080; the others follow).
PORT = 8080
#: The readiness and liveness routes (Open Inference Protocol v2), for probes and HEALTHCHECK.
READY, LIVE = "/v2/health/ready", "/v2/health/live"
#: The uid the containers run as (no name needed; not root).
UID = 10001


#: Where a TLS-terminating container expects its certificate and key (a mounted secret).
TLS_DIR = "/run/secrets/cvdeploy"


@dataclass
class PackageOptions:
    """What the user chose; each target uses what applies to it."""

    artifact: str | None = None  # None: the target's preference among the bundle's artifacts
    image: str | None = None  # container image name; None: cvdeploy/<bundle name>:<version>
    model: str = "bake"  # bake the bundle into the image, or "mount" it at run time
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas
    threads: int | None = None  # inference threads per replica (the CPU request); None: 2
    max_batch_size: int = 8
    wheel: Path | None = None  # a cvdeploy wheel to install instead of the release from PyPI
    vendor: bool = True  # edge: copy the runtime packages into lib/
    db_url: str = ""  # kubernetes: the security database URL stored in the Secret
    overwrite: bool = False
    # how a server container is reached (it binds beyond the loopback, which `serve` refuses without a
    # choice): "tls" — it terminates TLS itself (certificates mounted at TLS_DIR) and authenticates against
    # the database in $CVDEPLOY_DB_URL; "ingress" — TLS and authentication end at your ingress or load
    # balancer, the container runs `serve --insecure` on a private network
    security: str | None = None


@dataclass
class Package:
    """What ``package`` wrote: the folder, its files (relative), notes for the user, sizes in bytes."""

    target: str
    path: Path
    artifact: str
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    run: str = ""  # the command that starts what was packaged

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "path": str(self.path),
            "artifact": self.artifact,
            "files": self.files,
            "notes": self.notes,
            "sizes": self.sizes,
            "run": self.run,
        }


@dataclass(frozen=True)
class Target:
    """One deployment target: ``write`` fills ``ctx.out``."""

    name: str
    summary: str  # one line: what it writes
    needs: str  # one line: what deploying it needs
    write: Callable[[Context], None]
    servable: bool = True  # runs `cvdeploy serve` (so it needs an artifact the server can run)
    prefer: tuple[str, ...] = ("onnxruntime", "openvino")  # engines preferred, in order, when not told


class Context:
    """Everything a target writes goes through here, so files are listed and templates rendered alike."""

    def __init__(self, bundle: Bundle, artifact: Artifact, out: Path, options: PackageOptions, target: str):
        self.bundle = bundle
        self.artifact = artifact
        self.out = out
        self.options = options
        self.result = Package(target, out, artifact.name)

    # ---- facts the templates use ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """A DNS-1123 name for the model (Kubernetes objects, compose services)."""
        import re

        return re.sub(r"[^a-z0-9-]+", "-", self.bundle.name.lower()).strip("-")[:50] or "model"

    @property
    def image(self) -> str:
        return self.options.image or f"cvdeploy/{self.name}:{self.bundle.manifest.version}"

    @property
    def model_dir(self) -> str:
        return f"{MODEL_ROOT}/{self.bundle.name}.cvd"

    @property
    def threads(self) -> int:
        return self.options.threads or 2

    @property
    def extras(self) -> list[str]:
        """The cvdeploy extras this artifact needs to be served (``serve`` + its engine's extra)."""
        extra = registry.engine(self.artifact.runtime).extra
        return sorted({"serve", *([extra] if extra else [])})

    def serve_args(self, *extra: str) -> list[str]:
        """The ``cvdeploy serve`` arguments every server target runs (after ``cvdeploy serve``).

        A container binds beyond its loopback, which ``serve`` refuses without TLS and a database unless
        told ``--insecure``: the choice is the user's (``--security tls|ingress``), never a silent default.
        """
        from cvdeploy.errors import ConfigError

        mode = self.options.security
        if mode == "tls":
            sec = ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
        elif mode == "ingress":
            sec = ["--insecure"]
        else:
            raise ConfigError(
                f"--target {self.result.target}: say how the server is secured: --security tls (it serves HTTPS "
                f"with certificates mounted at {TLS_DIR} and authenticates against $CVDEPLOY_DB_URL) or "
                "--security ingress (TLS and authentication end at your ingress; the container runs --insecure)"
            )
        return [self.model_dir, "--host", "0.0.0.0", "--port", str(PORT), "--threads", str(self.threads), *sec,
                *extra]  # fmt: skip

    @property
    def scheme(self) -> str:
        """``https`` when the container terminates TLS itself, else ``http``."""
        return "https" if self.options.security == "tls" else "http"

    # ---- writing -----------------------------------------------------------------------------------
    def render(self, template: str, dest: str, mode: int | None = None, **values: Any) -> Path:
        """Render ``templates/<template>`` (jinja2) into ``out/<dest>``."""
        from cvdeploy._deps import require

        jinja2 = require("jinja2", "cvdeploy package")
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("cvdeploy.package", "templates"),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        env.filters["tojson"] = lambda v: json.dumps(v)
        text = env.get_template(template).render(ctx=self, opts=self.options, **values)
        return self.text(dest, text, mode)

    def text(self, dest: str, text: str, mode: int | None = None) -> Path:
        path = self.out / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if mode is not None:
            path.chmod(mode)
        self._add(dest)
        return path

    def yaml(self, dest: str, docs: list[dict[str, Any]]) -> Path:
        """Write Kubernetes-style YAML (several documents separated by ``---``)."""
        import yaml

        body = "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)
        return self.text(dest, body)

    def copy_bundle(self, dest: str) -> Path:
        """A bundle holding only the chosen artifact (its manifest trimmed to it) at ``out/<dest>``."""
        root = self.out / dest
        manifest = self.bundle.manifest.model_copy(deep=True)
        manifest.artifacts = [a for a in manifest.artifacts if a.name == self.artifact.name]
        manifest.default_artifact = self.artifact.name
        files = registry.engine(self.artifact.runtime).files(self.artifact.file)
        files += [f for f in self.artifact.sha256 if f not in files]
        if manifest.reference_profile:
            files.append(manifest.reference_profile)
        for f in files:
            src = self.bundle.path / f
            if src.is_file():
                (root / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / f)
        if manifest.provenance.source.weights:  # training weights stay behind: not needed to serve
            manifest.provenance.source.weights = None
        import yaml

        (root / MANIFEST).write_text(
            yaml.safe_dump(
                manifest.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False
            ),
            encoding="utf-8",
        )
        Bundle.load(root)  # the copy must load and verify like the original
        for p in sorted(root.rglob("*")):
            if p.is_file():
                self._add(str(p.relative_to(self.out)))
        return root

    def requirements(self, dest: str = "requirements.txt", with_cvdeploy: bool = True) -> Path:
        """Pinned requirements for the extras this artifact needs, from what is installed here."""
        from cvdeploy.package.pins import pinned_closure

        pins, missing = pinned_closure(self.extras)
        lines = [
            f"# what `cvdeploy[{','.join(self.extras)}]=={__version__}` needs, pinned to the versions tested"
        ]
        if missing:
            lines.append(f"# not installed where this was packaged (unpinned): {', '.join(missing)}")
            lines += missing
        lines += pins
        if with_cvdeploy and not self.options.wheel:
            lines.append(f"cvdeploy[{','.join(self.extras)}]=={__version__}")
        return self.text(dest, "\n".join(lines) + "\n")

    def wheel(self, dest_dir: str = "wheels") -> str | None:
        """Copy ``--wheel`` into the build context; returns its path there (None without one)."""
        w = self.options.wheel
        if w is None:
            return None
        if not w.is_file() or w.suffix != ".whl":
            raise ConfigError(
                f"--wheel {w}: not a wheel file (build one with 'pip wheel . --no-deps -w dist')"
            )
        (self.out / dest_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy2(w, self.out / dest_dir / w.name)
        self._add(f"{dest_dir}/{w.name}")
        return f"{dest_dir}/{w.name}"

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    def _add(self, rel: str) -> None:
        if rel not in self.result.files:
            self.result.files.append(rel)
