"""Several writers and readers at once: real processes (gunicorn workers, training jobs) and threads."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import helpers_procs
from helpers_procs import Children, SlowToLoad, race_to_save, race_to_update

from flask_model_registry import ModelRegistry

WRITERS = 6


def test_writers_racing_for_one_version_leave_exactly_one_winner(
    registry: ModelRegistry, registry_root: Path, children: Children
) -> None:
    reports = children.race(race_to_save, registry_root, "1.0.0", list(range(WRITERS)))
    outcomes = Counter(outcome for outcome, _ in reports)
    assert outcomes == {"won": 1, "lost": WRITERS - 1}
    (winner,) = [payload for outcome, payload in reports if outcome == "won"]

    assert registry.list_versions() == ["1.0.0"]
    assert registry.verify("1.0.0") == registry.get_metadata("1.0.0")["artifact"]["sha256"]
    assert registry.get_model("1.0.0") == {"payload": winner}
    assert registry.get_metadata("1.0.0")["writer"] == winner
    assert [e["action"] for e in registry.history()] == ["publish"]
    assert sorted(p.name for p in (registry_root / "versions").iterdir()) == ["1.0.0"], "losers clean up"


def test_concurrent_metadata_edits_lose_no_update(
    registry: ModelRegistry, registry_root: Path, children: Children
) -> None:
    registry.save_model("1.0.0", "model", {"owner": "ml"})
    keys = [f"approved_by_{i}" for i in range(WRITERS)]
    assert sorted(children.race(race_to_update, registry_root, "1.0.0", keys)) == keys

    metadata = ModelRegistry(registry_root).get_metadata("1.0.0")
    assert all(metadata[key] is True for key in keys)
    assert metadata["owner"] == "ml" and metadata["version"] == "1.0.0"
    edits = [e for e in registry.history("1.0.0") if e["action"] == "update_metadata"]
    assert sorted((e["actor"], tuple(e["after"])) for e in edits) == [(key, (key,)) for key in keys]
    assert all(e["before"] == {} for e in edits)


def test_threads_asking_for_one_model_load_it_once(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", SlowToLoad())
    service = ModelRegistry(registry.root)  # a fresh worker: nothing cached yet
    loads_before = helpers_procs.LOADS
    start = threading.Barrier(8)

    def predict(_: int) -> object:
        start.wait(timeout=10)
        return service.get_latest_model()

    with ThreadPoolExecutor(max_workers=8) as pool:
        models = list(pool.map(predict, range(8), timeout=30))
    assert helpers_procs.LOADS - loads_before == 1
    assert all(model is models[0] for model in models)
    assert isinstance(models[0], SlowToLoad)


def test_threads_asking_for_different_models_load_each_once(registry: ModelRegistry) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        registry.save_model(version, SlowToLoad())
    service = ModelRegistry(registry.root)
    loads_before = helpers_procs.LOADS
    versions = ["1.0.0", "1.1.0", "2.0.0"] * 4

    with ThreadPoolExecutor(max_workers=len(versions)) as pool:
        models = list(pool.map(service.get_model, versions, timeout=30))
    assert helpers_procs.LOADS - loads_before == 3
    assert len({id(model) for model in models}) == 3
