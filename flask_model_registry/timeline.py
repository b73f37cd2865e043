"""What was live when: which version held each stage at any moment, read from the audit trail.

Every event changes a version's stage at the time of its id (the audit trail's hybrid logical
clock: the writer's clock, or just after the event it follows when that clock is behind, so the
order is always the order of the changes). ``publish`` brings a version in with the stage it was
written with, ``delete`` takes it out of every stage, any other event changes the stage when it
names it. A version no event brought in (made by hand) is there from its ``created_at`` (else its
``metadata.json`` modification time), in the stage its first recorded stage change started from
(that change's ``before``), or, with none, in its current stage. A stage's holder at a moment is
what :meth:`~.registry.ModelRegistry.get_latest_version` would have answered then: the highest of
the versions in it (prereleases only when asked).

Built once per state of the trail and of the registry (one read of the whole trail, as
``history()`` gives it); each stage's periods are computed once from that.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidArgumentError, RegistryError, VersionNotFoundError
from .registry import ModelRegistry
from .rollout import apply_rollback
from .snapshot import Snapshot
from .trail import replay, rollback_plan
from .versioning import SortKey, is_prerelease, sort_key

#: An RFC 3339 date-time with an offset (``Z`` or ``±HH:MM``); a space stands for a ``+`` that a
#: query string turned into one.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+\- ]\d{2}:\d{2})", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def check_as_of(value: object) -> datetime:
    """``value`` if it is an aware datetime, else :class:`InvalidArgumentError`."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"as_of must be a datetime with a time zone, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError("as_of must be an aware datetime (with a time zone), not a naive one")
    return value


def parse_as_of(text: str) -> datetime:
    """An RFC 3339 date-time with an offset (``2026-03-01T12:00:00Z``), else InvalidArgumentError."""
    if not _RFC3339.fullmatch(text):
        raise InvalidArgumentError(
            "as_of must be an RFC 3339 date-time with an offset, such as 2026-03-01T12:00:00Z"
            " or 2026-03-01T14:00:00%2B02:00"
        )
    head, offset = text[:-6], text[-6:]
    if offset[0] == " ":  # "+02:00" in a query string that was not percent-encoded
        text = head + "+" + offset[1:]
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:  # nanoseconds: Python keeps microseconds
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(f"as_of {text[:40]!r} is not a valid date and time") from None


