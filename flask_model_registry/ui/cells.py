"""Metadata values as the console's cells show them. ``metadata.json`` is written by hand too, so any
key may hold any JSON value: each formatter here returns a :class:`Cell` whatever it is given, and a
value that is not what its column expects shows as itself (its JSON), marked, in its own cell. A
formatter that fails all the same (a bug) costs that cell only, never the page."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from markupsafe import Markup, escape

#: The longest text a cell shows (the whole value is in its tooltip, up to TITLE_LIMIT).
CELL_LIMIT = 80
TITLE_LIMIT = 1000
SHA_PREFIX = 12


def json_text(value: Any, limit: int | None = None) -> str:
    """``value`` as compact JSON (``repr`` for what JSON cannot hold), cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Cell:
    """What one cell shows: its text; ``odd`` when the value is not what the column expects (then
    the text is its JSON and ``why`` says what was expected); ``missing`` for no value at all."""

    text: str
    odd: bool = False
    why: str = ""
    title: str = ""
    when: str | None = None  # a time: the ISO text, for <time datetime>
    missing: bool = False

    def __html__(self) -> Markup:
        # f-strings over escaped parts, not Markup.format: a table renders thousands of cells.
        if self.missing:
            return Markup('<span class="none">–</span>')
        text = escape(self.text)
        if self.odd:
            title = escape(f"{self.why}: {self.title}" if self.title else self.why)
            return Markup(f'<span class="odd" title="{title}">{text}</span>')
        if self.when is not None:
            when = escape(self.when)
            return Markup(f'<time datetime="{when}" title="{when}">{text}</time>')
        if self.title:
            return Markup(f'<span title="{escape(self.title)}">{text}</span>')
        return text

    def __str__(self) -> str:
        return self.text


MISSING = Cell("–", missing=True)


def odd(value: Any, why: str) -> Cell:
    """``value`` shown as itself (its JSON, cut short: whole in the tooltip), marked as not what
    was expected."""
    text, whole = json_text(value, CELL_LIMIT), json_text(value, TITLE_LIMIT)
    return Cell(text, odd=True, why=why, title=whole if whole != text else "")


def total(what: str) -> Callable[[Callable[..., Cell]], Callable[..., Cell]]:
    """A formatter that never raises: should it fail on some value, that cell shows the value as
    itself, marked ``cannot be shown as <what>``, and the rest of the page renders."""

    def decorate(formatter: Callable[..., Cell]) -> Callable[..., Cell]:
        @functools.wraps(formatter)
        def safe(value: Any, *args: Any) -> Cell:
            try:
                return formatter(value, *args)
            except Exception:
                return odd(value, f"cannot be shown as {what}")

        return safe

    return decorate


def plain(text: str) -> Cell:
    """A string as it is (cut short, whole in the tooltip)."""
    if len(text) <= CELL_LIMIT:
        return Cell(text)
    return Cell(text[: CELL_LIMIT - 1] + "…", title=text[:TITLE_LIMIT])


@total("text")
def text_cell(value: Any) -> Cell:
    """A value meant to be a string (a file name, a version of a tool)."""
    if value is None:
        return MISSING
    return plain(value) if isinstance(value, str) else odd(value, "not a string")


@total("a sha256")
def sha_cell(value: Any, short: bool = True) -> Cell:
    """A recorded sha256: its first characters (``short``) or all of it."""
    if value is None:
        return MISSING
    if not isinstance(value, str):
        return odd(value, "not a string")
    if short and len(value) > SHA_PREFIX:
        return Cell(value[:SHA_PREFIX], title=value[:TITLE_LIMIT])
    return plain(value) if short else Cell(value)


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone), or None."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def human_time(text: object, now: datetime) -> str:
    """``5 min ago``, ``3 h ago``, ``2 days ago`` for recent times, else the UTC date; the text
    itself for anything that is not a time Python can place in UTC (``0001-01-01T00:00:00+14:00``)."""
    when = parse_time(text)
    if when is None:
        return json_text(text, CELL_LIMIT) if not isinstance(text, str) else text[:CELL_LIMIT]
    try:
        utc = when.astimezone(timezone.utc)
        seconds = (now - utc).total_seconds()
    except OverflowError:  # before year 1 or after 9999 once in UTC
        return str(text)
    if seconds < 0:
        return utc.strftime("%Y-%m-%d %H:%M UTC")
    if seconds < 60:
        return "just now"
    for limit, unit, size in ((3600, "min", 60), (86400, "h", 3600), (86400 * 30, "days", 86400)):
        if seconds < limit:
            return f"{int(seconds // size)} {unit} ago"
    return utc.strftime("%Y-%m-%d")


@total("a time")
def time_cell(value: Any, now: datetime) -> Cell:
    """An ISO 8601 time, told as "5 min ago" (the exact text on hover)."""
    if value is None:
        return MISSING
    if parse_time(value) is None:
        return odd(value, "not an ISO 8601 time")
    return Cell(human_time(value, now), when=value)


def human_size(size: object) -> str:
    """``1.2 MB`` for a byte count; ``-`` for anything else."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "-"
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 1000 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


@total("a size")
def size_cell(value: Any) -> Cell:
    """A byte count, told as ``1.2 MB`` (the exact count on hover)."""
    if value is None:
        return MISSING
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return odd(value, "not a byte count")
    if value >= 10**30:  # more than float can hold: say it as it is
        return plain(f"{value} B")
    return Cell(human_size(value), title=f"{value} bytes")


@total("a metric")
def metric_cell(value: Any) -> Cell:
    """A metric: a number (4 significant digits), a string or a boolean; anything else marked."""
    if isinstance(value, bool):
        return Cell(json_text(value))
    if isinstance(value, float):
        return Cell(f"{value:.4g}", title=repr(value))
    if isinstance(value, int):
        return plain(str(value))
    if isinstance(value, str):
        return plain(value)
    return odd(value, "not a number, string or boolean")
