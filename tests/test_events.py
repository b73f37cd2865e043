"""Registry observers: what the metrics module (or your own monitoring) is told, and that a broken
observer never breaks a call."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from flask_model_registry import ModelRegistry, RegistryObserver


class Recorder(RegistryObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def model_loaded(self, registry: ModelRegistry, version: str, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("loaded", version))

    def model_load_failed(
        self, registry: ModelRegistry, version: str, seconds: float, error: Exception
    ) -> None:
        self.events.append(("load failed", version, type(error).__name__))

    def refreshed(self, registry: ModelRegistry, versions: int) -> None:
        self.events.append(("refreshed", versions))

    def refresh_failed(self, registry: ModelRegistry, error: Exception) -> None:
        self.events.append(("refresh failed", type(error).__name__))

    def routed(self, registry: ModelRegistry, stage: str | None, version: str) -> None:
        self.events.append(("routed", stage, version))


def test_an_observer_hears_loads_refreshes_and_routing(registry: ModelRegistry, registry_root: Path):
    registry.save_model("1.0.0", "stable", {"stage": "prod"})
    registry.save_model("1.1.0", "broken", {"stage": "prod", "canary": 1})
    (registry_root / "versions/1.1.0/model.pkl").write_bytes(b"tampered")
    service = ModelRegistry(registry_root)
    recorder = Recorder()
    service.add_observer(recorder)
    service.add_observer(recorder)  # once is enough
    assert service.route("k", "prod").version == "1.0.0"
    assert service.route("k", "prod").version == "1.0.0"
    assert recorder.events == [
        ("refreshed", 2),
        ("loaded", "1.0.0"),
        ("load failed", "1.1.0", "CorruptVersionError"),
        ("routed", "prod", "1.0.0"),
        ("routed", "prod", "1.0.0"),
    ]
    registry_root.rename(registry_root.with_name("gone"))
    service.list_versions()  # the last state, and the failure told
    assert recorder.events[-1] == ("refresh failed", "RootMissingError")  # a StorageUnavailableError
    service.remove_observer(recorder)
    service.route("k", "prod")
    assert recorder.events[-1] == ("refresh failed", "RootMissingError")


def test_a_failing_observer_is_logged_never_raised(registry: ModelRegistry, caplog: pytest.LogCaptureFixture):
    class Broken(RegistryObserver):
        def routed(self, registry: ModelRegistry, stage: str | None, version: str) -> None:
            raise RuntimeError("monitoring is down")

    registry.save_model("1.0.0", "model")
    registry.add_observer(Broken())
    with caplog.at_level(logging.ERROR):
        assert registry.route().version == "1.0.0"
    assert "monitoring is down" in caplog.text
