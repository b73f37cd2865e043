"""What a :class:`~flask_model_registry.ModelRegistry` tells its observers: loads, refreshes, routing.

The registry knows nothing of Prometheus or any other monitoring system; whatever wants to count
what it does subclasses :class:`RegistryObserver` and subscribes with
:meth:`ModelRegistry.add_observer`. Every hook is called in the thread that did the work, so it
must be quick and must not raise (an exception is logged and dropped, never passed to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import ModelRegistry

log = logging.getLogger(__name__)


class RegistryObserver:
    """Receives a registry's events; every method is a no-op here: override the ones you need."""

    def model_loaded(self, registry: ModelRegistry, version: str, seconds: float) -> None:
        """An artefact was read, checked and unpickled (not called for a model served from cache)."""

    def model_load_failed(
        self, registry: ModelRegistry, version: str, seconds: float, error: Exception
    ) -> None:
        """An artefact failed to load: missing, corrupt, failing its sha256, or the store failed."""

    def refreshed(self, registry: ModelRegistry, versions: int) -> None:
        """A refresh found a new state of the registry, holding ``versions`` versions."""

    def refresh_failed(self, registry: ModelRegistry, error: Exception) -> None:
        """The storage did not answer a refresh (the registry keeps serving its last state)."""

    def routed(self, registry: ModelRegistry, stage: str | None, version: str) -> None:
        """:meth:`ModelRegistry.route` answered ``version`` for ``stage``: called on every call."""


class Observers:
    """The observers of one registry, and per event the tuple of those that override it: notifying
    nobody costs one truth test (``if observers.routed``), on the hot path of ``route``."""

    EVENTS = ("model_loaded", "model_load_failed", "refreshed", "refresh_failed", "routed")
    model_loaded: tuple[Callable[..., None], ...]
    model_load_failed: tuple[Callable[..., None], ...]
    refreshed: tuple[Callable[..., None], ...]
    refresh_failed: tuple[Callable[..., None], ...]
    routed: tuple[Callable[..., None], ...]

    def __init__(self) -> None:
        self.subscribed: tuple[RegistryObserver, ...] = ()
        self._index()

    def add(self, observer: RegistryObserver) -> None:
        if observer not in self.subscribed:
            self.subscribed = (*self.subscribed, observer)
            self._index()

    def remove(self, observer: RegistryObserver) -> None:
        self.subscribed = tuple(o for o in self.subscribed if o is not observer)
        self._index()

    def _index(self) -> None:
        for event in self.EVENTS:
            default = getattr(RegistryObserver, event)
            hooks = tuple(
                getattr(o, event) for o in self.subscribed if getattr(type(o), event) is not default
            )
            setattr(self, event, hooks)

    def each(self, event: str, *args: object) -> None:
        """Call ``event`` on every observer that handles it; one that raises is logged, never the
        caller's problem."""
        for hook in getattr(self, event):
            try:
                hook(*args)
            except Exception:
                log.exception("registry observer %r failed on %s", hook.__self__, event)
