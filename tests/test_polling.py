"""Local disk without change notification (``watch=False``: macOS, NFS, some bind mounts).

One ``stat`` pass over the versions answers the calls that arrive within ``POLL_REUSE`` times its own
duration, so calls do not each cost one ``stat`` per version, and a change made by another process
is still seen within that bound (``storage.staleness_bound``); a version folder added or renamed
changes ``versions/`` itself and is seen at the next call.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers_procs import Children, count_calls, edit_in_place, save, write_by_hand

from flask_model_registry import ModelRegistry
from flask_model_registry.storage import LocalStorage

VERSIONS = 300


@pytest.fixture
def polled(registry_root: Path) -> ModelRegistry:
    """A registry of :data:`VERSIONS` hand-made versions, opened without change notification."""
    for i in range(VERSIONS):
        write_by_hand(registry_root, f"1.{i}.0", {"auc": i / VERSIONS}, None)
    registry = ModelRegistry(registry_root, watch=False)
    assert not registry.storage.watching
    assert len(registry.list_versions()) == VERSIONS
    return registry


def test_reading_every_version_does_not_stat_every_version_per_call(polled: ModelRegistry) -> None:
    passes = count_calls(polled.storage, "scan")
    calls = 0
    for _ in range(3):
        for version in polled.list_versions():
            polled.get_metadata(version)
            calls += 2
    assert len(passes) <= calls // 50, f"{len(passes)} stat passes for {calls} calls"


def test_an_edit_in_place_by_another_process_is_seen_within_the_bound(
    polled: ModelRegistry, registry_root: Path, children: Children
) -> None:
    storage = polled.storage
    assert isinstance(storage, LocalStorage)
    path = registry_root / "versions" / "1.7.0" / "metadata.json"
    children.run(edit_in_place, path, {"auc": 0.99})  # versions/ itself does not change
    edited = time.monotonic()
    bound = storage.staleness_bound
    assert 0 < bound < 1.0, bound
    while polled.get_metadata("1.7.0") != {"auc": 0.99}:
        assert time.monotonic() - edited < bound + 0.5, f"not seen within {bound:.3f} s"
    assert json.loads(path.read_text()) == {"auc": 0.99}


def test_a_version_published_by_another_process_is_seen_at_the_next_call(
    polled: ModelRegistry, registry_root: Path, children: Children
) -> None:
    time.sleep(0.05)  # versions/ last changed long enough ago for its mtime to tell
    polled.list_versions()
    children.run(save, registry_root, "2.0.0", "new model")
    assert polled.get_latest_version() == "2.0.0"  # the rename changed versions/ itself
    assert polled.get_latest_model() == "new model"
