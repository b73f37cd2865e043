"""Retiring versions without taking down what serves: delete one version, and collect garbage by a
retention rule (``gc``), crash-safe on every storage.

- **Protected** from a delete (:class:`VersionInUseError`, naming why): every version that
  ``get_latest_version(stage)`` or ``route(stage=…)`` answers now for some stage or for no stage,
  prereleases included, unless the version sits in a retired stage (``retired_stages``, default
  ``["archived"]``); every version with a canary weight routing obeys, whatever its stage; and for
  each stage that is not retired, the version a rollback would give it back to (from the audit
  trail), until the stage gets a newer holder, unless it sits in a retired stage now (a version
  in a retired stage is never protected, but for the canary weight routing obeys).
- **One step for readers**: the audit event is written as pending first, then the version leaves
  every listing at once (on local disk its folder is renamed out of ``versions/`` into
  ``<root>/.deleted/``; on object storage ``metadata.json`` is removed and the manifest gets a
  tombstone), then the event is made final and the rest (the artefact, the folder) is removed. A
  ``kill -9`` anywhere leaves the whole version or no listed version; the next ``gc`` (or a retried
  delete) removes what is left. The ``delete`` event's ``before`` is the version's last metadata,
  its ``after`` is ``{}``; a deleted version's name is never published again.
- **Retention** (``gc``): within each stage (versions without one are one group; prereleases count
  in their stage's), the unprotected versions beyond the newest ``keep_last`` and/or older than
  ``older_than`` go, in ascending order, each through the same checked delete, so a dry run names
  exactly what a real run deletes (unless the registry changes meanwhile). What crashed writers left
  goes too: SemVer-named folders or prefixes without ``metadata.json`` older than an hour, staging
  folders older than an hour whose writer holds no lock, and half-done deletes whatever their age.

This module sits above the registry (it reads routing's plan and the trail's rollback plan); the
package makes :class:`Lifecycle` each registry's ``lifecycle_class``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn

from . import audit
from . import metadata as md
from .errors import (
    ConflictError,
    InvalidArgumentError,
    PreconditionFailedError,
    VersionInUseError,
    VersionNotFoundError,
)
from .registry import Expected, ModelRegistry, default_actor
from .routing import plan, weight_of
from .snapshot import Entry, Snapshot, entry_from
from .storage.base import Leftover
from .trail import rollback_plan
from .versioning import check_version

log = logging.getLogger(__name__)

#: Leftovers without a ``delete`` event wait this long: a publish may still be writing them.
LEFTOVER_AGE = timedelta(hours=1)
_ATTEMPTS = 20


def protection(
    registry: ModelRegistry, snap: Snapshot, events: Iterable[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Why each protected version of ``snap`` may not be deleted now (see the module docstring)."""
    reasons: dict[str, list[str]] = {}

    def protect(entry: Entry | None, why: str, retired_ok: bool = True) -> None:
        if entry is None or (retired_ok and entry.stage in registry.retired_stages):
            return
        found = reasons.setdefault(entry.version, [])
        if why not in found:
            found.append(why)

    live = sorted(s for s in snap.stages if isinstance(s, str) and s not in registry.retired_stages)
    weight = registry.canary_weight
    for stage in (None, *live):
        asked = f"stage {stage!r}" if stage is not None else "no stage"
        for prerelease in (False, True):
            among = " (prereleases included)" if prerelease else ""
            protect(snap.latest(stage, prerelease), f"get_latest_version answers it for {asked}{among}")
            routed = plan(snap, stage, prerelease, weight)
            protect(routed.stable, f"route serves it for {asked}{among}")
    for entry in snap.entries:
        found = weight_of(entry.metadata, weight) if entry.metadata is not None else None
        if found:
            protect(entry, f"it carries a canary weight ({found:g}) that routing obeys", retired_ok=False)
    events = list(events)
    for stage in live:
        rollback = rollback_plan(snap, events, stage)
        if rollback is not None:
            why = f"a rollback of stage {stage!r} returns to it (until the stage gets a newer holder)"
            protect(snap.by_version.get(rollback.target), why)
    return reasons