def _ns(when: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (exact to the microsecond)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _datetime(ns: int) -> datetime:
    """The aware UTC datetime of ``ns`` nanoseconds since the epoch (to the microsecond)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1000)


def _time_ns(value: object) -> int | None:
    """A ``created_at`` (ISO 8601; UTC unless it says otherwise) in nanoseconds, None if unreadable."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return _ns(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
    except (ValueError, OverflowError):
        return None


def _stage(value: object) -> str | None:
    """A stage as queries match it: a string, else no stage."""
    return value if type(value) is str else None


def _event_ns(event: Mapping[str, Any]) -> int | None:
    """When an event counts: the nanoseconds of its id (the trail's order)."""
    event_id = event.get("id")
    if isinstance(event_id, str) and event_id[:20].isdigit():
        return int(event_id[:20])
    return None


@dataclass(frozen=True)
class Change:
    """At ``ns``, ``version`` came to be in ``stage`` (None: no stage), or left the registry
    (``present`` false), by ``actor`` (None: only its ``created_at`` tells)."""

    ns: int
    version: str
    stage: str | None
    present: bool
    actor: str | None


@dataclass(frozen=True)
class Period:
    """``version`` held a stage from ``start`` (ns) on, since ``actor``'s change; None: no version."""

    start: int
    version: str | None
    actor: str | None


class Past:
    """Every stage change the trail and the registry tell, in order, and each stage's periods."""

    def __init__(
        self, snapshot: Snapshot, events: Sequence[Mapping[str, Any]], mtime: Callable[[str], float | None]
    ) -> None:
        per_version: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        for event in events:
            version, ns = event.get("version"), _event_ns(event)
            if isinstance(version, str) and ns is not None and sort_key(version) is not None:
                per_version.setdefault(version, []).append((ns, event))
        changes: list[Change] = []
        for version, own in per_version.items():
            changes += _replayed(version, own, snapshot, mtime)
        for entry in snapshot.entries:
            if entry.version not in per_version and entry.metadata is not None:
                start = _created_ns(entry.metadata, entry.version, mtime)
                if start is not None:
                    changes.append(Change(start, entry.version, entry.stage, True, None))
        changes.sort(key=lambda change: change.ns)  # stable: a version's own changes keep their order
        self.changes = changes
        self.first = changes[0].ns if changes else None
        self.stages = frozenset(change.stage for change in changes)
        self._periods: dict[tuple[str | None, bool], tuple[list[int], list[Period]]] = {}
        self._lock = threading.Lock()

    def periods(self, stage: str | None, include_prerelease: bool) -> tuple[list[int], list[Period]]:
        """The holders of ``stage`` (None: of the registry), each from when it began (ascending
        starts; holder None where the stage held nothing)."""
        if stage is not None and stage not in self.stages:  # no memo entry per made-up stage name
            return [], []
        key = (stage, include_prerelease)
        with self._lock:
            found = self._periods.get(key)
        if found is None:
            found = self._sweep(stage, include_prerelease)
            with self._lock:
                self._periods[key] = found
        return found

    def _sweep(self, stage: str | None, include_prerelease: bool) -> tuple[list[int], list[Period]]:
        inside: dict[str, bool] = {}
        members: dict[str, SortKey] = {}
        holder: tuple[SortKey, str] | None = None
        periods: list[Period] = []
        changes = self.changes
        actor: str | None = None
        for at, change in enumerate(changes):
            now = change.present and (stage is None or change.stage == stage)
            was = inside.get(change.version, False)
            inside[change.version] = now
            key = sort_key(change.version)
            if now != was and key is not None and (include_prerelease or not is_prerelease(key)):
                actor = change.actor
                if now:
                    members[change.version] = key
                    if holder is None or key > holder[0]:
                        holder = (key, change.version)
                else:
                    del members[change.version]
                    if holder is not None and holder[1] == change.version:
                        best = max(members.items(), key=lambda item: item[1], default=None)
                        holder = (best[1], best[0]) if best is not None else None
            if at + 1 < len(changes) and changes[at + 1].ns == change.ns:
                continue  # what holds after every change of the same moment counts
            version = holder[1] if holder is not None else None
            if (periods[-1].version if periods else None) == version:
                continue
            periods.append(Period(change.ns, version, actor))
        return [p.start for p in periods], periods

    def holder(self, stage: str | None, include_prerelease: bool, as_of: datetime) -> str | None:
        """The version that held ``stage`` (None: the highest of all) at ``as_of``;
        VersionNotFoundError before anything was known."""
        at = _ns(as_of)
        if self.first is None or at < self.first:
            known = f"; the earliest is {_datetime(self.first).isoformat()}" if self.first is not None else ""
            raise VersionNotFoundError(f"nothing is known about the registry at {as_of.isoformat()}{known}")
        starts, periods = self.periods(stage, include_prerelease)
        index = bisect.bisect_right(starts, at) - 1
        return periods[index].version if index >= 0 else None

    def timeline(self, stage: str, include_prerelease: bool) -> list[dict[str, Any]]:
        """The stage's periods as dicts, oldest first, gaps left out."""
        _, periods = self.periods(stage, include_prerelease)
        found = []
        for at, period in enumerate(periods):
            if period.version is None:
                continue
            until = periods[at + 1].start if at + 1 < len(periods) else None
            found.append(
                {
                    "version": period.version,
                    "from": _datetime(period.start),
                    "until": _datetime(until) if until is not None else None,
                    "actor": period.actor,
                }
            )
        return found


def _replayed(
    version: str,
    own: list[tuple[int, Mapping[str, Any]]],
    snapshot: Snapshot,
    mtime: Callable[[str], float | None],
) -> list[Change]:
    """The changes one version's events (oldest first) make, and where it began."""
    found: list[Change] = []
    first_ns, first = own[0]
    state: tuple[bool, str | None] = (False, None)
    if first.get("action") != "publish":  # made by hand: there before its first event
        entry = snapshot.by_version.get(version)
        metadata = entry.metadata if entry is not None else None
        deleted = next((e for _, e in own if e.get("action") == "delete"), None)
        known = metadata or (deleted.get("before") if deleted is not None else None)
        start = _created_ns(known, version, mtime if metadata is not None else None)
        state = (True, _stage_before(own, metadata))
        found.append(Change(min(start or first_ns, first_ns), version, state[1], True, None))
    for ns, event in own:
        action, before, after = event.get("action"), event.get("before"), event.get("after")
        before = before if isinstance(before, dict) else {}
        after = after if isinstance(after, dict) else {}
        new: tuple[bool, str | None]
        if action == "publish":
            new = (True, _stage(after.get("stage")))
        elif action == "delete":
            new = (False, None)
        elif "stage" in after:
            new = (True, _stage(after["stage"]))
        elif "stage" in before:
            new = (True, None)
        else:
            new = (True, state[1])
        if new != state:
            actor = event.get("actor")
            found.append(Change(ns, version, new[1], new[0], actor if isinstance(actor, str) else None))
            state = new
    return found


def _stage_before(own: list[tuple[int, Mapping[str, Any]]], metadata: Mapping[str, Any] | None) -> str | None:
    """A hand-made version's stage before its events: the ``before`` of its first stage change,
    else (none changed it) its current stage."""
    for _, event in own:
        before = event.get("before") if isinstance(event.get("before"), dict) else {}
        after = event.get("after") if isinstance(event.get("after"), dict) else {}
        if event.get("action") == "delete":
            return _stage(before.get("stage"))
        if "stage" in before or "stage" in after:
            return _stage(before.get("stage"))
    return _stage(metadata.get("stage")) if metadata is not None else None


def _created_ns(
    metadata: Mapping[str, Any] | None, version: str, mtime: Callable[[str], float | None] | None
) -> int | None:
    """When a version made by hand appeared: its ``created_at``, else its metadata file's time."""
    found = _time_ns(metadata.get("created_at")) if isinstance(metadata, Mapping) else None
    if found is None and mtime is not None:
        seconds = mtime(version)
        found = int(seconds * 1_000_000_000) if seconds is not None else None
    return found


def known_metadata(registry: ModelRegistry, version: str) -> dict[str, Any]:
    """A version's metadata as ``GET <prefix>/<version>`` gives it, or, for a deleted one, the last
    metadata its ``delete`` event kept."""
    entry = registry.snapshot().by_version.get(version)
    if entry is not None:
        return dict(entry.require_metadata())
    events = registry.history(version)
    last = events[-1] if events else {}
    if last.get("action") == "delete" and isinstance(last.get("before"), dict):
        return dict(last["before"])
    known = replay(events).get(version)  # gone without a delete event: what its events left
    if not known:
        raise VersionNotFoundError(f"version {version} not found")
    return known


class Timelines:
    """One registry's past: answers cached per state of its trail and snapshot."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._cached: tuple[tuple[Any, ...], Past] | None = None
        self._mtimes: dict[tuple[str, Any], float | None] = {}

    def past(self) -> Past:
        """The registry's past as the trail tells it now (built again only when it changed)."""
        events = self.registry.history()
        snapshot = self.registry.snapshot()
        state = (snapshot, len(events), events[-1].get("id") if events else None)
        cached = self._cached
        if cached is not None and cached[0][0] is snapshot and cached[0][1:] == state[1:]:
            return cached[1]
        past = Past(snapshot, events, functools.partial(self._mtime, snapshot))
        self._cached = (state, past)
        return past

    def _mtime(self, snapshot: Snapshot, version: str) -> float | None:
        """A version's metadata.json modification time, asked of the storage once per stamp."""
        entry = snapshot.by_version.get(version)
        key = (version, entry.stamp if entry is not None else None)
        if key not in self._mtimes:
            if len(self._mtimes) > 10_000:
                self._mtimes.clear()
            self._mtimes[key] = self.registry.storage.metadata_mtime(version)
        return self._mtimes[key]

    def latest_as_of(self, stage: str | None, include_prerelease: bool, as_of: object) -> str | None:
        """The version ``get_latest_version(stage)`` would have answered at ``as_of``."""
        when = check_as_of(as_of)
        past = self.past()
        if stage is not None and not isinstance(stage, str):  # a list, a number: matches no stage
            past.holder(None, include_prerelease, when)  # still "nothing known" before the start
            return None
        return past.holder(stage, include_prerelease, when)

    def timeline(self, stage: str, include_prerelease: bool = False) -> list[dict[str, Any]]:
        """The versions that held ``stage``, oldest first (see :meth:`Past.timeline`)."""
        if not isinstance(stage, str):
            raise InvalidArgumentError("stage must be a string")
        return self.past().timeline(stage, include_prerelease)

    def rollback(self, stage: str, actor: str | None) -> dict[str, Any]:
        """Give ``stage`` back to the version it served before its current holder, as the console
        does; RegistryError when the trail names none that is still there."""
        plan = rollback_plan(self.registry.snapshot(), self.registry.history(), stage)
        if plan is None:
            raise RegistryError(f"stage {stage} has no earlier holder to roll back to")
        expected = {v: self.registry.get_metadata(v) for v in sorted({plan.target, *plan.demote})}
        apply_rollback(self.registry, plan, actor, expected)
        return {"stage": stage, "from": plan.current, "to": plan.target, "demoted": dict(plan.demote)}
