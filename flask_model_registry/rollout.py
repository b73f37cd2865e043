"""Rollouts as operators see and make them, above the registry and its routing: what each stage
serves now (stable, canary and weight, versions that failed to load in this process), and a
promotion that ends a canary's split in the same audited change.

The console and ``flask models`` both use these, so they cannot disagree; the HTTP ``PATCH`` stays
a plain JSON merge patch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import metadata as md
from .errors import PreconditionFailedError, RegistryError, RollbackIncompleteError
from .registry import Expected, ModelRegistry
from .routing import plan, weight_of
from .snapshot import Entry, Snapshot
from .trail import Rollback

CANARY = "canary"
#: How often :func:`promote` re-reads a version whose canary value changed while it decided.
PROMOTE_ATTEMPTS = 10


def canary_label(metadata: dict[str, Any] | None) -> str | None:
    """How a version's ``canary`` value reads in a list: ``canary`` (true: the default weight),
    ``canary 0.3``, ``canary "yes" (invalid: not routed)``; None when it has no weight."""
    value = metadata.get(CANARY) if metadata is not None else None
    found = weight_of(metadata, 1.0) if metadata is not None else None
    if found is None:
        return None
    if found is False:
        return f"{CANARY} {_short_json(value)} (invalid: not routed)"
    return CANARY if value is True else f"{CANARY} {value}"


def _short_json(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did: the metadata written, and the canary value it removed (None: none)."""

    metadata: dict[str, Any]
    ended_canary: Any = None


def promote(
    registry: ModelRegistry,
    version: str,
    stage: str,
    *,
    actor: str | None = None,
    expected: Callable[[dict[str, Any]], bool] | None = None,
) -> Promotion:
    """Move ``version`` to ``stage``; if it carries a canary value, remove it in the same change
    (one audit event): promoting ends the split. ``expected``: a test of the current metadata, as
    for ``update_metadata`` (checked inside its compare-and-swap)."""
    for _ in range(PROMOTE_ATTEMPTS):
        seen = registry.get_metadata(version)
        ends = seen.get(CANARY) not in (None, False)
        caller_holds: list[bool] = []

        def decided_on(
            current: dict[str, Any], seen: dict[str, Any] = seen, mark: list[bool] = caller_holds
        ) -> bool:
            mark.append(expected is None or expected(current))
            return mark[-1] and current.get(CANARY) == seen.get(CANARY)

        try:
            if ends:
                changes = {"stage": stage, CANARY: None}
                written = registry.update_metadata(version, changes, actor=actor, expected=decided_on)
            else:
                written = registry.set_stage(version, stage, actor=actor, expected=decided_on)
        except PreconditionFailedError:
            if not caller_holds or not caller_holds[-1]:
                raise
            continue  # the canary value changed since it was read: decide again
        return Promotion(written, seen.get(CANARY) if ends else None)
    raise PreconditionFailedError(f"version {version}'s canary value kept changing; nothing changed")


def apply_rollback(
    registry: ModelRegistry, rollback: Rollback, actor: str | None, expected: Mapping[str, Expected]
) -> None:
    """Carry out a rollback plan, all or nothing: the target back into the stage, then each newer
    holder back to the stage it came from, one audited change per version.

    Every version is checked first (still as ``expected[version]`` says, else
    :class:`PreconditionFailedError`; every stage allowed); when a later change fails all the same
    (a concurrent edit, a stage rule), the ones that landed are undone, audited, before the error is
    raised, and if an undo fails too, :class:`RollbackIncompleteError` says what stays changed."""
    steps = [(rollback.target, rollback.stage), *rollback.demote.items()]
    before: dict[str, str | None] = {}
    for version, stage in steps:
        current = registry.get_metadata(version)
        if not md.holds(expected[version], current):
            raise PreconditionFailedError(
                f"version {version} changed since the rollback was planned; nothing was changed"
            )
        if stage is not None:
            md.check_stage(stage, registry.allowed_stages)
        before[version] = current.get("stage")
    landed: list[tuple[str, dict[str, Any]]] = []
    try:
        for version, stage in steps:
            landed.append(
                (version, registry.set_stage(version, stage, actor=actor, expected=expected[version]))
            )
    except RegistryError as failure:
        _undo(registry, landed, before, actor, failure)
        raise


