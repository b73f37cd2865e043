"""The audit trail: one immutable event per change, so that a change that happened has its event and
a change reported as failed has none, even across a crash or a full disk.

A writer checks everything it can first (sizes, values), then writes its event as *pending*, then
commits the change (the compare-and-swap of ``metadata.json``, or the commit of a publication), then
*finalises* the event. A writer killed in between leaves a pending event that the next writer or
reader of that version settles: it is finalised if its change is the one the metadata (or the next
event) shows, dropped if not; one whose final copies (or the version's own) exist already is
completed (the missing copy written, the pending file removed). Events carry the sha256 of the
metadata before and after, so this needs no lock and works on object storage alike. Layout under ``audit/``::

    <version>/<key>.json          the events of a version (final)
    .log/<key>.json               every event once more, for the registry-wide trail
    .pending/<id>@<version>.json  events whose change may not have landed yet

An event's ``id`` is ``<20-digit nanoseconds>-<12 hex>``: unique, and ordered as the changes
happened, whatever one host's clock says: once it has read the metadata it changes, a writer takes
an id above every pending event and the newest of the registry-wide trail, which holds every final
event (a hybrid logical clock: the host's time unless an event it follows is newer). Its
``key`` sorts the other way round, so an ordered listing gives the newest first: a page of history
costs a listing of ``limit`` names and reads of ``limit`` (immutable, cached) events, however long
the trail. Events written by earlier releases (``<version>/<id>.json``) are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from . import metadata as md
from .errors import InvalidArgumentError, InvalidMetadataError, VersionExistsError
from .storage import Storage

log = logging.getLogger(__name__)

LOG = ".log"
PENDING = ".pending"
#: The largest event the registry writes: the keys a change touched, before and after, each at
#: most a whole metadata.json; so a change that is valid is never refused for its event.
MAX_EVENT_BYTES = 2 * 256 * 1024 + 16 * 1024
#: The longest actor name recorded.
MAX_ACTOR_LENGTH = 256
#: A pending event older than this whose change is not visible is taken to be a dead writer's.
PENDING_GRACE_SECONDS = 3600.0
#: A host whose clock is this far behind the newest audit event logs a warning (once).
CLOCK_BEHIND_WARNING_SECONDS = 60.0
#: The most events one page of history may ask for.
MAX_LIMIT = 10_000
#: How many parsed events a registry keeps (they never change).
_CACHE_SIZE = 4096

_ID = re.compile(r"(\d{20})-([0-9a-f]{12})")
_NS_LIMIT = 10**20 - 1
_FLIP = str.maketrans("0123456789abcdef", "fedcba9876543210")
_DIGITS_FLIP = str.maketrans("0123456789", "9876543210")
_CHAIN = "_chain"  # the stored sha256 of the metadata before and after; not part of an answer


def key_of(event_id: str) -> str:
    """The storage name stem of an event: sorts newest first."""
    digits, hex_part = event_id.split("-")
    return f"r{digits.translate(_DIGITS_FLIP)}-{hex_part.translate(_FLIP)}"


def id_of(key: str) -> str:
    """The event id of a storage name stem (:func:`key_of` inverted)."""
    digits, hex_part = key[1:].split("-")
    return f"{digits.translate(_DIGITS_FLIP)}-{hex_part.translate(_FLIP)}"


def check_event_id(value: object) -> str:
    """``value`` if it is an event id, else :class:`InvalidArgumentError`."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgumentError(f"{value!r} is not an audit event id (20 digits, '-', 12 hex digits)")
    return value


