"""``cvdeploy protect``: a protected copy of a bundle — obfuscated, encrypted and/or signed.

    source bundle ──read, check sha256──▶ [obfuscate in memory ─ parity vs the original]
                  ──▶ [AES-256-GCM encrypt in memory] ──▶ OUT.cvd/<file>[.enc] ──▶ manifest ──▶ [sign]

Protect is the last step of a bundle's life: optimize, validate and bench the unprotected bundle,
then protect the result. The copy holds the artifacts, the contract and the reference profile; the
PyTorch source weights kept for re-export (``source/``) are left out — they are the model in clear.
PyTorch artifacts are left out when encrypting or obfuscating (their engine cannot load from memory).

An obfuscated artifact's parity against the original is measured on sample images with the same
checks and tolerances as any export (:func:`cvdeploy.parity.check_parity`, the precision's
tolerance) and recorded in its ``parity``, with what the runtime executed; past tolerance the
protection is refused. Nothing is written to ``OUT`` until every artifact passed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy.bundle import Artifact, Bundle, Manifest, Protection, now_iso
from cvdeploy.errors import BundleError, ConfigError, ParityError

__all__ = ["ProtectOptions", "ProtectResult", "protect"]

log = logging.getLogger("cvdeploy")
Say = Callable[[str], None]


@dataclass
class ProtectOptions:
    encrypt_key: Path | None = None  # model.key
    sign_key: Path | None = None  # signing.pem
    obfuscate: bool = False
    parity_images: int = 4
    seed: int | None = None  # obfuscation names and dummy placement (None: random)
    overwrite: bool = False


@dataclass
class ProtectResult:
    path: Path
    encrypted: bool
    signed: bool
    obfuscated: bool
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.path), "encrypted": self.encrypted, "signed": self.signed,
                "obfuscated": self.obfuscated, "artifacts": self.artifacts, "left_out": self.left_out}  # fmt: skip


def _obfuscate(
    src: Bundle, art: Artifact, blobs: list[bytes], opts: ProtectOptions
) -> tuple[list[bytes], dict[str, Any]]:
    """Obfuscate one artifact in memory and measure its parity against the original (refused past tolerance)."""
    from cvdeploy.export import batches
    from cvdeploy.images import sample_images
    from cvdeploy.parity import check_parity, tolerance_for
    from cvdeploy.runtimes import RuntimeOptions, execution_record, registry
    from cvdeploy.security.obfuscate import obfuscate_model

    eng = registry.engine(art.runtime)
    done = obfuscate_model(eng.suffix, blobs, opts.seed)
    run_opts = RuntimeOptions(precision=art.precision)
    ref = eng.load_memory(src.file(art), blobs, run_opts)
    cand = eng.load_memory(src.file(art), done.blobs, run_opts)
    r_in, c_in = ref.inputs[0].name, cand.inputs[0].name
    images = sample_images(opts.parity_images)
    tensors, geoms = batches(src.contract, images, cand.inputs[0].static_batch)
    reference = f"{art.name} before obfuscation"
    parity, problem = check_parity(
        lambda t: ref.run({r_in: t}),
        lambda t: cand.run({c_in: t}),
        src.contract,
        tensors,
        geoms,
        reference,
        tolerance_for(art.precision),
    )
    if problem:
        raise ParityError(f"obfuscated {art.name} disagrees with the original: {problem}")
    art.parity = parity
    art.execution = execution_record(cand)
    return done.blobs, done.summary()


def protect(
    source: str | Path, out: str | Path, opts: ProtectOptions, say: Say | None = None
) -> ProtectResult:
    """Write the protected copy of ``source`` to ``out`` (see the module docstring)."""
    from cvdeploy.runtimes import registry
    from cvdeploy.security.encryption import SUFFIX, encrypt_blob, key_id

    say = say or (lambda m: log.info(m))
    if not (opts.encrypt_key or opts.sign_key or opts.obfuscate):
        raise ConfigError("nothing to do: give --encrypt KEYFILE, --sign PRIVATE_KEY and/or --obfuscate")
    key = sign_key = None
    if opts.encrypt_key:
        from cvdeploy.security.keyfiles import read_model_key

        key = read_model_key(opts.encrypt_key, "--encrypt")
    if opts.sign_key:
        from cvdeploy.security.keyfiles import read_private_key

        sign_key = read_private_key(opts.sign_key, "--sign")
    src = Bundle.load(source)
    if src.manifest.protection is not None:
        raise BundleError(f"{src.path} is already protected; protect the original, unprotected bundle")
    dst = Path(out)
    if dst.resolve() == src.path.resolve():
        raise ConfigError("-o must name a new bundle folder, not the source bundle")
    if dst.exists() and any(dst.iterdir()) and not opts.overwrite:
        raise BundleError(f"{dst} already exists and is not empty; choose another -o")

    manifest = Manifest.model_validate(src.manifest.model_dump(by_alias=True))
    notes: list[str] = []
    result = ProtectResult(dst, key is not None, sign_key is not None, opts.obfuscate)
    if (key is not None or opts.obfuscate) and (src.path / "source").exists():
        notes.append("PyTorch source weights (source/) left out: they are the model in clear")
    manifest.provenance.source.weights = None
    files: dict[str, bytes] = {}  # stored name -> bytes, written only when everything passed
    kept: list[Artifact] = []
    for art in manifest.artifacts:
        eng = registry.engine(art.runtime)
        if (key is not None or opts.obfuscate) and not eng.loads_from_memory:
            result.left_out.append(art.name)
            notes.append(f"{art.name} left out: {eng.name} artifacts cannot be loaded from memory")
            continue
        rels = eng.files(art.file)
        if set(art.sha256) - set(rels):
            raise BundleError(
                f"artifact {art.name!r} has files beyond {', '.join(rels)} (external data?); protect handles "
                "self-contained artifacts: re-export it as one file"
            )
        blobs = []
        for rel in rels:
            data = (src.path / rel).read_bytes()
            if hashlib.sha256(data).hexdigest() != art.sha256.get(rel):
                raise BundleError(
                    f"{src.path}: {rel} does not match its recorded sha256; restore the bundle first"
                )
            blobs.append(data)
        entry: dict[str, Any] = {"artifact": art.name}
        if opts.obfuscate:
            say(f"obfuscating {art.name} and checking its parity against the original")
            blobs, entry["obfuscation"] = _obfuscate(src, art, blobs, opts)
            assert art.parity is not None
            entry["parity"] = {"max_abs_diff": art.parity.max_abs_diff, "cosine": art.parity.cosine,
                               "box_agreement": art.parity.box_agreement}  # fmt: skip
        art.sha256 = {}
        for rel, data in zip(rels, blobs, strict=True):
            stored, payload = (rel + SUFFIX, encrypt_blob(key, data, rel)) if key is not None else (rel, data)
            files[stored] = payload
            art.sha256[stored] = hashlib.sha256(payload).hexdigest()
        if key is not None:
            say(f"encrypted {art.name} (AES-256-GCM, in memory)")
        kept.append(art)
        result.artifacts.append(entry)
    if not kept:
        raise BundleError(f"{src.path} has no artifact that can be protected")
    manifest.artifacts = kept
    if manifest.default_artifact not in {a.name for a in kept}:
        manifest.default_artifact = kept[0].name
    manifest.protection = Protection(
        encryption="AES-256-GCM" if key is not None else None,
        key_id=key_id(key) if key is not None else None,
        obfuscated=opts.obfuscate,
        protected=now_iso(),
        notes=notes,
    )
    if dst.exists() and opts.overwrite:
        shutil.rmtree(dst)
    Bundle.create(dst, manifest)
    for stored, payload in files.items():
        target = dst / stored
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
    if manifest.reference_profile and (src.path / manifest.reference_profile).is_file():
        (dst / manifest.reference_profile).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.path / manifest.reference_profile, dst / manifest.reference_profile)
    if sign_key is not None:
        from cvdeploy.security.signing import sign_manifest

        sign_manifest(dst, sign_key)
        say("signed the manifest (Ed25519)")
    for n in notes:
        say(n)
    return result
