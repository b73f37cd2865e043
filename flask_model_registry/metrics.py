"""Prometheus metrics of the registries an app serves from (needs the ``metrics`` extra).

The collectors are made once per process and registered in no Prometheus registry of their own
choosing: :func:`exposition` renders them for ``<prefix>/metrics``, and :func:`register` adds them to
another registry (``prometheus_client.REGISTRY``, as ``prometheus-flask-exporter`` uses). Under
gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` (``example_app/gunicorn_conf.py``
does): each worker then writes its samples there and any worker's ``/metrics`` adds them all up.

The registry knows nothing of this module: :class:`RegistryMetrics` is a
:class:`~flask_model_registry.events.RegistryObserver`, one per registry, that knows its ``model``
label (the named model's name, ``""`` for the default registry).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .events import RegistryObserver
from .registry import ModelRegistry

#: Where multiprocess mode keeps its files; prometheus_client reads this variable at import.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "model_registry_"
LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Collectors(NamedTuple):
    """Every metric the package exposes (names as the SPEC gives them)."""

    versions: Gauge
    served_info: Gauge
    loads: Counter
    load_failures: Counter
    load_seconds: Histogram
    refresh_failures: Counter
    routed: Counter


def multiprocess_mode() -> bool:
    """Whether samples go to ``PROMETHEUS_MULTIPROC_DIR`` (several worker processes) or stay here."""
    return bool(os.environ.get(MULTIPROC_ENV))


@functools.cache
def collectors() -> Collectors:
    """The process's collectors, made on first use."""
    return Collectors(
        versions=Gauge(
            f"{PREFIX}versions",
            "Versions listed in the registry at its last refresh (the default registry).",
            multiprocess_mode="livemostrecent",
            registry=None,
        ),
        served_info=Gauge(
            f"{PREFIX}served_info",
            "1 for the version this process last served by route() for a model and stage asked.",
            ["model", "stage", "version"],
            multiprocess_mode="liveall",
            registry=None,
        ),
        loads=Counter(
            f"{PREFIX}model_loads", "Artefacts loaded (read, checked, unpickled).", ["version"], registry=None
        ),
        load_failures=Counter(
            f"{PREFIX}model_load_failures",
            "Artefacts that failed to load: missing, corrupt, failing sha256, store down.",
            ["version"],
            registry=None,
        ),
        load_seconds=Histogram(
            f"{PREFIX}model_load_seconds",
            "Seconds to read, check and unpickle an artefact (failures included).",
            buckets=LOAD_BUCKETS,
            registry=None,
        ),
        refresh_failures=Counter(
            f"{PREFIX}refresh_failures", "Refreshes in which the storage did not answer.", registry=None
        ),
        routed=Counter(
            f"{PREFIX}routed",
            "route() answers per model, stage asked and version answered.",
            ["model", "stage", "version"],
            registry=None,
        ),
    )


#: (model, stage) -> the version this process last served there (what served_info shows).
_served: dict[tuple[str, str], str] = {}
_served_lock = threading.Lock()


class RegistryMetrics(RegistryObserver):
    """Counts one registry's events into :func:`collectors`, as model ``model``."""

    def __init__(self, model: str = "") -> None:
        self.model = model
        self._metrics = collectors()
        self._routed: dict[tuple[str, str], Any] = {}  # labelled children, looked up once
        self._remove_stale = not multiprocess_mode()  # a file's sample cannot be removed: zeroed

    def model_loaded(self, registry: ModelRegistry, version: str, seconds: float) -> None:
        self._metrics.loads.labels(version).inc()
        self._metrics.load_seconds.observe(seconds)

    def model_load_failed(
        self, registry: ModelRegistry, version: str, seconds: float, error: Exception
    ) -> None:
        self._metrics.load_failures.labels(version).inc()
        self._metrics.load_seconds.observe(seconds)

    def refreshed(self, registry: ModelRegistry, versions: int) -> None:
        if self.model == "":
            self._metrics.versions.set(versions)

    def refresh_failed(self, registry: ModelRegistry, error: Exception) -> None:
        self._metrics.refresh_failures.inc()

    def routed(self, registry: ModelRegistry, stage: str | None, version: str) -> None:
        stage = stage or ""
        child = self._routed.get((stage, version))
        if child is None:
            child = self._routed[(stage, version)] = self._metrics.routed.labels(self.model, stage, version)
        child.inc()
        if _served.get((self.model, stage)) != version:
            self._serve(stage, version)

    def _serve(self, stage: str, version: str) -> None:
        with _served_lock:
            last = _served.get((self.model, stage))
            if last == version:
                return
            _served[(self.model, stage)] = version
            info = self._metrics.served_info
            if last is not None:
                info.labels(self.model, stage, last).set(0)
                if self._remove_stale:
                    info.remove(self.model, stage, last)
            info.labels(self.model, stage, version).set(1)


def observe(registry: ModelRegistry, model: str = "") -> RegistryMetrics:
    """Count ``registry``'s loads, refreshes and routing answers, labelled ``model``."""
    observer = RegistryMetrics(model)
    registry.add_observer(observer)
    return observer


def register(target: CollectorRegistry) -> None:
    """Add the package's collectors to ``target`` (e.g. ``prometheus_client.REGISTRY``), to expose
    them through the app's own ``/metrics``; not needed in multiprocess mode, where the files in
    ``PROMETHEUS_MULTIPROC_DIR`` already hold them."""
    for collector in collectors():
        target.register(collector)


class _Exposed(Collector):
    """The package's metrics as ``/metrics`` shows them: every name, samples or not, and no
    ``served_info`` sample left at 0 by a version no longer served."""

    def collect(self) -> Iterator[Any]:
        if multiprocess_mode():
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            families = [f for f in merged.collect() if f.name.startswith(PREFIX)]
        else:
            families = [f for c in collectors() for f in c.collect()]
        seen = set()
        for family in families:
            # No *_created samples (multiprocess mode has none: one shape in both modes), and no
            # served_info sample of a version no longer served (zeroed, see RegistryMetrics).
            family.samples = [
                s
                for s in family.samples
                if not s.name.endswith("_created") and (s.value or family.name != f"{PREFIX}served_info")
            ]
            seen.add(family.name)
            yield family
        for collector in collectors():
            for family in collector.describe():
                if family.name not in seen:
                    yield family


def exposition() -> tuple[bytes, str]:
    """The body and content type of ``<prefix>/metrics``: this process's samples, or in multiprocess
    mode those of every live worker (and the counts of those that exited)."""
    target = CollectorRegistry(auto_describe=False)
    target.register(_Exposed())
    return generate_latest(target), CONTENT_TYPE_LATEST
