"""``flask models audit``: export the audit trail (JSON lines or CSV), or check that it explains every
version's current stage and flags (``--check``, exit status 1 naming each version it does not)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from .cli_group import selected_registry
from .errors import RegistryError
from .trail import unexplained

_DURATION = re.compile(r"(\d+)\s*([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
CSV_FIELDS = ("id", "time", "action", "version", "actor", "before", "after")


def parse_since(text: str) -> datetime:
    """An ISO 8601 time or date (UTC unless it says otherwise), or an age such as ``30m``, ``12h``, ``7d``."""
    text = text.strip()
    age = _DURATION.fullmatch(text)
    if age:
        return datetime.now(timezone.utc) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-12-01T10:00:00Z, 2026-12-01)"
            " nor an age (30m, 12h, 7d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def event_time(event: dict[str, Any]) -> datetime | None:
    """When an event happened (None if its time cannot be read)."""
    try:
        when = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _since(events: Iterable[dict[str, Any]], since: datetime) -> list[dict[str, Any]]:
    return [e for e in events if (when := event_time(e)) is not None and when >= since]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@click.command("audit")
@click.option(
    "--since", "since", metavar="TIME", help="Only events at or after TIME (ISO 8601, or an age: 7d)."
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
    "--check", is_flag=True, help="Exit 1 naming each version whose stage or flags no event explains."
)
def audit_command(since: str | None, version: str | None, fmt: str, check: bool) -> None:
    """Export the audit trail, oldest first, or check it against the current metadata."""
    registry = selected_registry()
    start = parse_since(since) if since is not None else None
    try:
        events = registry.history(version)
        if check:
            snapshot = registry.snapshot()
            found = [(v, p) for v, p in unexplained(snapshot, events) if version is None or v == version]
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
