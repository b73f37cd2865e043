"""The models one registry has loaded: unpickled artefacts kept in a small LRU keyed by the artefact
(a promotion or a metadata edit never reloads a model), one loader per artefact at a time, load
failures remembered until the version's metadata changes, and what each ``get_latest`` last served,
so a newer version that fails to load never takes the service down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CorruptVersionError, StorageUnavailableError, VersionNotFoundError
from .events import Observers
from .loading import artifact_of, load_artifact
from .snapshot import Entry, Snapshot
from .storage import Stamp

if TYPE_CHECKING:
    from .registry import ModelRegistry

log = logging.getLogger("flask_model_registry.registry")


class LoadedModel(NamedTuple):
    """A model and the version it was loaded from, as :meth:`ModelRegistry.get_latest` serves them."""

    version: str
    model: Any


class LoadedModels:
    """The loaded models of ``registry`` (at most ``size`` of them), loaded through its storage,
    signatures and pickle allow-list, each load told to ``observers``."""

    def __init__(self, registry: ModelRegistry, observers: Observers, size: int) -> None:
        self._registry = registry
        self._observers = observers
        self._size = max(0, int(size))
        self._models: OrderedDict[tuple[str, str, Any], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, Any], threading.Lock] = {}
        self._failures: dict[tuple[str, Stamp], CorruptVersionError] = {}
        # What each latest(stage, prerelease) last served, and from which snapshot and entry: the
        # fallback when a newer version fails to load, and the hot path while they stay.
        self._served: dict[tuple[str | None, bool], tuple[Snapshot, Entry, LoadedModel]] = {}
        self._fallbacks_logged: set[tuple[str, Stamp, tuple[str | None, bool]]] = set()

    def __len__(self) -> int:
        """How many models are loaded now."""
        return len(self._models)

    def failure(self, entry: Entry) -> CorruptVersionError | None:
        """Why ``entry`` (a version as it is now) failed to load here, or None."""
        return self._failures.get((entry.version, entry.stamp))

    def forget_all_but(self, entries: Iterable[Entry]) -> None:
        """Forget the failures of versions whose metadata is not one of ``entries`` any more."""
        if self._failures or self._fallbacks_logged:
            current = {(e.version, e.stamp) for e in entries}
            self._failures = {k: v for k, v in self._failures.items() if k in current}
            self._fallbacks_logged = {k for k in self._fallbacks_logged if k[:2] in current}

    def latest(self, snap: Snapshot, stage: str | None, include_prerelease: bool) -> LoadedModel:
        """The model of ``snap``'s latest version of ``stage``; the last one served while it fails."""
        slot = (stage, include_prerelease)
        served = self._served.get(slot)
        if served is not None and served[0] is snap:  # the hot path: nothing changed
            return served[2]
        entry = snap.latest(stage, include_prerelease)
        if entry is None:
            where = f" in stage {stage!r}" if stage is not None else ""
            raise VersionNotFoundError(f"no version{where} to load")
        if served is not None and served[1] is entry:  # a change elsewhere: the same model
            self._served[slot] = (snap, entry, served[2])
            return served[2]
        try:
            loaded = LoadedModel(entry.version, self.model(entry))
        except (CorruptVersionError, StorageUnavailableError) as exc:
            if served is None:
                raise
            if (entry.version, entry.stamp, slot) not in self._fallbacks_logged:
                self._fallbacks_logged.add((entry.version, entry.stamp, slot))
                log.error(
                    "version %s failed to load (%s); still serving %s", entry.version, exc, served[2].version
                )
            return served[2]
        self._served[slot] = (snap, entry, loaded)
        return loaded

    def model(self, entry: Entry) -> Any:
        """``entry``'s model, loaded once (other threads wait for the one loading it). Versions that
        record no sha256 are keyed by their metadata stamp; a failure is remembered until the
        metadata changes, so a corrupt artefact is not re-hashed on every request."""
        failure_key = (entry.version, entry.stamp)
        failure = self._failures.get(failure_key)
        if failure is not None:
            raise failure
        file, sha, artifact = artifact_of(entry.version, entry.require_metadata())
        cache_key = (entry.version, file, sha if sha is not None else entry.stamp)
        models = self._models
        with self._lock:
            if cache_key in models:
                models.move_to_end(cache_key)
                return models[cache_key]
            loading = self._loading.setdefault(cache_key, threading.Lock())
        with loading:  # one thread loads, the others wait for its result
            try:
                with self._lock:
                    if cache_key in models:
                        return models[cache_key]
                failure = self._failures.get(failure_key)
                if failure is not None:
                    raise failure
                model = self._load(entry, failure_key, file, sha, artifact)
                with self._lock:
                    models[cache_key] = model
                    while len(models) > self._size:
                        models.popitem(last=False)
            finally:
                with self._lock:
                    if self._loading.get(cache_key) is loading:
                        del self._loading[cache_key]
        return model

    def _load(
        self, entry: Entry, failure_key: tuple[str, Stamp], file: str, sha: str | None, artifact: Any
    ) -> Any:
        registry, started = self._registry, time.perf_counter()
        try:
            signed = registry.signatures.signed_digest(entry.version, file, sha)
            model = load_artifact(
                registry.storage, entry.version, file, sha, artifact, registry.pickle_allow, signed
            )
        except (CorruptVersionError, StorageUnavailableError) as exc:
            self._observers.each(
                "model_load_failed", registry, entry.version, time.perf_counter() - started, exc
            )
            if isinstance(exc, CorruptVersionError):
                self._failures[failure_key] = exc
            raise
        self._observers.each("model_loaded", registry, entry.version, time.perf_counter() - started)
        return model
