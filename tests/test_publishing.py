"""Writing a registry: publishing versions, promotions and metadata edits, and their audit trail."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cloudpickle
import pytest
from helpers_procs import Children, save_until_killed, save_with_a_pause_before_commit

from flask_model_registry import (
    InvalidMetadataError,
    InvalidVersionError,
    ModelRegistry,
    VersionExistsError,
    VersionNotFoundError,
)
from flask_model_registry.registry import default_actor


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time that must carry the UTC offset (``Z`` or ``+00:00``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), text
    return moment


def folder_names(registry_root: Path) -> list[str]:
    """What is in ``versions/``, hidden folders included."""
    versions = registry_root / "versions"
    return sorted(os.listdir(versions)) if versions.exists() else []


# save_model -----------------------------------------------------------------------------------------


def test_save_model_writes_the_metadata_it_returns(registry: ModelRegistry, registry_root: Path) -> None:
    before = datetime.now(timezone.utc)
    written = registry.save_model("1.0.0", lambda x: x + 1, {"auc": 0.91, "stage": "staging"})
    folder = registry_root / "versions" / "1.0.0"
    artefact = (folder / "model.pkl").read_bytes()
    assert written == json.loads((folder / "metadata.json").read_text()) == registry.get_metadata("1.0.0")
    assert written["version"] == "1.0.0"
    assert before - timedelta(seconds=1) <= parse_utc(written["created_at"]) <= datetime.now(timezone.utc)
    assert written["artifact"] == {
        "file": "model.pkl",
        "sha256": hashlib.sha256(artefact).hexdigest(),
        "size": len(artefact),
        "serializer": "cloudpickle",
        "cloudpickle_version": cloudpickle.__version__,
        "python_version": platform.python_version(),
    }
    assert written["auc"] == 0.91 and written["stage"] == "staging"
    assert registry.get_model("1.0.0")(41) == 42
    assert registry.verify("1.0.0") == written["artifact"]["sha256"]


def test_save_model_never_overwrites(registry: ModelRegistry) -> None:
    first = registry.save_model("1.0.0", "first")
    with pytest.raises(VersionExistsError, match="already exists"):
        registry.save_model("1.0.0", "second")
    assert ModelRegistry(registry.root).get_model("1.0.0") == "first"
    assert registry.get_metadata("1.0.0") == first


def test_save_model_refuses_a_folder_made_by_hand(registry: ModelRegistry, by_hand) -> None:
    folder = by_hand("1.0.0", metadata=None, model="copy in progress")
    with pytest.raises(VersionExistsError, match=r"without metadata\.json"):
        registry.save_model("1.0.0", "mine")
    assert sorted(p.name for p in folder.iterdir()) == ["model.pkl"]
    assert cloudpickle.loads((folder / "model.pkl").read_bytes()) == "copy in progress"


@pytest.mark.parametrize("key", ["version", "created_at", "artifact"])
def test_user_metadata_cannot_set_reserved_keys(registry: ModelRegistry, registry_root: Path, key) -> None:
    with pytest.raises(InvalidMetadataError, match=f"{key} is written by the registry"):
        registry.save_model("1.0.0", "model", {key: "mine", "auc": 0.5})
    assert folder_names(registry_root) == []


@pytest.mark.parametrize(
    "metadata",
    [
        {"auc": math.nan},
        {"auc": math.inf},
        {"nested": {"deep": [1, -math.inf]}},
        {"model": object()},
        {"tags": {"a"}},
        {"raw": b"bytes"},
        {1: "a key that is not a string"},
        {"stage": "not a stage!"},
        {"stage": 5},
        ["not", "a", "dict"],
        [],
        "text",
        0,
    ],
    ids=lambda value: re.sub(r" at 0x[0-9a-f]+", "", repr(value)),  # the same in every xdist worker
)
def test_bad_metadata_is_refused_and_nothing_is_written(
    registry: ModelRegistry, registry_root: Path, metadata
) -> None:
    with pytest.raises(InvalidMetadataError):
        registry.save_model("1.0.0", "model", metadata)
    assert folder_names(registry_root) == []
    assert registry.list_versions() == []
    assert registry.history() == []


@pytest.mark.parametrize("version", ["1.0", "../1.0.0", "1.0.0/x", "latest", None])
def test_an_invalid_version_is_refused(registry: ModelRegistry, registry_root: Path, version) -> None:
    with pytest.raises(InvalidVersionError):
        registry.save_model(version, "model")
    assert folder_names(registry_root) == []


def test_unicode_metadata_is_stored_as_valid_utf8(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", "model", {"note": "Größe ✓"})
    raw = (registry_root / "versions/1.0.0/metadata.json").read_bytes()
    assert json.loads(raw.decode("utf-8"))["note"] == "Größe ✓"
    assert ModelRegistry(registry_root).get_metadata("1.0.0")["note"] == "Größe ✓"


# Crashes --------------------------------------------------------------------------------------------

#: Where :func:`helpers_procs.save_until_killed` stops, and how much of the artefact is written by then.
MOMENTS = {
    "before the artefact": 0,
    "in the middle of the artefact": 4 << 20,
    "after the artefact, before the commit": 1 << 20,
}


def kill_while_saving(children: Children, root: Path, version: str, moment: str, ready: Path) -> None:
    """Start a save in a child, wait until it is at ``moment``, and ``kill -9`` it there."""
    ready.unlink(missing_ok=True)
    child = children.start(save_until_killed, root, version, moment, str(ready))
    children.wait_until(child, ready)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(children.TIMEOUT)
    assert child.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_writer_killed_while_saving_leaves_no_version(
    registry: ModelRegistry, registry_root: Path, tmp_path: Path, children: Children, moment: str
) -> None:
    registry.save_model("1.0.0", "published before")
    assert registry.list_versions() == ["1.0.0"]
    for _ in range(2):
        kill_while_saving(children, registry_root, "2.0.0", moment, tmp_path / "ready")
        assert registry.list_versions() == ["1.0.0"]
        assert ModelRegistry(registry_root).list_versions() == ["1.0.0"]
    leftovers = [name for name in folder_names(registry_root) if name != "1.0.0"]
    assert len(leftovers) == 2 and all(name.startswith(".staging-") for name in leftovers), leftovers
    for name in leftovers:
        assert sorted(os.listdir(registry_root / "versions" / name)) == ["model.pkl"]
        assert (registry_root / "versions" / name / "model.pkl").stat().st_size >= MOMENTS[moment]
    assert [event["version"] for event in registry.history()] == ["1.0.0"]

    registry.save_model("2.0.0", "saved after the crashes")
    assert registry.list_versions() == ["1.0.0", "2.0.0"]
    assert ModelRegistry(registry_root).get_latest_model() == "saved after the crashes"


def test_old_leftovers_of_crashed_writers_are_cleaned_up(
    registry: ModelRegistry, registry_root: Path
) -> None:
    old = registry_root / "versions" / ".staging-crashed-long-ago"
    recent = registry_root / "versions" / ".staging-maybe-still-writing"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "model.pkl").write_bytes(b"half a pickle")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    registry.save_model("1.0.0", "model")
    assert folder_names(registry_root) == [".staging-maybe-still-writing", "1.0.0"]

    audit = registry_root / "audit" / ".pending"  # event temporaries, of writers killed before the link
    (audit / ".crashed-long-ago.json.tmp").write_bytes(b'{"action": "set_')
    (audit / ".maybe-still-writing.json.tmp").write_bytes(b'{"action": "set_')
    os.utime(audit / ".crashed-long-ago.json.tmp", (two_hours_ago, two_hours_ago))
    registry.set_stage("1.0.0", "prod")
    assert [name for name in sorted(os.listdir(audit)) if name.startswith(".")] == [
        ".maybe-still-writing.json.tmp"
    ]
    assert [event["action"] for event in registry.history("1.0.0")] == ["publish", "set_stage"]


def test_a_very_slow_save_is_not_taken_for_a_crashed_one(
    registry: ModelRegistry, registry_root: Path, tmp_path: Path, children: Children
) -> None:
    ready, resume = tmp_path / "artefact-written", tmp_path / "commit"
    slow = children.start(save_with_a_pause_before_commit, registry_root, "1.0.0", str(ready), str(resume))
    children.wait_until(slow, ready)
    [staging] = (registry_root / "versions").glob(".staging-*")
    two_hours_ago = time.time() - 7200
    os.utime(staging, (two_hours_ago, two_hours_ago))  # older than any crash cleanup waits for

    registry.save_model("2.0.0", "a quick save meanwhile, which cleans up")
    assert staging.exists(), "the slow writer holds its folder: alive, not crashed"
    resume.touch()
    slow.join(children.TIMEOUT)
    assert slow.exitcode == 0
    assert registry.list_versions() == ["1.0.0", "2.0.0"]


# Promotions and metadata edits ----------------------------------------------------------------------


def test_set_stage_moves_a_version_between_stages(published: ModelRegistry) -> None:
    assert published.set_stage("1.1.0", "prod")["stage"] == "prod"
    assert published.get_latest_version(stage="prod") == "1.1.0"
    assert published.get_latest_version(stage="staging") is None
    assert "stage" not in published.set_stage("1.1.0", None)
    assert published.get_latest_version(stage="prod") == "1.0.0"


def test_update_metadata_is_a_json_merge_patch(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", "model", {"owner": "ml", "metrics": {"auc": 0.8, "f1": 0.7}, "canary": True})
    updated = registry.update_metadata(
        "1.0.0", {"metrics": {"auc": 0.85, "f1": None}, "canary": None, "new": 1}
    )
    assert updated == registry.get_metadata("1.0.0")
    assert updated["metrics"] == {"auc": 0.85}
    assert "canary" not in updated
    assert updated["owner"] == "ml" and updated["new"] == 1
    assert updated["artifact"]["file"] == "model.pkl"


def test_a_value_of_another_json_type_is_a_change(registry: ModelRegistry) -> None:
    """In Python ``True == 1 == 1.0``; in metadata.json they are three different values."""
    registry.save_model("1.0.0", "model", {"canary": 1})
    assert registry.update_metadata("1.0.0", {"canary": True})["canary"] is True
    assert ModelRegistry(registry.root).get_metadata("1.0.0")["canary"] is True
    assert registry.history("1.0.0")[-1]["after"] == {"canary": True}


@pytest.mark.parametrize("key", ["version", "created_at", "artifact"])
def test_reserved_keys_cannot_be_edited(registry: ModelRegistry, key: str) -> None:
    written = registry.save_model("1.0.0", "model")
    with pytest.raises(InvalidMetadataError, match="written by the registry"):
        registry.update_metadata("1.0.0", {key: None})
    assert registry.get_metadata("1.0.0") == written


@pytest.mark.parametrize("stage", ["", "a b", "prod\n", "-prod", "x" * 65, 5, ["prod"]])
def test_stage_names_are_short_plain_names(registry: ModelRegistry, stage) -> None:
    registry.save_model("1.0.0", "model")
    with pytest.raises(InvalidMetadataError, match="stage"):
        registry.set_stage("1.0.0", stage)
    with pytest.raises(InvalidMetadataError, match="stage"):
        registry.update_metadata("1.0.0", {"stage": stage})
    assert "stage" not in registry.get_metadata("1.0.0")


def test_allowed_stages_turn_a_typo_into_a_clear_error(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, allowed_stages=["staging", "prod", "archived"])
    registry.save_model("1.0.0", "model", {"stage": "staging"})
    for attempt in (
        lambda: registry.set_stage("1.0.0", "pord"),
        lambda: registry.update_metadata("1.0.0", {"stage": "pord"}),
        lambda: registry.save_model("1.1.0", "model", {"stage": "pord"}),
    ):
        with pytest.raises(
            InvalidMetadataError, match=r"unknown stage 'pord'; allowed stages: archived, prod, staging"
        ):
            attempt()
    assert registry.list_versions() == ["1.0.0"]
    assert registry.set_stage("1.0.0", "prod")["stage"] == "prod"


def test_editing_a_missing_version(registry: ModelRegistry, by_hand) -> None:
    by_hand("1.0.0", metadata=None)  # a folder, but not a version
    for version in ("1.0.0", "2.0.0"):
        with pytest.raises(VersionNotFoundError):
            registry.set_stage(version, "prod")
        with pytest.raises(VersionNotFoundError):
            registry.update_metadata(version, {"owner": "ml"})
        with pytest.raises(VersionNotFoundError):
            registry.history(version)
    with pytest.raises(InvalidVersionError):
        registry.set_stage("../1.0.0", "prod")


# The audit trail ------------------------------------------------------------------------------------


def test_history_records_every_change_oldest_first(published: ModelRegistry) -> None:
    as_published = published.get_metadata("1.1.0")
    published.set_stage("1.1.0", "prod", actor="alice")
    published.update_metadata("1.1.0", {"canary": None, "note": "rolled out"}, actor="bob")
    published.update_metadata("1.1.0", {"note": "rolled out"}, actor="carol")  # no change, no event
    events = published.history("1.1.0")
    assert [(e["action"], e["actor"]) for e in events] == [
        ("publish", "trainer"),
        ("set_stage", "alice"),
        ("update_metadata", "bob"),
    ]
    publish, promotion, edit = events
    assert publish["before"] == {}
    assert publish["after"] == as_published
    assert promotion["before"] == {"stage": "staging"} and promotion["after"] == {"stage": "prod"}
    assert edit["before"] == {"canary": True} and edit["after"] == {"note": "rolled out"}
    assert all(e["version"] == "1.1.0" for e in events)
    times = [parse_utc(e["time"]) for e in events]
    assert times == sorted(times)


def test_history_of_all_versions(published: ModelRegistry) -> None:
    published.set_stage("1.0.0", "archived")
    events = published.history()
    assert [(e["action"], e["version"]) for e in events] == [
        ("publish", "1.0.0"),
        ("publish", "1.1.0"),
        ("publish", "2.0.0-rc.1"),
        ("set_stage", "1.0.0"),
    ]
    assert events[-1]["actor"] == default_actor()
    assert ModelRegistry(published.root).history() == events


def test_hand_made_versions_have_an_empty_history(registry: ModelRegistry, by_hand) -> None:
    by_hand("1.0.0", {"owner": "ml"})
    assert registry.history("1.0.0") == []
    registry.set_stage("1.0.0", "prod")
    assert [e["action"] for e in registry.history("1.0.0")] == ["set_stage"]
    assert registry.get_metadata("1.0.0") == {"owner": "ml", "stage": "prod"}
