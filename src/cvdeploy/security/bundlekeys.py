"""The keys a bundle is opened with: a model key to decrypt it, a public key it must be signed by.

``Bundle.load(spec, keys=BundleKeys(...))`` checks the signature (when ``trust_key`` is set) and
keeps the keys; ``Bundle.load_runtime`` then reads each artifact file once into memory, checks it
against the manifest's sha256, decrypts it there (when the bundle is encrypted) and hands the bytes
to the engine — the plaintext model never touches the disk.

The CLI sets the keys of ``--decrypt-key`` / ``--trust-key`` for the duration of a command with
:func:`using_keys`; a ``Bundle.load`` without explicit keys picks them up from there, so library code
deep in ``bench``/``val`` needs no new parameter. Key files are read when first needed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvdeploy.errors import BundleError

if TYPE_CHECKING:
    from cvdeploy.bundle import Artifact, Bundle

__all__ = ["BundleKeys", "artifact_blobs", "current_keys", "using_keys"]


@dataclass(frozen=True)
class BundleKeys:
    """``decrypt_key``: the AES-256 model key (a file path, or the 32 bytes themselves);
    ``trust_key``: the Ed25519 public key (PEM path, or a loaded key) bundles must be signed with;
    ``needs_files``: set by commands that work on model files on disk (optimize): an encrypted bundle
    is then refused up front with a message naming the command."""

    decrypt_key: str | Path | bytes | None = None
    trust_key: str | Path | Any | None = None
    needs_files: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def model_key(self) -> bytes | None:
        if self.decrypt_key is None:
            return None
        if isinstance(self.decrypt_key, bytes | bytearray):
            return bytes(self.decrypt_key)
        if "model" not in self._cache:
            from cvdeploy.security.keyfiles import read_model_key

            self._cache["model"] = read_model_key(self.decrypt_key)
        return bytes(self._cache["model"])

    def trusted(self) -> Any | None:
        if self.trust_key is None:
            return None
        if not isinstance(self.trust_key, str | Path):
            return self.trust_key
        if "trust" not in self._cache:
            from cvdeploy.security.keyfiles import read_public_key

            self._cache["trust"] = read_public_key(self.trust_key)
        return self._cache["trust"]


_CURRENT: contextvars.ContextVar[BundleKeys | None] = contextvars.ContextVar(
    "cvdeploy_bundle_keys", default=None
)


def current_keys() -> BundleKeys | None:
    """The keys set by the innermost :func:`using_keys`, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def using_keys(keys: BundleKeys | None) -> Iterator[BundleKeys | None]:
    """Open every bundle loaded inside the block with ``keys`` (unless it is given others)."""
    token = _CURRENT.set(keys)
    try:
        yield keys
    finally:
        _CURRENT.reset(token)


def artifact_blobs(bundle: Bundle, art: Artifact, keys: BundleKeys | None) -> list[bytes]:
    """Every file of ``art`` (model file first, then sidecars) read once, checked, decrypted in memory."""
    from cvdeploy.runtimes import registry
    from cvdeploy.security.encryption import SUFFIX, decrypt_blob, key_id

    protection = bundle.manifest.protection
    encrypted = protection is not None and protection.encryption is not None
    key = None
    if encrypted:
        assert protection is not None
        key = keys.model_key() if keys is not None else None
        if key is None:
            raise BundleError(
                f"bundle {bundle.path} is encrypted: pass --decrypt-key with the model key it was protected with"
            )
        if protection.key_id and key_id(key) != protection.key_id:
            raise BundleError(
                f"bundle {bundle.path} was encrypted with key {protection.key_id}, not with the given key "
                f"({key_id(key)}); pass the model.key it was protected with"
            )
    blobs = []
    for rel in registry.engine(art.runtime).files(art.file):
        stored = rel + SUFFIX if encrypted else rel
        digest = art.sha256.get(stored)
        path = bundle.path / stored
        if digest is None:
            raise BundleError(f"bundle {bundle.path}: artifact {art.name!r} records no sha256 for {stored}")
        try:
            data = path.read_bytes()
        except OSError:
            raise BundleError(
                f"bundle {bundle.path}: artifact {art.name!r} is missing its file {stored}"
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BundleError(
                f"bundle {bundle.path}: {stored} does not match its recorded sha256 — the file was modified; "
                "restore the original bundle"
            )
        blobs.append(decrypt_blob(key, data, rel) if key is not None else data)
    return blobs
