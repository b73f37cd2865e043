"""What a :class:`~flask_model_registry.ModelRegistry` tells its observers: loads, refreshes, routing.

The registry knows nothing of Prometheus or any other monitoring system; whatever wants to count
what it does subclasses :class:`RegistryObserver` and subscribes with
:meth:`ModelRegistry.add_observer`. Every hook is called in the thread that did the work, so it
must be quick and must not raise (an exception is logged and dropped, never passed to the caller).
"""

from __future__ import annotations

import logging
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
    """The observers of one registry: a tuple, so that notifying none costs one truth test."""

    def __init__(self) -> None:
        self.subscribed: tuple[RegistryObserver, ...] = ()

    def add(self, observer: RegistryObserver) -> None:
        if observer not in self.subscribed:
            self.subscribed = (*self.subscribed, observer)

    def remove(self, observer: RegistryObserver) -> None:
        self.subscribed = tuple(o for o in self.subscribed if o is not observer)

    def notify(self, event: str, *args: object) -> None:
        """Call ``event`` on every observer; one that raises is logged, never the caller's problem."""
        for observer in self.subscribed:
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("registry observer %r failed on %s", observer, event)
