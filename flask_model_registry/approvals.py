"""Approvals: "this version may enter that stage", said by someone, kept as audit events.

An approval is an ``approve`` event in the version's audit trail with the ``stage`` it approves;
it changes nothing in ``metadata.json`` (its before and after are empty). Every approval given since
the version was published is listed; a stage's ``approvals`` rule (:mod:`.rules`) counts distinct
actors, never the one who published the version (the actor of its ``publish`` event) nor the one
promoting it.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from . import audit
from . import metadata as md
from .errors import CorruptVersionError, StorageUnavailableError, VersionNotFoundError
from .versioning import check_version

if TYPE_CHECKING:
    from .registry import ModelRegistry

#: The audit action of an approval.
ACTION = "approve"


def approve(registry: ModelRegistry, version: str, stage: str, actor: str) -> dict[str, Any]:
    """Record ``actor``'s approval of ``version`` for ``stage``; returns ``{"stage", "actor", "at"}``."""
    check_version(version)
    md.check_stage(stage, registry.allowed_stages)
    audit.check_actor(actor)
    try:
        data = registry.storage.read_metadata(version)[0]
    except FileNotFoundError:
        raise VersionNotFoundError(f"version {version} not found") from None
    except (StorageUnavailableError, ConnectionError, TimeoutError):
        raise
    except OSError as exc:
        raise CorruptVersionError(f"version {version} is corrupt: {exc.__class__.__name__}") from None
    pending = registry.audit.prepare(ACTION, version, {}, {}, actor, data, data, {"stage": stage})
    pending.finalise()
    return {"stage": stage, "actor": actor, "at": pending.event["time"]}


class Known(NamedTuple):
    """What a version's trail says, as far as it has been read: the id of its newest event, who
    published it (last) and the approvals given since."""

    newest: str | None = None
    publisher: str | None = None
    approvals: tuple[dict[str, Any], ...] = ()

    def after(self, events: list[dict[str, Any]]) -> Known:
        """This, followed by ``events`` (newer, oldest first): a ``publish`` starts afresh."""
        publisher, found = self.publisher, list(self.approvals)
        for event in events:
            if event.get("action") == "publish":
                publisher, found = event.get("actor"), []
            elif event.get("action") == ACTION:
                found.append(
                    {"stage": event.get("stage"), "actor": event.get("actor"), "at": event.get("time")}
                )
        return Known(events[-1]["id"] if events else self.newest, publisher, tuple(found))


#: Per registry, per version: what its trail said when last read. Events never change and ids
#: grow as changes happen, so a read asks only for the events newer than the newest one known: a
#: version's approvals cost a page of one event while its trail stays, however long it is.
_known: weakref.WeakKeyDictionary[ModelRegistry, dict[str, Known]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def known(registry: ModelRegistry, version: str) -> Known:
    """What ``version``'s trail says now: its publisher and the approvals given since."""
    with _lock:
        before_now = _known.get(registry, {}).get(version, Known())
    fresh: list[dict[str, Any]] = []
    limit, older_than = 1, None
    while True:
        page = registry.history(version, limit=limit, before=older_than)
        newer = [e for e in page if before_now.newest is None or e["id"] > before_now.newest]
        fresh[:0] = newer
        if len(newer) < len(page) or len(page) < limit:
            break
        limit, older_than = min(limit * 8, audit.MAX_LIMIT), page[0]["id"]
    now = before_now.after(fresh)
    # An event still pending may yet land below the newest one read (a writer stalled mid-way):
    # remember only a trail with none, so that it is read again until it settles.
    if fresh and registry.audit.oldest_pending() is None:
        with _lock:
            _known.setdefault(registry, {})[version] = now
    return now


def of(registry: ModelRegistry, version: str) -> list[dict[str, Any]]:
    """The approvals of ``version`` since it was published, oldest first: ``{"stage", "actor", "at"}``."""
    return [dict(approval) for approval in known(registry, version).approvals]


def counted(registry: ModelRegistry, version: str, stage: str, promoter: str) -> int:
    """How many approvals of ``version`` for ``stage`` count: distinct actors, other than the
    publisher and ``promoter``."""
    trail = known(registry, version)
    actors = {a["actor"] for a in trail.approvals if a["stage"] == stage}
    return len(actors - {trail.publisher, promoter})
