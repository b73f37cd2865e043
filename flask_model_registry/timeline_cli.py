"""``flask models timeline STAGE`` (which version served a stage, when, and since whose change) and
``flask models rollback STAGE`` (the console's rollback, from the shell)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from .cli_group import clean_errors, selected_registry
from .errors import InvalidMetadataError
from .metadata import check_stage


def _stage(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_stage(value, None)
    except InvalidMetadataError as exc:
        raise click.BadParameter(str(exc)) from None


def _when(value: datetime | None) -> str:
    """A period's bound as ISO 8601 UTC (``now`` for a period that has not ended)."""
    if value is None:
        return "now"
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def timeline_json(periods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The periods with their times as ISO 8601 UTC text (``until`` null for the current one)."""
    return [
        {**p, "from": _when(p["from"]), "until": _when(p["until"]) if p["until"] is not None else None}
        for p in periods
    ]


@click.command("timeline")
@click.argument("stage", callback=_stage)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of {version, from, until, actor}.")
@clean_errors
def timeline_command(stage: str, as_json: bool) -> None:
    """Print which version served STAGE when, oldest first, from the audit trail: each period's
    version, start, end (now for the current one) and who made the change that began it."""
    periods = selected_registry().timeline(stage)
    if as_json:
        click.echo(json.dumps(timeline_json(periods), indent=2, ensure_ascii=False))
        return
    if not periods:
        click.echo(f"stage {stage!r} has held no version")
        return
    rows = [("VERSION", "FROM", "UNTIL", "BY")]
    rows += [(p["version"], _when(p["from"]), _when(p["until"]), p["actor"] or "-") for p in periods]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]).rstrip())


@click.command("rollback")
@click.argument("stage", callback=_stage)
@click.option("--actor", help="Who makes the change, for the audit trail (default: user@host).")
@clean_errors
def rollback_command(stage: str, actor: str | None) -> None:
    """Give STAGE back to the version it served before its current one, as the console's rollback
    does (one audited change per version changed); exit status 1 when there is none to go back to."""
    done = selected_registry().rollback(stage, actor=actor)
    moved = ", ".join(f"{v} back to {repr(s) if s else 'no stage'}" for v, s in done["demoted"].items())
    click.echo(
        f"stage {stage!r} rolled back from {done['from']} to {done['to']}" + (f" ({moved})" if moved else "")
    )