def _undo(
    registry: ModelRegistry,
    landed: list[tuple[str, dict[str, Any]]],
    before: Mapping[str, str | None],
    actor: str | None,
    failure: RegistryError,
) -> None:
    """Put each version of ``landed`` back in the stage it had (newest change first, audited)."""
    stuck = []
    for version, written in reversed(landed):
        try:
            registry.set_stage(version, before[version], actor=actor, expected=written)
        except RegistryError as exc:
            stuck.append(f"{version} stays in stage {written.get('stage')} ({exc})")
    if stuck:
        raise RollbackIncompleteError(
            f"rollback stopped ({failure}) and could not be undone in full: {'; '.join(stuck)}"
        ) from failure


@dataclass(frozen=True)
class Serving:
    """What ``route(stage=…)`` serves from one snapshot, as this process sees it."""

    stage: str | None
    stable: Entry | None
    canary: Entry | None
    weight: float
    invalid: tuple[Entry, ...]  # versions whose canary value is invalid: left out of routing
    failed: tuple[tuple[Entry, str], ...]  # stable or canary that failed to load in this process
    instead: str | None = None  # what route() here serves while the stable version fails to load

    @property
    def alone(self) -> bool:
        """The stage's only candidate carries a weight: it serves alone (no stable version)."""
        return (
            self.stable is not None
            and self.stable.metadata is not None
            and (weight_of(self.stable.metadata, 1.0) is not None)
        )


def serving(registry: ModelRegistry, snapshot: Snapshot, stage: str | None) -> Serving:
    """The stable version, the canary and its weight of ``stage`` (routing's own plan, prereleases
    left out as ``route`` does by default), and which of them failed to load in this process."""
    weight = registry.canary_weight
    if stage is None or stage in snapshot.stages:  # no memo entry per made-up stage name
        found = snapshot.memo(("rollout-plan", stage, weight), lambda: plan(snapshot, stage, False, weight))
    else:
        found = plan(snapshot, stage, False, weight)
    failed = []
    for entry in (found.stable, found.canary):
        error = registry.load_failure(entry.version) if entry is not None else None
        if entry is not None and error is not None:
            failed.append((entry, str(error)))
    instead = None
    if failed and failed[0][0] is found.stable:
        last = registry.last_routed(stage)
        instead = last if last != found.stable.version else None
    return Serving(stage, found.stable, found.canary, found.weight, found.refused, tuple(failed), instead)


def roles(registry: ModelRegistry, snapshot: Snapshot) -> dict[str, list[tuple[str, str]]]:
    """Per version, what it does for each stage: ``(stage, role)`` with role ``serving`` (the
    stable version), ``canary`` (whatever its own stage), ``older`` (in the stage, below the one
    serving: an older holder) or ``not serving`` (in the stage, but routing leaves it out: a
    prerelease, an invalid canary value, broken metadata)."""

    def compute() -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for stage in sorted(s for s in snapshot.stages if isinstance(s, str)):
            now = serving(registry, snapshot, stage)
            for entry in snapshot.entries:
                if entry is now.stable:
                    role = "serving"
                elif entry is now.canary:
                    role = "canary"
                elif entry.stage != stage:
                    continue
                elif now.stable is not None and entry.key < now.stable.key and entry not in now.invalid:
                    role = "older"
                else:
                    role = "not serving"
                found.setdefault(entry.version, []).append((stage, role))
        return found

    result: dict[str, list[tuple[str, str]]] = snapshot.memo(
        ("rollout-roles", registry.canary_weight), compute
    )
    return result
