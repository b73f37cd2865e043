"""Canary traffic: :meth:`ModelRegistry.route` splits a stage's traffic between its stable version
and a canary, by the ``canary`` weight in the canary's metadata.

- A version's weight is its ``"canary"`` value: a number in (0, 1], or ``true`` for the registry's
  default weight. ``false``, ``null`` or no key: no weight. Anything else (``0``, ``-1``, ``5``,
  ``"0.05"``, NaN) is refused: that version takes no part in routing (neither stable nor canary),
  with one warning per version, so a typo never sends all traffic to an unvetted model.
- The stable version is the highest version of the stage (of all versions for ``stage=None``)
  without a weight; the canary is the highest weighted version above it, whatever its own stage;
  prereleases count only with ``include_prerelease``. A stage with no stable version is served by
  its own highest weighted version, alone (so a first version published as a canary is served).
- A key lands on the canary when ``blake2b(f"{canary}\\0{key}", digest_size=8)``, read as a
  big-endian integer over 2**64, is below the weight: the same in every process and on every host,
  and a key keeps its canary while the weight only grows. Without a key the split is random.
- The decision (which versions, which models, which weight) is made once per registry state and
  per ``(stage, include_prerelease)``; a warm ``route`` costs a freshness check, a dict lookup and,
  for a string key not seen since the last change, one hash (the decision remembers the rest).

This module sits above the registry: it imports :mod:`.registry`, never the other way round; the
package makes :class:`Router` each registry's ``router_class``, which ``route`` delegates to.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from random import random as _random
from typing import Any, NamedTuple

from .errors import CorruptVersionError, StorageUnavailableError, VersionNotFoundError
from .events import Observers
from .registry import LoadedModel, ModelRegistry
from .snapshot import Entry, Snapshot
from .versioning import is_prerelease

log = logging.getLogger(__name__)

_SCALE = float(1 << 64)
#: How many string keys a decision remembers the answer of (forgotten all at once when full).
KEY_MEMO_SIZE = 65_536

RoutingKey = str | bytes | int


def check_weight(value: Any) -> float:
    """A default canary weight as configured: a number (or a numeric string, from the environment)
    in (0, 1]; a clear ``ValueError`` otherwise."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"canary_weight must be a number in (0, 1], got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number <= 1:
        raise ValueError(f"canary_weight must be a number in (0, 1], got {value!r}")
    return float(number)


def weight_of(metadata: dict[str, Any], default: float) -> float | bool | None:
    """The canary weight a version's metadata gives it: a float, None (no weight: a stable
    candidate) or False (an invalid value: the version is left out of routing)."""
    value = metadata.get("canary")
    if value is None or value is False:
        return None
    if value is True:
        return default
    if type(value) in (int, float) and 0 < value <= 1:  # NaN compares false: refused
        return float(value)
    return False


class Plan(NamedTuple):
    """Which entries a stage's traffic goes to, derived from one snapshot (no model loaded)."""

    stable: Entry | None
    canary: Entry | None
    weight: float
    refused: tuple[Entry, ...]  # versions whose canary value is invalid


def plan(snap: Snapshot, stage: str | None, include_prerelease: bool, default: float) -> Plan:
    """The stable version and canary of ``stage`` in ``snap`` (see the module docstring)."""
    stable = canary = fallback = None
    weight = 0.0
    refused = []
    for entry in reversed(snap.entries):
        if entry.metadata is None or (not include_prerelease and is_prerelease(entry.key)):
            continue
        found = weight_of(entry.metadata, default)
        if found is False:
            refused.append(entry)
            continue
        in_stage = stage is None or entry.stage == stage
        if found is None:
            if in_stage:
                stable = entry
                break
        elif canary is None:
            canary, weight = entry, found
        if found is not None and in_stage and fallback is None:
            fallback = entry
    if stable is None:  # nothing without a weight: the stage's own highest canary, alone
        return Plan(fallback, None, 0.0, tuple(refused))
    return Plan(stable, canary, weight, tuple(refused))


class Decision:
    """The loaded models a stage's traffic goes to, for one snapshot, and the answer already given
    to each recent string key (so a returning key costs a dict lookup, not a hash)."""

    __slots__ = ("answers", "canary", "prefix", "snapshot", "stable", "weight")

    def __init__(
        self, snapshot: Snapshot, stable: LoadedModel, canary: LoadedModel | None, weight: float
    ) -> None:
        self.snapshot = snapshot
        self.stable = stable
        self.canary = canary
        self.weight = weight
        self.prefix = canary.version.encode() + b"\0" if canary is not None else b""
        self.answers: dict[str, LoadedModel] = {}

    def pick(self, key: RoutingKey) -> LoadedModel:
        """The answer for ``key`` (the hash of the module docstring), remembered for string keys."""
        assert self.canary is not None
        answer = self.canary if _share(_key_bytes(key), self.prefix) < self.weight else self.stable
        if type(key) is str:
            if len(self.answers) >= KEY_MEMO_SIZE:
                self.answers.clear()
            self.answers[key] = answer
        return answer


