"""Ed25519 signatures over a bundle's manifest (which holds every artifact file's sha256).

The signature covers the exact bytes of ``cvdeploy.yaml`` and is kept beside it in
``cvdeploy.yaml.sig`` (JSON: algorithm, key id, base64 signature). A loader with a trust key
verifies those bytes and then parses the *same* bytes, and checks every artifact file against the
hashes they hold — so one changed byte anywhere in the bundle is refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cvdeploy.errors import BundleError
from cvdeploy.security.serverkeys import fingerprint

__all__ = ["SIGNATURE_FILE", "public_key_id", "sign_manifest", "verify_manifest"]

SIGNATURE_FILE = "cvdeploy.yaml.sig"
_CONTEXT = b"cvdeploy-manifest\x00"


def public_key_id(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return fingerprint(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign_manifest(bundle_dir: str | Path, private_key: Any) -> Path:
    """Sign ``bundle_dir/cvdeploy.yaml`` as it is on disk now; returns the signature file."""
    d = Path(bundle_dir)
    manifest = (d / "cvdeploy.yaml").read_bytes()
    doc = {
        "algorithm": "Ed25519",
        "key_id": public_key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(_CONTEXT + manifest)).decode("ascii"),
    }
    out = d / SIGNATURE_FILE
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return out


def verify_manifest(bundle_dir: str | Path, manifest: bytes, public_key: Any) -> str:
    """Check ``manifest`` (the bytes about to be parsed) against the signature; returns the key id."""
    from cryptography.exceptions import InvalidSignature

    d = Path(bundle_dir)
    sig_path = d / SIGNATURE_FILE
    if not sig_path.is_file():
        raise BundleError(
            f"bundle {d} is not signed, and --trust-key accepts only bundles signed by that key"
        )
    try:
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
        signature = base64.b64decode(doc["signature"], validate=True)
        algorithm = doc.get("algorithm")
    except (OSError, ValueError, KeyError, TypeError):
        raise BundleError(f"bundle {d}: {SIGNATURE_FILE} is damaged; re-sign the bundle") from None
    if algorithm != "Ed25519":
        raise BundleError(f"bundle {d}: signature algorithm {algorithm!r} is not accepted (Ed25519 only)")
    want = public_key_id(public_key)
    try:
        public_key.verify(signature, _CONTEXT + manifest)
    except InvalidSignature:
        signer = doc.get("key_id")
        why = (f"it was signed by another key ({signer}, trusted: {want})" if signer and signer != want
               else "the manifest was changed after it was signed")  # fmt: skip
        raise BundleError(f"bundle {d}: bad signature — {why}; refusing to load it") from None
    return want
