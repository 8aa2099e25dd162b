"""The server's own keys, kept outside the database: the audit signing key and the MFA wrap key.

    $CVDEPLOY_SECRETS_DIR (default ~/.config/cvdeploy/secrets, created with mode 0700)
    ├── audit-signing.pem       Ed25519 private key: signs every audit row and the chain head (0600)
    ├── audit-signing.pub.pem   its public key: all that ``cvdeploy audit verify`` needs
    └── mfa-wrap.key            32 random bytes: AES-256-GCM key that encrypts TOTP secrets at rest (0600)

They live apart from the database on purpose: whoever can write the database cannot re-sign a
rewritten audit chain, and a copy of the database (a backup, a dump) holds no usable TOTP secret.
Each file is created on first use. Keep the folder private and back it up with the database:
without ``mfa-wrap.key`` every MFA enrolment must be redone; without the public key the audit log
cannot be verified.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError

__all__ = ["ENV", "ServerKeys", "default_secrets_dir", "fingerprint"]

ENV = "CVDEPLOY_SECRETS_DIR"
SIGNING = "audit-signing.pem"
SIGNING_PUB = "audit-signing.pub.pem"
WRAP = "mfa-wrap.key"


def default_secrets_dir() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "cvdeploy" / "secrets"


def fingerprint(data: bytes) -> str:
    """A short public identifier of a key: the first 16 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(b"cvdeploy key id\x00" + data).hexdigest()[:16]


def write_private(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` (``mode``) holding ``data``, atomically: readers never see a partial file, and of
    two processes creating it at once exactly one wins. False when it already existed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if it exists: first writer wins
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class ServerKeys:
    """The key folder; keys are read (or created) on first use and kept in memory."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_secrets_dir()
        self._cache: dict[str, Any] = {}

    def _ensure_dir(self) -> None:
        if not self.directory.is_dir():
            try:
                self.directory.mkdir(parents=True, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the secrets folder {self.directory} ({exc.strerror}); set {ENV} to a "
                    "private folder this user can write"
                ) from None

    # ---- audit signing (Ed25519) ---------------------------------------------------------------
    def signing_key(self) -> Any:
        """The Ed25519 private key that signs audit rows (created with its public key when missing)."""
        if "signing" not in self._cache:
            require("cryptography", "signing the audit log")
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            path = self.directory / SIGNING
            if not path.is_file():
                self._ensure_dir()
                key = Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                write_private(path, pem)  # when another process won the race, its key is read below
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ConfigError(f"{path} is not an Ed25519 private key; move it away and a new one is made")
            pub = loaded.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            write_private(self.directory / SIGNING_PUB, pub, 0o644)
            self._cache["signing"] = loaded
        return self._cache["signing"]

    def public_key(self) -> Any:
        """The Ed25519 public key that verifies the audit log (only the ``.pub.pem`` file is needed)."""
        if "public" not in self._cache:
            require("cryptography", "verifying the audit log")
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            path = self.directory / SIGNING_PUB
            if not path.is_file():
                raise ConfigError(
                    f"no audit verification key at {path}: point {ENV} at the secrets folder of the server "
                    "that wrote this audit log"
                )
            key = serialization.load_pem_public_key(path.read_bytes())
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"{path} is not an Ed25519 public key")
            self._cache["public"] = key
        return self._cache["public"]

    @property
    def key_id(self) -> str:
        """Fingerprint of the audit public key (stored with each row, so a key change is visible)."""
        if "key_id" in self._cache:
            return str(self._cache["key_id"])
        require("cryptography", "signing the audit log")
        from cryptography.hazmat.primitives import serialization

        if (self.directory / SIGNING).is_file() or not (self.directory / SIGNING_PUB).is_file():
            pub = self.signing_key().public_key()  # the key rows are signed with (made if missing)
        else:
            pub = self.public_key()  # a verifying machine with only the public key
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._cache["key_id"] = fingerprint(raw)
        return str(self._cache["key_id"])

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.signing_key().sign(message)).decode("ascii")

    def verify(self, message: bytes, signature: str) -> bool:
        key = self.public_key()
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    # ---- MFA wrap key (AES-256-GCM) ------------------------------------------------------------
    def wrap_key(self) -> bytes:
        """32 random bytes that encrypt TOTP secrets in the database (created when missing)."""
        if "wrap" not in self._cache:
            path = self.directory / WRAP
            if not path.is_file():
                self._ensure_dir()
                write_private(path, os.urandom(32))
            data = path.read_bytes()
            if len(data) != 32:
                raise ConfigError(f"{path} must hold exactly 32 bytes (it holds {len(data)})")
            self._cache["wrap"] = data
        return bytes(self._cache["wrap"])

    def seal(self, plaintext: bytes, context: str) -> str:
        """Encrypt a small secret for storage (AES-256-GCM, random nonce, ``context`` bound as AAD)."""
        require("cryptography", "encrypting MFA secrets")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        sealed = AESGCM(self.wrap_key()).encrypt(nonce, plaintext, context.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, token: str, context: str) -> bytes:
        """Decrypt what :meth:`seal` made for the same ``context``; a wrong key or edit raises ConfigError."""
        require("cryptography", "decrypting MFA secrets")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        raw = base64.b64decode(token)
        try:
            return AESGCM(self.wrap_key()).decrypt(raw[:12], raw[12:], context.encode())
        except InvalidTag:
            raise ConfigError(
                f"a stored MFA secret cannot be decrypted with {self.directory / WRAP}: the wrap key changed or "
                "the row was edited; re-enroll with 'cvdeploy mfa enroll'"
            ) from None
