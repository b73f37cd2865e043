"""``flask models audit``: export the audit trail (JSON lines or CSV, cells that a spreadsheet would
run escaped), or check that it explains every version's current stage and flags and that both
copies of every event are there (``--check``, exit status 1 naming each version where not)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from .audit import event_time
from .cli_group import parse_age, selected_registry
from .errors import InvalidVersionError, RegistryError, VersionNotFoundError
from .registry import ModelRegistry
from .trail import copies_differ, unexplained

CSV_FIELDS = ("id", "time", "action", "version", "actor", "before", "after")
#: What a spreadsheet takes for the start of a formula (OWASP, "CSV injection"): a CSV cell that
#: starts with one of them is written with a single quote in front.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def parse_since(text: str) -> datetime:
    """An ISO 8601 time or date (UTC unless it says otherwise), or an age such as ``30m``, ``12h``,
    ``7d``: the time in UTC, or :class:`click.BadParameter` (also for a time outside the calendar)."""
    text = text.strip()
    try:
        age = parse_age(text)
    except OverflowError:
        age = timedelta.max  # more days than the calendar has
    try:
        if age is not None:
            return datetime.now(timezone.utc) - age
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-12-01T10:00:00Z, 2026-12-01)"
            " nor an age (30m, 12h, 7d)"
        ) from None
    except OverflowError:
        what = "an age too far back (before the year 1)" if age else "outside the years 1 to 9999 in UTC"
        raise click.BadParameter(f"{text!r} is {what}") from None


def _since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    return parse_since(value) if value is not None else None


def _since(events: Iterable[dict[str, Any]], since: datetime) -> list[dict[str, Any]]:
    return [e for e in events if (when := event_time(e)) is not None and when >= since]


def _csv_cell(value: Any) -> str:
    """A value as a CSV cell: JSON unless a string; escaped if a spreadsheet would run it."""
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _own_events(registry: ModelRegistry, version: str) -> list[dict[str, Any]]:
    """The events in ``version``'s own trail (none for a name that is not a version)."""
    try:
        return registry.history(version)
    except (VersionNotFoundError, InvalidVersionError):
        return []


def _check(
    registry: ModelRegistry, events: list[dict[str, Any]], version: str | None
) -> list[tuple[str, list[str]]]:
    """What ``--check`` finds: versions whose stage or flags no event explains, and events that one
    copy of the trail (the version's own, the registry-wide) holds and the other does not."""
    snapshot = registry.snapshot()
    if version is not None:
        everything = [e for e in registry.history() if e.get("version") == version]
        own = {version: events}
    else:
        everything = events
        versions = {*snapshot.by_version, *(str(e.get("version")) for e in events)}
        own = {v: _own_events(registry, v) for v in versions}
    found: dict[str, list[str]] = {}
    for name, problems in copies_differ(everything, own):
        found.setdefault(name, []).extend(problems)
    for name, problems in unexplained(snapshot, events):
        if version is None or name == version:
            found.setdefault(name, []).extend(problems)
    return list(found.items())


@click.command("audit")
@click.option(
    "--since",
    "start",
    metavar="TIME",
    callback=_since_option,
    help="Only events at or after TIME (ISO 8601, or an age: 7d).",
)
@click.option("--version", "version", metavar="V", help="Only the events of version V.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="One JSON object per line, or CSV with a header (before/after as JSON).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 naming each version whose stage or flags no event explains, or whose own trail and"
    " the registry-wide trail do not hold the same events.",
)
def audit_command(start: datetime | None, version: str | None, fmt: str, check: bool) -> None:
    """Export the audit trail, oldest first, or check it against the current metadata."""
    registry = selected_registry()
    try:
        events = registry.history(version)
        if check:
            found = _check(registry, events, version)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    if check:
        for name, problems in found:
            click.echo(f"{name}: {'; '.join(problems)}")
        if found:
            raise click.ClickException(f"the audit trail does not explain {len(found)} version(s)")
        click.echo("ok: the audit trail explains the stage and flags of every version")
        return
    if start is not None:
        events = _since(events, start)
    if fmt == "jsonl":
        for event in events:
            click.echo(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for event in events:
        writer.writerow([_csv_cell(event.get(name)) for name in CSV_FIELDS])
    click.echo(out.getvalue(), nl=False)
