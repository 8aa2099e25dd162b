"""``cvdeploy protect``: encrypt, sign and/or obfuscate a bundle; ``protect keygen`` makes the keys."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors
from cvdeploy.cli.vocabulary import help_for

HELP = """Make a protected copy of a bundle: encrypted, signed and/or obfuscated. 'protect keygen' makes the keys.

  cvdeploy protect keygen -o keys/          # keys/model.key, keys/signing.pem, keys/signing.pub.pem

  cvdeploy protect model.cvd -o model-protected.cvd --encrypt keys/model.key --sign keys/signing.pem --obfuscate

  cvdeploy predict model-protected.cvd img.jpg --decrypt-key keys/model.key --trust-key keys/signing.pub.pem

--encrypt   every artifact file AES-256-GCM encrypted; decrypted only in memory when loaded (--decrypt-key)
--sign      Ed25519 signature over the manifest, which holds every file's sha256 (checked by --trust-key)
--obfuscate ONNX/OpenVINO names replaced, doc strings and metadata stripped, dummy ONNX nodes added;
            parity with the original is measured and recorded, and must pass

Protect last: optimize, validate and bench the plain bundle first. The PyTorch source weights of the
bundle are not copied. What each protection does and does not guard against: README, "Security".
"""


@handle_errors
def protect(
    target: str = typer.Argument(..., metavar="BUNDLE|keygen", help="Bundle folder (or zoo:n), or 'keygen'."),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help=help_for("--output", "the protected bundle OUT.cvd (keygen: a key folder)"),
    ),
    encrypt: Path = typer.Option(None, "--encrypt", help="Encrypt every artifact with this model.key."),
    sign: Path = typer.Option(
        None, "--sign", help="Sign the manifest with this Ed25519 private key (signing.pem)."
    ),
    obfuscate: bool = typer.Option(False, "--obfuscate", help="Rename, strip metadata, add dummy nodes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT.cvd."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    if target == "keygen":
        from cvdeploy.errors import ConfigError
        from cvdeploy.security.keyfiles import keygen

        if encrypt or sign or obfuscate:
            raise ConfigError("'protect keygen' takes only -o DIR")
        files = keygen(output)
        if as_json:
            typer.echo(json.dumps(files.to_dict()))
            return
        console.print(f"[green]wrote[/] {files.model_key} (AES-256 model key), {files.signing_key} (Ed25519 "
                      f"signing key) and {files.public_key} (its public key, for --trust-key)")  # fmt: skip
        console.print(
            "[yellow]keep model.key and signing.pem secret; losing model.key loses every bundle it encrypts[/]"
        )
        return
    from cvdeploy.security.protect import ProtectOptions
    from cvdeploy.security.protect import protect as run_protect

    opts = ProtectOptions(encrypt, sign, obfuscate, overwrite=overwrite)
    result = run_protect(target, output, opts, None if as_json else console.print)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    what = ", ".join(w for w, on in (("encrypted", result.encrypted), ("signed", result.signed),
                                     ("obfuscated", result.obfuscated)) if on)  # fmt: skip
    console.print(f"[green]protected bundle written to[/] {result.path} ({what})")
    for a in result.artifacts:
        if "parity" in a:
            p = a["parity"]
            console.print(f"  {a['artifact']}: parity vs original max abs diff {p['max_abs_diff']:.2e}, "
                          f"cosine {p['cosine']:.6f}")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("protect", help=HELP)(protect)
