"""``flask models token new NAME --role R [--stages a,b]``: a fresh named token, shown once, and the
``MODEL_REGISTRY_TOKENS`` line that holds its sha256 (never the token) beside the tokens already set."""

from __future__ import annotations

import json
import shlex

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import ConfigError
from .tokens import ROLES, TOKENS_KEY, check_token_name, new_token, parse_tokens


@click.group("token", cls=AppGroup, invoke_without_command=True)
@click.pass_context
def token_cli(ctx: click.Context) -> None:
    """Named tokens for the HTTP API and the console (MODEL_REGISTRY_TOKENS). Tokens are app-wide:
    one token reaches the default registry and every named model, so --model changes nothing here."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@token_cli.command("new", short_help="A fresh token, shown once, and the config line holding its hash.")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the token may do.")
@click.option(
    "--stages",
    metavar="A,B",
    help="A promoter's stages: it may move versions only between these (and no stage).",
)
def new_command(name: str, role: str, stages: str | None) -> None:
    """Print a fresh random token for NAME (shown only this once) and the MODEL_REGISTRY_TOKENS line
    holding its sha256, merged with the tokens this app already has (NAME's entry replaced)."""
    try:
        check_token_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    token, sha256 = new_token()
    entry: dict[str, object] = {"sha256": sha256, "role": role}
    if stages is not None:
        entry["stages"] = [stage.strip() for stage in stages.split(",") if stage.strip()]
    configured = dict(current_app.config.get(TOKENS_KEY) or {})
    replaced = name in configured
    configured[name] = entry
    try:
        line = json.dumps(parse_tokens(configured))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"token: {token}")
    click.echo(f"{TOKENS_KEY}={shlex.quote(line)}")
    note = f" It replaces the token {name!r} had." if replaced else ""
    click.echo(
        f"The token is shown only this once: hand it to {name} and keep it secret. The config line"
        f" holds its sha256 only, beside the tokens already configured.{note}",
        err=True,
    )
