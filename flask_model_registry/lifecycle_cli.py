"""``flask models delete`` and ``flask models gc``: delete one version (asking first on a terminal),
and apply a retention rule, printing what goes and the bytes freed (see :mod:`.lifecycle`)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import click

from .cli_group import clean_errors, parse_age, selected_model, selected_registry

ACTOR_OPTION = click.option("--actor", help="Who makes the change, for the audit trail (default: user@host).")


def _age_option(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    """``--older-than``: an age such as 90m, 12h or 30d (a usage error, exit 2, otherwise)."""
    if value is None:
        return None
    try:
        age = parse_age(value)
    except OverflowError:
        age = None
    if age is None:
        raise click.BadParameter(f"{value!r} is not an age such as 90m, 12h or 30d")
    return age


@click.command("delete")
@click.argument("version")
@click.option("--yes", is_flag=True, help="Delete without asking (needed when not on a terminal).")
@ACTOR_OPTION
@clean_errors
def delete_command(version: str, yes: bool, actor: str | None) -> None:
    """Delete VERSION: refused while it serves, is a canary or is what a stage's rollback returns
    to (demote it first). Its history stays; its name is never used again."""
    registry = selected_registry()
    registry.get_metadata(version)  # a missing version fails before anyone is asked
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("not on a terminal, so nobody can confirm: add --yes to delete")
        model = selected_model()
        where = f" of model {model}" if model else ""
        click.confirm(f"Delete version {version}{where}? This cannot be undone", abort=True)
    registry.delete_version(version, actor=actor)
    click.echo(f"{version} deleted")


@click.command("gc")
@click.option("--keep-last", type=click.IntRange(min=0), metavar="N", help="Keep the newest N of each stage.")
@click.option(
    "--older-than", callback=_age_option, metavar="AGE", help="Only versions older than this (90m, 12h, 30d)."
)
@click.option("--dry-run", is_flag=True, help="Print what would go; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@ACTOR_OPTION
@clean_errors
def gc_command(
    keep_last: int | None, older_than: timedelta | None, dry_run: bool, as_json: bool, actor: str | None
) -> None:
    """Delete the versions a retention rule lets go (never one in use), and what crashed writers
    left (half-done deletes, and partial or staging folders older than an hour). Without
    --keep-last or --older-than no version goes, only leftovers."""
    result = selected_registry().gc(keep_last, older_than, dry_run, actor)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    for version in result["deleted"]:
        click.echo(f"{verb} version {version}")
    for name in result["leftovers"]:
        click.echo(f"{verb} leftover {name}")
    freed = "would free" if dry_run else "freed"
    click.echo(
        f"{len(result['deleted'])} version(s), {len(result['leftovers'])} leftover(s);"
        f" {freed} {result['bytes_freed']} bytes"
    )
