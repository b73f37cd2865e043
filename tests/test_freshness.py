"""A running service sees what others change in the registry at once, without a restart.

Every test runs twice: with change notification (inotify, the default on Linux) and with
``watch=False``, where every read validates the cache with ``stat``. "Others" are real processes.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from helpers_procs import (
    Children,
    copy_folder_then_metadata,
    edit_in_place,
    promote,
    save,
    save_with_a_pause_before_commit,
    write_by_hand,
)

from flask_model_registry import ModelRegistry, StorageUnavailableError, VersionNotFoundError


@pytest.fixture(params=["inotify", "stat"])
def service(request: pytest.FixtureRequest, registry_root: Path) -> ModelRegistry:
    """The registry of a running prediction service, in both ways of noticing changes."""
    registry = ModelRegistry(registry_root, watch=request.param == "inotify")
    assert registry.storage.watching == (request.param == "inotify")
    return registry


def serve_a_while(service: ModelRegistry) -> None:
    """Answer a few requests, as a running service has before a change: nothing is left pending."""
    for _ in range(3):
        service.list_versions()


def test_a_registry_created_after_the_service_started(
    service: ModelRegistry, registry_root: Path, children: Children
) -> None:
    registry_root.rmdir()
    for _ in range(3):  # a missing root is an error, not an empty registry; asked again each time
        with pytest.raises(StorageUnavailableError, match="root folder does not exist"):
            service.list_versions()
    registry_root.mkdir()
    assert service.list_versions() == []
    children.run(save, registry_root, "1.0.0", "first model")
    assert service.list_versions() == ["1.0.0"]
    assert service.get_latest_model() == "first model"


def test_a_version_published_by_another_process(
    service: ModelRegistry, registry_root: Path, children: Children
) -> None:
    children.run(save, registry_root, "1.0.0", "old")
    assert service.get_latest_model() == "old"
    serve_a_while(service)
    children.run(save, registry_root, "1.1.0", "new")
    assert service.get_latest_version() == "1.1.0"
    assert service.get_latest_model() == "new"


def test_a_version_committed_while_the_service_is_serving(
    service: ModelRegistry, registry_root: Path, tmp_path: Path, children: Children
) -> None:
    service.save_model("0.9.0", "serving")
    ready, resume = tmp_path / "artefact-written", tmp_path / "commit"
    saving = children.start(save_with_a_pause_before_commit, registry_root, "1.0.0", str(ready), str(resume))
    children.wait_until(saving, ready)
    serve_a_while(service)
    assert service.list_versions() == ["0.9.0"]
    resume.touch()  # now the commit: metadata.json into the staging folder, renamed into versions/
    saving.join(children.TIMEOUT)
    assert saving.exitcode == 0
    assert service.list_versions() == ["0.9.0", "1.0.0"]
    assert service.get_model("1.0.0")[0] == "paused"


def test_metadata_written_after_the_folder_was_listed(
    service: ModelRegistry, registry_root: Path, children: Children
) -> None:
    """The trap: the service lists while a copy is in progress, then the commit marker lands."""
    serve_a_while(service)
    children.run(write_by_hand, registry_root, "1.0.0", None, "model")  # folder and model, no metadata
    serve_a_while(service)
    assert service.list_versions() == []
    children.run(write_by_hand, registry_root, "1.0.0", {"owner": "ml"}, None)  # then metadata.json
    assert service.list_versions() == ["1.0.0"]
    assert service.get_metadata("1.0.0") == {"owner": "ml"}
    assert service.get_model("1.0.0") == "model"


def test_metadata_written_after_the_folder_was_listed_in_the_same_process(
    service: ModelRegistry, by_hand
) -> None:
    serve_a_while(service)
    by_hand("1.0.0", metadata=None)
    serve_a_while(service)
    assert service.list_versions() == []
    by_hand("1.0.0", {"owner": "ml"})
    assert service.list_versions() == ["1.0.0"]


def test_a_version_copied_in_by_hand(
    service: ModelRegistry, registry_root: Path, tmp_path: Path, children: Children
) -> None:
    service.save_model("1.0.0", "served")
    assert service.get_latest_version() == "1.0.0"
    serve_a_while(service)
    trained = write_by_hand(tmp_path / "training-run", "1.1.0", {"auc": 0.9}, "trained elsewhere")
    children.run(copy_folder_then_metadata, trained, registry_root / "versions" / "1.1.0")
    assert service.list_versions() == ["1.0.0", "1.1.0"]
    assert service.get_latest_model() == "trained elsewhere"


def test_metadata_edited_in_place_by_another_process(
    service: ModelRegistry, registry_root: Path, children: Children
) -> None:
    service.save_model("1.0.0", "model", {"auc": 0.8})
    metadata = service.get_metadata("1.0.0")
    serve_a_while(service)
    children.run(edit_in_place, registry_root / "versions/1.0.0/metadata.json", {**metadata, "auc": 0.85})
    assert service.get_metadata("1.0.0")["auc"] == 0.85


def test_a_promotion_by_another_process(
    service: ModelRegistry, registry_root: Path, children: Children
) -> None:
    service.save_model("1.0.0", "one", {"stage": "prod"})
    service.save_model("1.1.0", "two", {"stage": "staging"})
    assert service.get_latest_model(stage="prod") == "one"
    serve_a_while(service)
    children.run(promote, registry_root, "1.1.0", "prod")
    assert service.get_latest_version(stage="prod") == "1.1.0"
    assert service.get_latest_model(stage="prod") == "two"
    assert [e["action"] for e in service.history("1.1.0")] == ["publish", "set_stage"]


def test_a_version_removed_by_hand(service: ModelRegistry, registry_root: Path) -> None:
    service.save_model("1.0.0", "one")
    service.save_model("1.1.0", "two")
    assert service.get_latest_model() == "two"
    serve_a_while(service)
    shutil.rmtree(registry_root / "versions" / "1.1.0")
    assert service.list_versions() == ["1.0.0"]
    with pytest.raises(VersionNotFoundError):
        service.get_model("1.1.0")
    assert service.get_latest_model() == "one"


def test_threads_of_a_service_never_see_a_publication_late(
    service: ModelRegistry, registry_root: Path
) -> None:
    # Readers go lock-free while nothing changed; one of them rescanning must not let the others
    # answer from the old state after the change was complete.
    publisher = ModelRegistry(registry_root, watch=False)  # another instance: only the disk tells
    published = 0
    late: list[tuple[int, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            before = published
            seen = len(service.list_versions())
            if seen < before:
                late.append((before, seen))

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for minor in range(150):
            publisher.save_model(f"1.{minor}.0", minor)
            published = minor + 1
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert late == []
    assert service.get_latest() == ("1.149.0", 149)
