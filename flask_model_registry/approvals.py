"""Approvals: "this version may enter that stage", said by someone, kept as audit events.

An approval is an ``approve`` event in the version's audit trail with the ``stage`` it approves;
it changes nothing in ``metadata.json`` (its before and after are empty). Every approval is
recorded and listed; a stage's ``approvals`` rule (:mod:`.rules`) counts distinct actors, never the
one who published the version (the actor of its ``publish`` event) nor the one promoting it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def listed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The approvals among a version's audit ``events``, oldest first: ``{"stage", "actor", "at"}``."""
    return [
        {"stage": e.get("stage"), "actor": e.get("actor"), "at": e.get("time")}
        for e in events
        if e.get("action") == ACTION
    ]


def of(registry: ModelRegistry, version: str) -> list[dict[str, Any]]:
    """The approvals of ``version``, oldest first: ``{"stage", "actor", "at"}``."""
    return listed(registry.history(version))


def publisher(events: list[dict[str, Any]]) -> str | None:
    """Who published the version: the actor of its ``publish`` event (None for a hand-made one)."""
    return next((e.get("actor") for e in events if e.get("action") == "publish"), None)


def counted(registry: ModelRegistry, version: str, stage: str, promoter: str) -> int:
    """How many approvals of ``version`` for ``stage`` count: distinct actors, other than the
    publisher and ``promoter``."""
    events = registry.history(version)
    actors = {a["actor"] for a in listed(events) if a["stage"] == stage}
    return len(actors - {publisher(events), promoter})
