"""Key files of protected bundles: the AES-256 model key and the Ed25519 signing key pair.

    cvdeploy protect keygen -o DIR
    DIR/model.key         32 random bytes, base64 on one line (0600): --encrypt / --decrypt-key
    DIR/signing.pem       Ed25519 private key, PKCS#8 PEM (0600): --sign
    DIR/signing.pub.pem   its public key: --trust-key (safe to publish)

Existing files are never overwritten: a replaced model key makes every bundle encrypted with the old
one unreadable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError, InputError

__all__ = ["KEY_BYTES", "KeyFiles", "keygen", "read_model_key", "read_private_key", "read_public_key"]

KEY_BYTES = 32


@dataclass(frozen=True)
class KeyFiles:
    model_key: Path
    signing_key: Path
    public_key: Path

    def to_dict(self) -> dict[str, str]:
        return {"model_key": str(self.model_key), "signing_key": str(self.signing_key),
                "public_key": str(self.public_key)}  # fmt: skip


def _create(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def keygen(out: str | Path) -> KeyFiles:
    """Write a new model key and signing key pair into ``out`` (refused if any of them exists)."""
    require("cryptography", "bundle keys")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(out)
    files = KeyFiles(d / "model.key", d / "signing.pem", d / "signing.pub.pem")
    for p in files.__dict__.values():
        if p.exists():
            raise ConfigError(
                f"{p} already exists; a new key would lock out what the old one protects — choose another -o"
            )
    d.mkdir(parents=True, exist_ok=True)
    _create(files.model_key, base64.b64encode(os.urandom(KEY_BYTES)) + b"\n", 0o600)
    key = Ed25519PrivateKey.generate()
    _create(
        files.signing_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    _create(
        files.public_key,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return files


def _read(path: str | Path, flag: str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InputError(f"{flag} {p}: cannot read the key file ({exc.strerror})") from None


def read_model_key(path: str | Path, flag: str = "--decrypt-key") -> bytes:
    """The 32-byte AES key in ``path`` (base64 or hex text, or 32 raw bytes)."""
    raw = _read(path, flag)
    if len(raw) == KEY_BYTES:
        return raw
    try:
        text = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        text = ""
    candidates = []
    with contextlib.suppress(ValueError, binascii.Error):
        candidates.append(base64.b64decode(text, validate=True))
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise InputError(
        f"{flag} {path}: not an AES-256 model key (32 bytes, base64 or hex); make one with 'cvdeploy protect keygen'"
    )


def read_private_key(path: str | Path, flag: str = "--sign") -> Any:
    """The Ed25519 private key in a PEM file."""
    require("cryptography", "signing bundles")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = _read(path, flag)
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{flag} {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{flag} {path}: not an Ed25519 key; make one with 'cvdeploy protect keygen'")
    return key


def read_public_key(path: str | Path, flag: str = "--trust-key") -> Any:
    """The Ed25519 public key in a PEM file."""
    require("cryptography", "verifying bundle signatures")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = _read(path, flag)
    try:
        key = serialization.load_pem_public_key(raw)
    except ValueError as exc:
        raise InputError(
            f"{flag} {path}: not a PEM public key ({exc}); give the signing.pub.pem file"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(
            f"{flag} {path}: not an Ed25519 public key; give the signing.pub.pem of 'protect keygen'"
        )
    return key
