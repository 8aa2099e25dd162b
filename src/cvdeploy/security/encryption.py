"""AES-256-GCM encryption of artifact files, in memory (via ``cryptography``).

An encrypted file is ``MAGIC (8 bytes) ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16 bytes)``.
The file's bundle-relative name is bound as associated data, so a file moved to another name (or
another bundle's file put in its place) fails authentication like an edited one. One random nonce
per file and a fresh encryption per ``protect`` run keep nonces from ever repeating under a key.
"""

from __future__ import annotations

import os

from cvdeploy._deps import require
from cvdeploy.errors import BundleError
from cvdeploy.security.serverkeys import fingerprint

__all__ = ["MAGIC", "SUFFIX", "decrypt_blob", "encrypt_blob", "key_id"]

MAGIC = b"CVDENC1\n"
SUFFIX = ".enc"
_MAX = 2**31 - 1 - 64  # what one AES-GCM call of ``cryptography`` takes


def key_id(key: bytes) -> str:
    """The public identifier of a model key (recorded in the manifest: a wrong key is named, not guessed)."""
    return fingerprint(key)


def encrypt_blob(key: bytes, data: bytes, name: str) -> bytes:
    require("cryptography", "encrypting bundles")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(data) > _MAX:
        raise BundleError(f"{name} is {len(data) / 1e9:.1f} GB: --encrypt handles artifact files up to 2 GB")
    nonce = os.urandom(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, MAGIC + name.encode())


def decrypt_blob(key: bytes, blob: bytes, name: str) -> bytes:
    """The plaintext of ``blob`` (only ever in memory), or BundleError for a wrong key or modified file."""
    require("cryptography", "decrypting bundles")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12 + 16:
        raise BundleError(f"{name}: not a cvdeploy-encrypted file (damaged or replaced)")
    nonce = blob[len(MAGIC) : len(MAGIC) + 12]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + 12 :], MAGIC + name.encode())
    except InvalidTag:
        raise BundleError(
            f"{name}: decryption failed — the file was modified or the key is not the one it was encrypted with"
        ) from None