class Lifecycle:
    """Delete and retention for one registry (built per call: it keeps no state of its own)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    # delete ---------------------------------------------------------------------------------------

    def delete_version(self, version: str, actor: str | None, expected: Expected | None) -> None:
        """Delete ``version`` unless it is protected; see :meth:`ModelRegistry.delete_version`."""
        check_version(version)
        actor = audit.check_actor(actor or default_actor())
        self._delete(version, actor, expected)

    def _delete(
        self, version: str, actor: str, expected: Expected | None, trail: list[dict[str, Any]] | None = None
    ) -> int:
        """The checked delete; the bytes the version took (its folder, as last listed). ``trail``:
        the whole audit trail, when the caller has it at hand (its own delete event is added)."""
        registry, storage = self.registry, self.registry.storage
        for _ in range(_ATTEMPTS):
            registry.mark_changed()  # decide on the state as it is now, not as last refreshed
            snap = registry.snapshot()
            entry = snap.by_version.get(version)
            try:
                if entry is None:
                    raise FileNotFoundError(version)
                data, stamp = storage.read_metadata(version)
            except FileNotFoundError:
                self._gone(version)
            if stamp != entry.stamp:  # newer than the last refresh saw (a hand edit on object storage)
                snap = _with(snap, entry_from(version, (data, stamp)))
            current = md.parse_metadata(data)[0]
            if expected is not None and (current is None or not md.holds(expected, current)):
                raise PreconditionFailedError(
                    f"version {version} has changed since it was read; nothing changed"
                )
            why = protection(registry, snap, registry.history() if trail is None else trail).get(version)
            if why:
                raise VersionInUseError(
                    f"version {version} is in use: {'; '.join(why)}. Demote it first (remove its stage"
                    " or its canary weight), then delete it.",
                    why,
                )
            size = storage.footprint([version]).get(version, (0, 0.0))[0]
            pending = registry.audit.prepare("delete", version, current or {}, {}, actor, data, None)
            try:
                storage.remove_version(version, stamp)
            except ConflictError:
                pending.discard()  # changed meanwhile: decide again
                continue
            except FileNotFoundError:
                # Gone: deleted by another writer at once (its event records it), or by this very
                # request, retried by the client after its answer was lost (then this event does).
                if registry.audit.recorded_elsewhere(pending):
                    pending.discard()
                    continue
            except BaseException:
                if self._still_there(version):
                    pending.discard()
                    raise
            registry.mark_changed()
            pending.finalise()
            if trail is not None:
                trail.append(pending.event)
            try:
                storage.purge_version(version)
            except Exception as exc:  # deleted all the same: the next gc removes the rest
                log.warning(
                    "version %s deleted, but its files were not all removed (%s); gc removes them",
                    version,
                    exc,
                )
            return size
        raise ConflictError(
            f"version {version} kept changing; gave up deleting it after {_ATTEMPTS} attempts"
        )

    def _gone(self, version: str) -> NoReturn:
        """``version`` is not (or no longer) there: finish a half-done delete of it, then say so."""
        last = self.registry.audit.last_event(version)
        if last is not None and last.get("action") == "delete":
            self.registry.storage.purge_version(version)
            self.registry.mark_changed()
            raise VersionNotFoundError(
                f"version {version} not found: it was deleted at {last.get('time')} by {last.get('actor')}"
            )
        raise VersionNotFoundError(f"version {version} not found")

    def _still_there(self, version: str) -> bool:
        """Whether ``version``'s metadata is still there (a removal that raised may have landed)."""
        try:
            self.registry.storage.read_metadata(version)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return True

    # retention ------------------------------------------------------------------------------------

    def gc(
        self, keep_last: int | None, older_than: timedelta | None, dry_run: bool, actor: str | None
    ) -> dict[str, Any]:
        """See :meth:`ModelRegistry.gc`."""
        if keep_last is not None and (type(keep_last) is not int or keep_last < 0):
            raise InvalidArgumentError(f"keep_last must be a whole number, 0 or more, not {keep_last!r}")
        if older_than is not None and (not isinstance(older_than, timedelta) or older_than < timedelta(0)):
            raise InvalidArgumentError(f"older_than must be a timedelta of 0 or more, not {older_than!r}")
        actor = audit.check_actor(actor or default_actor())
        registry, storage = self.registry, self.registry.storage
        with storage.reusing_listing():
            registry.mark_changed()
            snap = registry.snapshot()
            leftovers = storage.leftovers()
            candidates = _beyond(snap, keep_last) if keep_last is not None or older_than is not None else []
            footprint = storage.footprint([e.version for e in candidates])
        trail = registry.history() if candidates else []
        protected = protection(registry, snap, trail) if candidates else {}
        now = datetime.now(timezone.utc)
        going = [
            e
            for e in candidates
            if e.version not in protected
            and (older_than is None or now - _created(e, footprint.get(e.version)) > older_than)
        ]
        going.sort(key=lambda e: e.key)
        gone_leftovers = [left for left in leftovers if self._leftover_goes(left, now)]
        deleted: list[str] = []
        freed = 0
        for entry in going:
            if dry_run:
                deleted.append(entry.version)
                freed += footprint.get(entry.version, (0, 0.0))[0]
                continue
            if [e["id"] for e in registry.history(limit=1)] != [e["id"] for e in trail[-1:]]:
                trail = registry.history()  # another writer since: read it again
            try:
                freed += self._delete(entry.version, actor, None, trail)
            except (VersionInUseError, VersionNotFoundError, ConflictError) as exc:
                log.info("gc: %s stays: %s", entry.version, exc)
                continue
            deleted.append(entry.version)
        names = []
        for left in sorted(gone_leftovers, key=lambda item: item.name):
            names.append(left.name)
            freed += left.size if dry_run else storage.remove_leftover(left)
        if not dry_run and gone_leftovers:
            registry.mark_changed()
        return {"deleted": deleted, "leftovers": names, "bytes_freed": freed, "dry_run": dry_run}

    def _leftover_goes(self, leftover: Leftover, now: datetime) -> bool:
        """Whether ``gc`` removes ``leftover`` (see the module docstring)."""
        if leftover.kind == "deleted":
            return True
        if leftover.kind == "staging" and leftover.locked:
            return False
        if now - datetime.fromtimestamp(leftover.modified, timezone.utc) > LEFTOVER_AGE:
            return True
        if leftover.kind != "partial":
            return False
        last = self.registry.audit.last_event(leftover.name)  # a half-done delete goes at any age
        return last is not None and last.get("action") == "delete"


def _with(snap: Snapshot, entry: Entry) -> Snapshot:
    """``snap`` with ``entry`` in place of the entry of its version."""
    entries = tuple(entry if e.version == entry.version else e for e in snap.entries)
    return Snapshot(entries, {**snap.by_version, entry.version: entry})


def _beyond(snap: Snapshot, keep_last: int | None) -> list[Entry]:
    """The readable versions beyond the newest ``keep_last`` of their stage (None: all of them)."""
    groups: dict[str | None, list[Entry]] = {}
    for entry in snap.entries:
        if entry.metadata is not None:  # a broken version's stage is unknown: never collected
            groups.setdefault(entry.stage, []).append(entry)
    found = []
    for entries in groups.values():
        newest_first = entries[::-1]
        found += newest_first[keep_last:] if keep_last is not None else newest_first
    return found


def _created(entry: Entry, footprint: tuple[int, float] | None) -> datetime:
    """When a version was made: its ``created_at``, else its ``metadata.json``'s modification time."""
    value = entry.metadata.get("created_at") if entry.metadata is not None else None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    modified = footprint[1] if footprint is not None else time.time()
    return datetime.fromtimestamp(modified, timezone.utc)