def share(key: RoutingKey, canary_version: str) -> float:
    """Where ``key`` falls in [0, 1) for ``canary_version``: below the weight means the canary."""
    return _share(_key_bytes(key), canary_version.encode() + b"\0")


def _share(key: bytes, prefix: bytes) -> float:
    return int.from_bytes(hashlib.blake2b(prefix + key, digest_size=8).digest(), "big") / _SCALE


def _key_bytes(key: RoutingKey) -> bytes:
    if type(key) is str:
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode()
    raise TypeError(f"a routing key is a str, bytes or int, not {type(key).__name__}")


class Router:
    """The routing state of one registry: the decision per ``(stage, include_prerelease)``, and
    which failures were already logged."""

    def __init__(self, registry: ModelRegistry, observers: Observers, default_weight: float) -> None:
        self._registry = registry
        self._snapshot = registry.snapshot
        self._observers = observers
        self.default_weight = check_weight(default_weight)
        self._decisions: dict[tuple[str | None, bool], Decision] = {}
        self._lock = threading.Lock()
        self._logged: set[tuple[str, object, str]] = set()

    def route(self, key: RoutingKey | None, stage: str | None, include_prerelease: bool) -> LoadedModel:
        snap = self._snapshot()
        decision = self._decisions.get((stage, include_prerelease))
        if decision is None or decision.snapshot is not snap:
            decision = self._decide(snap, stage, include_prerelease)
        if decision.canary is None:
            answer = decision.stable
        elif key is None:
            answer = decision.canary if _random() < decision.weight else decision.stable
        else:
            answer = decision.answers.get(key) if type(key) is str else None
            if answer is None:
                answer = decision.pick(key)
        if self._observers.routed:
            self._observers.each("routed", self._registry, stage, answer.version)
        return answer

    def last_served(self, stage: str | None, include_prerelease: bool) -> str | None:
        """The stable version this process's ``route`` last served for ``stage``; None if it never
        routed that stage."""
        decision = self._decisions.get((stage, include_prerelease))
        return decision.stable.version if decision is not None else None

    def _decide(self, snap: Snapshot, stage: str | None, include_prerelease: bool) -> Decision:
        slot = (stage, include_prerelease)
        with self._lock:
            previous = self._decisions.get(slot)
            if previous is not None and previous.snapshot is snap:
                return previous  # another thread decided meanwhile
            known = stage is None or stage in snap.stages  # no state kept per made-up stage name
            if known:
                memo_key = ("route", stage, include_prerelease, self.default_weight)
                found = snap.memo(
                    memo_key, lambda: plan(snap, stage, include_prerelease, self.default_weight)
                )
            else:
                found = plan(snap, stage, include_prerelease, self.default_weight)
            self._forget_gone(snap)
            for entry in found.refused:
                self._log_once(
                    entry, "refused", logging.WARNING,
                    "version %s: 'canary' must be true or a number in (0, 1], not %r; route() leaves"
                    " it out", entry.version, entry.require_metadata().get("canary"),
                )  # fmt: skip
            if found.stable is None:
                where = f" in stage {stage!r}" if stage is not None else ""
                raise VersionNotFoundError(f"no version{where} to route to")
            stable = self._load_stable(found.stable, previous, slot)
            canary = self._load_canary(found.canary, stable) if found.canary is not None else None
            decision = Decision(snap, stable, canary, found.weight)
            if known:
                self._decisions[slot] = decision
            return decision

    def _load_stable(
        self, entry: Entry, previous: Decision | None, slot: tuple[str | None, bool]
    ) -> LoadedModel:
        try:
            return LoadedModel(entry.version, self._registry.get_model(entry.version))
        except (CorruptVersionError, StorageUnavailableError, VersionNotFoundError) as exc:
            if previous is None:
                raise
            self._log_once(
                entry, f"stable {slot}", logging.ERROR,
                "version %s failed to load (%s); route() still serves %s", entry.version, exc,
                previous.stable.version,
            )  # fmt: skip
            return previous.stable

    def _load_canary(self, entry: Entry, stable: LoadedModel) -> LoadedModel | None:
        try:
            return LoadedModel(entry.version, self._registry.get_model(entry.version))
        except (CorruptVersionError, StorageUnavailableError, VersionNotFoundError) as exc:
            self._log_once(
                entry, "canary", logging.WARNING,
                "canary %s failed to load (%s); its traffic goes to %s", entry.version, exc, stable.version,
            )  # fmt: skip
            return None

    def _log_once(self, entry: Entry, what: str, level: int, message: str, *args: object) -> None:
        key = (entry.version, entry.stamp, what)
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, message, *args)

    def _forget_gone(self, snap: Snapshot) -> None:
        """Forget logged failures of metadata that changed: a fixed version may fail, and say so, again."""
        if self._logged:
            current = {(e.version, e.stamp) for e in snap.entries}
            self._logged = {k for k in self._logged if k[:2] in current}