def check_limit(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_LIMIT:
        raise InvalidArgumentError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return value


def check_actor(actor: object) -> str:
    """``actor`` if it can be recorded, else :class:`InvalidMetadataError` (before any write)."""
    if not isinstance(actor, str) or not 0 < len(actor) <= MAX_ACTOR_LENGTH:
        raise InvalidMetadataError(f"actor must be a string of 1 to {MAX_ACTOR_LENGTH} characters")
    return actor


def sha256_of(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _time_text(ns: int) -> str:
    """An event's ``time``: this host's clock reading ``ns``, ISO 8601 UTC to the millisecond."""
    when = datetime.fromtimestamp(ns // 1_000_000 / 1000, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_time(event: dict[str, Any]) -> datetime | None:
    """When an event happened, an aware time (None if its time cannot be read)."""
    try:
        when = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _encode(event: dict[str, Any]) -> bytes:
    try:  # ASCII: a lone surrogate is escaped, never written as bad UTF-8
        data = json.dumps(event, allow_nan=False, separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise InvalidMetadataError(f"audit event must be plain JSON: {exc}") from None
    if len(data) > MAX_EVENT_BYTES:
        raise InvalidMetadataError(f"audit event would be {len(data)} bytes; the limit is {MAX_EVENT_BYTES}")
    return data


def _chain_of(event: dict[str, Any]) -> tuple[Any, Any]:
    """The sha256 of the metadata before and after an event (unknown for earlier releases')."""
    chain = event.get(_CHAIN)
    if not isinstance(chain, dict):
        return object(), object()
    return chain.get("before"), chain.get("after")


def _nearest_final(order: list[str], at: int, step: int, finals: dict[str, tuple[Any, Any]]) -> Any:
    """The chain of the final event nearest to ``order[at]`` in direction ``step``, if any."""
    at += step
    while 0 <= at < len(order):
        if order[at] in finals:
            return finals[order[at]]
        at += step
    return None


class Pending:
    """An event written before its change: :meth:`finalise` once the change landed, :meth:`discard`
    once it surely did not."""

    def __init__(self, trail: AuditTrail, event: dict[str, Any], data: bytes) -> None:
        self.trail, self.event, self.data = trail, event, data
        self.version, self.id = event["version"], event["id"]

    @property
    def name(self) -> str:
        return f"{PENDING}/{self.id}@{self.version}.json"

    def finalise(self) -> None:
        """Make the event final. Never raises: the change has happened, and if this fails (a full
        disk) the pending event stays, to be finalised by the next writer or reader."""
        try:
            self.trail.finalise(self)
        except Exception as exc:
            log.warning("audit event %s of %s left pending (%s)", self.id, self.version, exc)

    def discard(self) -> None:
        """The change did not happen: forget the event (a dead writer's is dropped later)."""
        try:
            self.trail.storage.audit_delete(self.name)
        except Exception as exc:
            log.warning("pending audit event %s of %s not removed (%s)", self.id, self.version, exc)


class AuditTrail:
    """Writes and reads the audit trail of one registry's storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._legacy: dict[str, list[tuple[str, str]]] = {}  # folder -> (id, name) of old events
        self._lock = threading.Lock()
        self._warned_clock = False

    # writing --------------------------------------------------------------------------------------

    def prepare(
        self,
        action: str,
        version: str,
        before: dict[str, Any],
        after: dict[str, Any],
        actor: str,
        old: bytes | None,
        new: bytes | None,
        extra: dict[str, Any] | None = None,
    ) -> Pending:
        """Check the event, settle what dead writers of ``version`` left, and write the event as
        pending, with an id above every event it sees (:meth:`_newest_seen`): call it after reading
        the metadata that ``old`` is, and before the change. ``extra``: fields of the action's own
        (an approval's ``stage``). Raises (and nothing was written) if it cannot."""
        check_actor(actor)
        now = time.time_ns()
        event = {
            "id": "0" * 20 + "-" + "0" * 12,
            "time": _time_text(now),
            "action": action,
            "version": version,
            "actor": actor,
            "before": before,
            "after": after,
            **(extra or {}),
            _CHAIN: {"before": sha256_of(old), "after": sha256_of(new)},
        }
        _encode(event)  # the size and the values, before anything is written
        floor = self._newest_seen(version)
        self._check_clock(now, floor)
        event["id"] = f"{min(max(now, floor + 1), _NS_LIMIT):020d}-{secrets.token_hex(6)}"
        pending = Pending(self, event, _encode(event))
        self.storage.audit_create([pending.name], pending.data)
        return pending

    def _newest_seen(self, version: str) -> int:
        """Settle what dead writers of ``version`` left, and return the nanoseconds of the newest
        event id a new event must follow: of every pending event, and of the registry-wide trail
        (which holds every final event, the version's own too). So ids follow the order in which
        the changes happened, whatever one host's clock says: an event is pending from before its
        change until both final copies exist, so a writer that begins after the change sees it in
        one listing or the other (pending events are listed first). Two listings, as many as
        before ids had to follow other versions' events."""
        pendings = self._pendings(None)
        self._settle_listed({version: pendings[version]} if version in pendings else {})
        newest = [ids[-1] for ids in pendings.values()]
        names = self.storage.audit_list(LOG, start_after="r", limit=1)
        newest += [id_of(names[0].removesuffix(".json"))] if names else []
        return max((int(event_id[:20]) for event_id in newest), default=0)

    def _check_clock(self, now: int, floor: int) -> None:
        """Say once, in the log, that this host's clock is behind the trail: its events are ordered
        after the ones it follows all the same, but their ``time`` is its clock's."""
        behind = (floor - now) / 1e9
        if behind > CLOCK_BEHIND_WARNING_SECONDS and not self._warned_clock:
            self._warned_clock = True
            log.warning(
                "this host's clock is %.0f s behind the newest audit event: its events are ordered"
                " after the ones they follow, but the time they record is this clock's (check NTP)",
                behind,
            )

    def finalise(self, pending: Pending) -> None:
        """Write both final copies of ``pending`` (a copy already there counts), then remove it."""
        key = key_of(pending.id)
        self.storage.audit_create([f"{pending.version}/{key}.json", f"{LOG}/{key}.json"], pending.data)
        self.storage.audit_delete(pending.name)

    def recorded_elsewhere(self, pending: Pending) -> bool:
        """Whether another writer's event records the same change as ``pending`` (the same metadata
        before and after): two writers made one change at once, and the store took one write for
        both. Then only one event is kept, so the trail still links up."""
        version, chain = pending.version, pending.event[_CHAIN]
        ids = [i for i in self._pendings([version]).get(version, []) if i != pending.id]
        names = [f"{PENDING}/{i}@{version}.json" for i in ids]
        names += [f"{version}/{name}" for name in self.storage.audit_list(version, start_after="r", limit=2)]
        for name in names:
            try:
                other = json.loads(self.storage.audit_read(name))
            except (OSError, ValueError):
                continue
            if isinstance(other, dict) and other.get(_CHAIN) == chain and other.get("id") != pending.id:
                return True
        return False

    def refuse_deleted(self, version: str) -> None:
        """:class:`VersionExistsError` if ``version`` was deleted: its name is never used again."""
        last = self.last_event(version)
        if last is not None and last.get("action") == "delete":
            raise VersionExistsError(
                f"version {version} was deleted (at {last.get('time')}); the name of a deleted"
                " version is never reused: publish a new version"
            )

    def last_event(self, version: str) -> dict[str, Any] | None:
        """The newest final event of ``version`` (after settling its pending ones), or None: one
        listing of the pending events and one of the version's own, and a read of that event."""
        self.settle([version])
        names = self.storage.audit_list(version, start_after="r", limit=1)
        return self._read(f"{version}/{names[0]}") if names else None

    # settling what dead writers left ----------------------------------------------------------------

    def _pendings(self, versions: Iterable[str] | None) -> dict[str, list[str]]:
        """The pending events' ids (ascending) of ``versions`` (None: all)."""
        wanted = set(versions) if versions is not None else None
        found: dict[str, list[str]] = {}
        for name in self.storage.audit_list(PENDING):
            stem, _, version = name.removesuffix(".json").partition("@")
            if _ID.fullmatch(stem) and version and (wanted is None or version in wanted):
                found.setdefault(version, []).append(stem)
        return found

    def marker(self) -> Any:
        """A cheap token that changes when an event is added to the registry-wide trail, where the
        storage has one (local disk); None where it has not (object storage: poll)."""
        return self.storage.audit_marker(LOG)

    def oldest_pending(self) -> str | None:
        """The id of the oldest event still pending (its change may yet land and the event appear
        in the trail below newer ones), if any: readers that follow the trail wait for it."""
        ids = [event_id for ids in self._pendings(None).values() for event_id in ids]
        return min(ids) if ids else None

    def settle(self, versions: Iterable[str] | None) -> None:
        """Finalise, complete or drop the pending events of ``versions`` (None: every version) that
        can be decided."""
        self._settle_listed(self._pendings(versions))

    def _settle_listed(self, pendings: dict[str, list[str]]) -> None:
        for version, ids in pendings.items():
            self._settle_version(version, ids)

    def _finals_down_to(self, version: str, oldest: str) -> list[tuple[str, dict[str, Any]]]:
        """The final events of ``version`` newer than event ``oldest``, and the one before it (to
        spot a pending event that repeats its neighbour), newest first; listed a page at a time."""
        found: list[tuple[str, dict[str, Any]]] = []
        start, beyond = "r", 0
        while beyond < 1:
            names = self.storage.audit_list(version, start_after=start, limit=64)
            for name in names:
                if name >= key_of(oldest):
                    beyond += 1
                    if beyond > 1:
                        break
                event = self._read(f"{version}/{name}")
                if event is not None:
                    found.append((id_of(name.removesuffix(".json")), event))
            if len(names) < 64:
                break
            start = names[-1]
        return found

    def _settle_version(self, version: str, ids: list[str]) -> None:
        """Walk the version's events from the newest back, from the current metadata: a pending
        event whose "after" is the state reached at that point landed (finalised), one that could
        still land (its writer may be alive) is left, any other is dropped. Two pending events of
        one identical change (two writers at once) are left to their writers while young, but for
        a delete's (the newest is finalised); one that repeats the final event next to it is
        dropped."""
        try:
            current = sha256_of(self.storage.read_metadata(version)[0])
        except FileNotFoundError:
            current = None
        except OSError:
            return  # the metadata cannot be read now: decide another time
        pendings: dict[str, tuple[Pending, tuple[Any, Any]]] = {}
        for event_id in ids:
            name = f"{PENDING}/{event_id}@{version}.json"
            try:
                data = self.storage.audit_read(name)
                event = md.loads(data)
                chain = (event[_CHAIN]["before"], event[_CHAIN]["after"])
            except FileNotFoundError:
                continue  # settled by someone else meanwhile
            except (ValueError, KeyError, TypeError):
                self.storage.audit_delete(name)
                continue
            if self._read(f"{version}/{key_of(event_id)}.json") is not None:
                self._complete(Pending(self, event, data))  # final already: its writer died after
                continue
            pendings[event_id] = (Pending(self, event, data), chain)
        if not pendings:
            return
        finals = {
            event_id: _chain_of(event) for event_id, event in self._finals_down_to(version, min(pendings))
        }
        order = sorted({*pendings, *finals}, reverse=True)  # a set: a live writer may finalise meanwhile
        twins = Counter(chain for _, chain in pendings.values())
        expect: object = current
        landed_after = False
        for at, event_id in enumerate(order):
            if event_id in finals:
                expect, landed_after = finals[event_id][0], True
                continue
            pending, (before, after) = pendings[event_id]
            young = (time.time_ns() - int(event_id[:20])) / 1e9 < PENDING_GRACE_SECONDS
            if (before, after) in [_nearest_final(order, at, step, finals) for step in (-1, 1)]:
                pending.discard()  # the same change, recorded already by the writer next to it
            elif twins[(before, after)] > 1 and young and after is not None:
                if after == expect:  # one of them landed; their writers say which
                    expect, landed_after = before, True
            elif after == expect:
                # A delete's twins (the version is gone) are decided here: the writer whose delete
                # landed may have died with the others, and a gone version is never written again.
                pending.finalise()
                finals[event_id] = (before, after)  # an older twin is now a repeat of this one
                expect, landed_after = before, True
            elif not (before == current and not landed_after and young):
                pending.discard()  # else its writer may still be about to commit: left, not shown

    def _complete(self, pending: Pending) -> None:
        """``pending`` is final already (its writer died after the version's own copy, or is about
        to remove it): write what is missing (the registry-wide copy), remove the pending file."""
        try:
            if self._read(f"{LOG}/{key_of(pending.id)}.json") is None:
                self.finalise(pending)
            else:  # both copies are there: only the pending file is left
                self.storage.audit_delete(pending.name)
        except FileExistsError:  # another event under its name: the final copy stands
            self.storage.audit_delete(pending.name)
        except OSError as exc:
            log.warning("audit event %s of %s left pending (%s)", pending.id, pending.version, exc)

    # reading --------------------------------------------------------------------------------------

    def _read(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            event = self._events.get(name)
            if event is not None:
                self._events.move_to_end(name)
                return event
        try:
            event = md.loads(self.storage.audit_read(name))
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("skipping an unreadable audit event %s", name)
            return None
        if not isinstance(event, dict):
            return None
        with self._lock:
            self._events[name] = event
            while len(self._events) > _CACHE_SIZE:
                self._events.popitem(last=False)
        return event

    def _legacy_events(self, version: str | None) -> list[tuple[str, str]]:
        """Events of earlier releases, ``(id, name)`` newest first: once per process (none are
        written any more)."""
        folder = version or ""
        with self._lock:
            known = self._legacy.get(folder)
        if known is not None:
            return known
        if version is not None:
            folders = [version]
        else:
            folders = [name for name in self.storage.audit_list("") if name[0].isdigit()]
        found = []
        for name in folders:
            for file in self.storage.audit_list(name, limit=None):
                if _ID.fullmatch(file.removesuffix(".json")):
                    found.append((file.removesuffix(".json"), f"{name}/{file}"))
        found.sort(reverse=True)
        with self._lock:
            self._legacy[folder] = found
        return found

    def page(
        self, version: str | None, limit: int | None = None, before: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events (of ``version``) older than event ``before``, oldest first."""
        self.settle([version] if version is not None else None)
        folder = version if version is not None else LOG
        start = key_of(before) + ".json" if before is not None else "r"
        names = [f"{folder}/{name}" for name in self.storage.audit_list(folder, start, limit)]
        picked = [(id_of(name.rpartition("/")[2].removesuffix(".json")), name) for name in names]
        if limit is None or len(picked) < limit:
            older = [item for item in self._legacy_events(version) if before is None or item[0] < before]
            picked += older[: None if limit is None else limit - len(picked)]
        events = []
        for event_id, name in reversed(picked):
            event = self._read(name)
            if event is not None:
                events.append({"id": event_id, **{k: v for k, v in event.items() if k not in (_CHAIN, "id")}})
        return events
