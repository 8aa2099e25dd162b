"""``cvdeploy certs``: development certificates for TLS and mutual TLS."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors
from cvdeploy.cli.vocabulary import help_for

certs_app = typer.Typer(help="Certificates for trying TLS and mutual TLS locally.", no_args_is_help=True)

DEV_HELP = """Write a development CA, a server certificate (localhost, 127.0.0.1, ::1) and a client certificate.

  cvdeploy certs dev -o certs/
  cvdeploy serve model.cvd --db cvdeploy.db --tls-cert certs/server.pem --tls-key certs/server.key \\
      --tls-client-ca certs/ca.pem
  curl --cacert certs/ca.pem --cert certs/client.pem --key certs/client.key https://localhost:8000/v2/health/ready

For development and tests only: production certificates come from your PKI or ACME.
"""


@certs_app.command("dev", help=DEV_HELP)
@handle_errors
def dev(
    output: Path = typer.Option(
        ..., "--output", "-o", help=help_for("--output", "the folder of certificates and keys")
    ),
    client_name: str = typer.Option(
        "cvdeploy-client",
        "--client-name",
        help="The client certificate's CN (name an API key the same for mTLS).",
    ),
    days: int = typer.Option(30, "--days", min=1, max=825, help="Validity in days."),
    as_json: bool = typer.Option(False, "--json", help="Print the file paths as JSON."),
) -> None:
    from cvdeploy.security.certs import dev_certificates

    files = dev_certificates(output, client_name=client_name, days=days)
    if as_json:
        typer.echo(json.dumps(files.to_dict()))
        return
    console.print(f"[green]wrote a dev CA, server and client certificate to[/] {output}")
    console.print(f"  server: --tls-cert {files.server_cert} --tls-key {files.server_key}")
    console.print(
        f"  mutual TLS: --tls-client-ca {files.ca_cert}; client: {files.client_cert} + {files.client_key}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
