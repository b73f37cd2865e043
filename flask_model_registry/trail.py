"""Reading the audit trail: what it says each version's stage and flags are, which versions it
cannot explain, and which version held a stage before its current holder (for a rollback).

Pure functions over :meth:`ModelRegistry.history` events and a :class:`Snapshot`; used by the
console and by ``flask models audit --check`` (which also compares each version's own copy of its
events with the registry-wide copy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .metadata import same_json
from .registry import Snapshot
from .versioning import is_prerelease, sort_key

#: The flag whose value may be a weight (a number in (0, 1]) rather than a boolean.
CANARY = "canary"


def tracked(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The promotion state of a version: its ``stage``, every boolean flag and the canary weight."""
    return {
        key: value
        for key, value in metadata.items()
        if key == "stage" or key == CANARY or isinstance(value, bool)
    }


def apply_event(state: dict[str, Any] | None, event: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a version has after ``event``, given what it had before (None: nothing known).

    A ``publish`` event carries the whole metadata written; any other carries the changed keys.
    """
    after = event.get("after") if isinstance(event.get("after"), dict) else {}
    before = event.get("before") if isinstance(event.get("before"), dict) else {}
    if event.get("action") == "publish":
        return dict(after)
    result = dict(state or {})
    for key in before:
        if key not in after:
            result.pop(key, None)
    result.update(after)
    return result


def replay(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each version's metadata as the events (oldest first) leave it."""
    states: dict[str, dict[str, Any]] = {}
    for event in events:
        version = event.get("version")
        if isinstance(version, str):
            states[version] = apply_event(states.get(version), event)
    return states


def unexplained(snapshot: Snapshot, events: Iterable[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Versions whose current stage or flags no event explains, each with what differs."""
    states = replay(events)
    found = []
    for entry in snapshot.entries:
        if entry.metadata is None:
            continue
        current, expected = tracked(entry.metadata), tracked(states.get(entry.version, {}))
        problems = [
            f"{key} is {_shown(current, key)} but the trail says {_shown(expected, key)}"
            for key in sorted({*current, *expected})
            if (key in current) != (key in expected) or not same_json(current[key], expected[key])
        ]
        if problems:
            found.append((entry.version, problems))
    return found


def copies_differ(
    everything: Iterable[Mapping[str, Any]], own: Mapping[str, Iterable[Mapping[str, Any]]]
) -> list[tuple[str, list[str]]]:
    """Versions whose own trail (``own``: version -> its events) and the registry-wide trail
    (``everything``) do not hold the same events, each with the events missing from one of them or
    different in the two: every event is written to both, so a difference is a copy lost or edited."""
    wide: dict[str, dict[Any, Mapping[str, Any]]] = {}
    for event in everything:
        wide.setdefault(str(event.get("version")), {})[event.get("id")] = event
    found = []
    for version in sorted({*own, *wide}, key=lambda v: (sort_key(v) is None, sort_key(v) or (), v)):
        mine = {event.get("id"): event for event in own.get(version, [])}
        theirs = wide.get(version, {})
        problems = []
        for event_id in sorted({*mine, *theirs}, key=str):
            event = mine.get(event_id) or theirs[event_id]
            named = f"event {event_id} ({event.get('action')} by {event.get('actor')})"
            if event_id not in theirs:
                problems.append(f"{named} is missing from the registry-wide trail")
            elif event_id not in mine:
                problems.append(f"{named} is missing from the version's own trail")
            elif mine[event_id] != theirs[event_id]:
                problems.append(f"{named} differs between the version's own trail and the registry-wide one")
        if problems:
            found.append((version, problems))
    return found


def _shown(state: Mapping[str, Any], key: str) -> str:
    return repr(state[key]) if key in state else "unset"


class _Holder:
    """The version that serves one stage (its highest release, as ``get_latest_version``) while
    events move versions in and out: updated per event, rescanning the stage's releases only when
    the holder itself leaves (so a long trail costs its length, not its length times the versions)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.releases: dict[str, Any] = {}  # version -> sort key, of the releases in the stage now
        self.version: str | None = None

    def moved(self, version: str, stage: object) -> str | None:
        """``version`` is now in ``stage``: the holder after that."""
        key = sort_key(version)
        if stage == self.stage and key is not None and not is_prerelease(key):
            self.releases[version] = key
            if self.version is None or key > self.releases[self.version]:
                self.version = version
        elif self.releases.pop(version, None) is not None and version == self.version:
            self.version = max(self.releases, key=self.releases.__getitem__, default=None)
        return self.version


@dataclass(frozen=True)
class Rollback:
    """Giving ``stage`` back to ``target``: promote it, and send each newer holder back to the stage
    it came from (``demote``: version → stage or None), so that ``target`` is the highest again."""

    stage: str
    current: str
    target: str
    demote: dict[str, str | None] = field(default_factory=dict)


def rollback_plan(snapshot: Snapshot, events: Iterable[Mapping[str, Any]], stage: str) -> Rollback | None:
    """How to give ``stage`` back to the version that held it before its current holder, or None
    when the trail names no earlier holder that is still there and readable."""
    current = snapshot.latest(stage)
    if current is None:
        return None
    stages: dict[str, object] = {}
    came_from: dict[str, object] = {}  # the stage each version had before it last entered `stage`
    holders: list[str] = []
    serving = _Holder(stage)
    for event in events:
        version = event.get("version")
        if not isinstance(version, str):
            continue
        old = stages.get(version)
        new = apply_event({"stage": old} if old is not None else {}, event).get("stage")
        if new == stage and old != stage:
            came_from[version] = old
        stages[version] = new
        holder = serving.moved(version, new)
        if holder is not None and (not holders or holders[-1] != holder):
            holders.append(holder)
    if current.version not in holders:
        return None
    last = len(holders) - 1 - holders[::-1].index(current.version)
    for candidate in reversed(holders[:last]):
        entry = snapshot.by_version.get(candidate)
        if candidate != current.version and entry is not None and entry.metadata is not None:
            target = entry
            break
    else:
        return None
    demote = {
        e.version: (came_from.get(e.version) if isinstance(came_from.get(e.version), str) else None)
        for e in snapshot.entries
        if e.stage == stage and e.key > target.key and not is_prerelease(e.key)
    }
    return Rollback(stage, current.version, target.version, demote)
