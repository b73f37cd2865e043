"""``flask models sign VERSION --key PATH``: sign a version that exists (see :mod:`.signing`)."""

from __future__ import annotations

import click

from .cli_group import describe_error, selected_registry
from .errors import RegistryError


@click.command("sign")
@click.argument("version")
@click.option(
    "--key",
    "key",
    required=True,
    type=click.Path(dir_okay=False),
    help="The elliptic-curve PEM private key to sign with (openssl ecparam -name prime256v1 -genkey -noout).",
)
@click.option("--actor", help="Who signs, for the audit trail (default: user@host).")
def sign_command(version: str, key: str, actor: str | None) -> None:
    """Sign VERSION: its artefact is re-hashed (a mismatch with the recorded sha256 is refused),
    then model.sig is written beside it; recorded in the audit trail."""
    try:
        metadata = selected_registry().sign(version, key, actor=actor)
    except (RegistryError, OSError, ValueError) as exc:
        raise click.ClickException(describe_error(exc)) from None
    click.echo(f"{version} is signed (key {metadata['artifact']['signature']['key']})")
