"""Deleting versions and retention (``delete_version``, ``gc``): what serves is never deleted, a
delete is one step for readers and leaves a ``delete`` event, and ``gc`` follows its rules."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import servers

from flask_model_registry import (
    ModelRegistry,
    PreconditionFailedError,
    RegistryError,
    VersionExistsError,
    VersionInUseError,
    VersionNotFoundError,
)
from flask_model_registry.errors import ConflictError


def save(registry: ModelRegistry, version: str, **metadata: object) -> None:
    registry.save_model(version, {"weights": version}, metadata, actor="trainer")


@pytest.fixture
def shelf(registry: ModelRegistry) -> ModelRegistry:
    """1.0.0 and 1.1.0 with no stage below 2.0.0 (prod): the older two serve nothing."""
    save(registry, "1.0.0")
    save(registry, "1.1.0")
    save(registry, "2.0.0", stage="prod")
    return registry


def refused(registry: ModelRegistry, version: str) -> str:
    """Delete ``version`` expecting a refusal; the message."""
    with pytest.raises(VersionInUseError) as caught:
        registry.delete_version(version, actor="ops")
    assert caught.value.http_status == 409 and isinstance(caught.value, RegistryError)
    assert caught.value.reasons and version in str(caught.value)
    return str(caught.value)


# delete ------------------------------------------------------------------------------------------


def test_a_delete_removes_the_version_and_records_its_last_metadata(shelf: ModelRegistry) -> None:
    before = shelf.get_metadata("1.0.0")
    shelf.delete_version("1.0.0", actor="ops")
    assert shelf.list_versions() == ["1.1.0", "2.0.0"]
    assert ModelRegistry(shelf.root).list_versions() == ["1.1.0", "2.0.0"], "another process too"
    events = shelf.history("1.0.0")
    assert [e["action"] for e in events] == ["publish", "delete"]
    assert events[-1]["before"] == before and events[-1]["after"] == {} and events[-1]["actor"] == "ops"
    assert shelf.history()[-1]["id"] == events[-1]["id"], "in the registry-wide trail too"
    assert not (Path(shelf.root) / "versions/1.0.0").exists()
    assert not any((Path(shelf.root) / ".deleted").iterdir()), "the rest removed after the one step"


def test_a_missing_version_is_not_found(shelf: ModelRegistry) -> None:
    with pytest.raises(VersionNotFoundError):
        shelf.delete_version("9.9.9")
    shelf.delete_version("1.0.0")
    with pytest.raises(VersionNotFoundError, match="deleted at"):
        shelf.delete_version("1.0.0")
    assert [e["action"] for e in shelf.history("1.0.0")] == ["publish", "delete"], "one delete event"


def test_actor_and_expected_may_be_given_by_position(shelf: ModelRegistry) -> None:
    seen = shelf.get_metadata("1.0.0")
    shelf.delete_version("1.0.0", "ana", seen)  # delete_version(version, actor=None, expected=None)
    event = shelf.history("1.0.0")[-1]
    assert (event["action"], event["actor"]) == ("delete", "ana")


def test_expected_makes_the_delete_conditional(shelf: ModelRegistry) -> None:
    seen = shelf.get_metadata("1.0.0")
    shelf.update_metadata("1.0.0", {"note": "changed"})
    with pytest.raises(PreconditionFailedError):
        shelf.delete_version("1.0.0", expected=seen)
    assert "1.0.0" in shelf.list_versions()
    shelf.delete_version("1.0.0", expected=lambda current: current.get("note") == "changed")
    assert "1.0.0" not in shelf.list_versions()


def test_a_deleted_name_is_never_reused(shelf: ModelRegistry) -> None:
    shelf.delete_version("1.0.0")
    with pytest.raises(VersionExistsError, match="was deleted"):
        save(shelf, "1.0.0")
    assert "1.0.0" not in shelf.list_versions()
    assert not [p for p in (Path(shelf.root) / "versions").iterdir() if p.name.startswith(".staging")]


def test_history_still_answers_for_a_deleted_version(shelf: ModelRegistry) -> None:
    shelf.delete_version("1.1.0")
    fresh = ModelRegistry(shelf.root)
    assert [e["action"] for e in fresh.history("1.1.0")] == ["publish", "delete"]


# what is protected ---------------------------------------------------------------------------------


def test_the_latest_version_of_a_stage_is_protected(shelf: ModelRegistry) -> None:
    save(shelf, "2.1.0", stage="staging")
    assert "'staging'" in refused(shelf, "2.1.0") and "get_latest_version" in refused(shelf, "2.1.0")
    shelf.set_stage("1.1.0", "prod")  # below 2.0.0: an older holder, not served
    shelf.delete_version("1.1.0")


def test_the_latest_version_of_all_is_protected_prereleases_included(shelf: ModelRegistry) -> None:
    save(shelf, "3.0.0")  # no stage, the highest: get_latest_version() answers it
    assert "no stage" in refused(shelf, "3.0.0")
    save(shelf, "4.0.0-rc.1")
    assert "prereleases included" in refused(shelf, "4.0.0-rc.1")
    save(shelf, "5.0.0-rc.1", stage="staging")
    message = refused(shelf, "5.0.0-rc.1")
    assert "'staging' (prereleases included)" in message


def test_a_canary_is_protected_whatever_its_stage(shelf: ModelRegistry) -> None:
    save(shelf, "1.5.0", canary=0.2, stage="archived")
    save(shelf, "3.0.0", stage="archived")  # the highest, but retired: not protecting 1.5.0
    assert "canary weight (0.2)" in refused(shelf, "1.5.0")
    shelf.update_metadata("1.5.0", {"canary": None})
    shelf.delete_version("1.5.0")


def test_an_invalid_canary_value_protects_nothing(shelf: ModelRegistry) -> None:
    shelf.update_metadata("1.0.0", {"canary": "0.2"})  # routing refuses it
    shelf.delete_version("1.0.0")


def test_what_route_serves_is_protected(shelf: ModelRegistry) -> None:
    # 1.9.0 is prod's stable for route() while 2.0.0 is a canary of prod (it carries a weight)
    save(shelf, "1.9.0", stage="prod")
    shelf.update_metadata("2.0.0", {"canary": 0.5})
    message = refused(shelf, "1.9.0")
    assert "route serves it for stage 'prod'" in message


def test_a_retired_stage_protects_nothing(shelf: ModelRegistry) -> None:
    save(shelf, "3.0.0", stage="archived")  # the highest version of all, and of "archived"
    shelf.delete_version("3.0.0")
    assert shelf.list_versions() == ["1.0.0", "1.1.0", "2.0.0"]


def test_retired_stages_are_configurable(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, retired_stages=["attic"])
    save(registry, "1.0.0", stage="prod")
    save(registry, "2.0.0", stage="archived")
    save(registry, "3.0.0", stage="attic")
    assert "'archived'" in refused(registry, "2.0.0"), "archived is a stage like any other here"
    registry.delete_version("3.0.0")
    with pytest.raises(TypeError):
        ModelRegistry(registry_root, retired_stages="attic")


def test_a_stages_rollback_target_is_protected_until_it_gets_a_newer_holder(shelf: ModelRegistry) -> None:
    save(shelf, "3.0.0", stage="prod")  # prod: 2.0.0, then 3.0.0; a rollback returns to 2.0.0
    shelf.set_stage("2.0.0", None)
    message = refused(shelf, "2.0.0")
    assert "rollback of stage 'prod'" in message, "protected though it serves nothing now"
    save(shelf, "4.0.0", stage="prod")  # now a rollback returns to 3.0.0
    shelf.delete_version("2.0.0")
    assert "rollback of stage 'prod'" in refused(shelf, "3.0.0")


def test_an_archived_rollback_target_is_not_protected(shelf: ModelRegistry) -> None:
    save(shelf, "3.0.0", stage="prod")  # prod: 2.0.0, then 3.0.0; a rollback returns to 2.0.0
    shelf.set_stage("2.0.0", "archived")  # retired: never protected
    shelf.delete_version("2.0.0")
    assert "2.0.0" not in shelf.list_versions()


def test_two_dead_deleters_of_one_version_leave_one_delete_event(shelf: ModelRegistry) -> None:
    """One deleter killed before its rename, the next one after it: both left their event pending
    (twins: the same change). The next reader records the delete once."""
    data, stamp = shelf.storage.read_metadata("1.0.0")
    last = shelf.get_metadata("1.0.0")
    shelf.audit.prepare("delete", "1.0.0", last, {}, "first", data, None)  # killed before the rename
    shelf.audit.prepare("delete", "1.0.0", last, {}, "second", data, None)
    shelf.storage.remove_version("1.0.0", stamp)  # ... and the second killed right after it
    reader = ModelRegistry(shelf.root)
    assert "1.0.0" not in reader.list_versions()
    deletes = [e for e in reader.history("1.0.0") if e["action"] == "delete"]
    assert [(e["actor"], e["before"], e["after"]) for e in deletes] == [("second", last, {})]
    assert [e["id"] for e in reader.history() if e["action"] == "delete"] == [deletes[0]["id"]]
    assert reader.audit.oldest_pending() is None


def test_a_demoted_version_can_be_deleted(shelf: ModelRegistry) -> None:
    save(shelf, "3.0.0", stage="staging")
    refused(shelf, "3.0.0")
    shelf.set_stage("3.0.0", None)
    save(shelf, "3.1.0")  # the highest of all now
    shelf.delete_version("3.0.0")


def test_what_was_live_when_still_answers_for_a_deleted_version(shelf: ModelRegistry) -> None:
    shelf.set_stage("1.0.0", "staging")
    held = datetime.now(timezone.utc)
    shelf.set_stage("1.1.0", "staging")  # staging: 1.0.0, then 1.1.0
    save(shelf, "1.2.0", stage="staging")  # then 1.2.0: a rollback returns to 1.1.0, not 1.0.0
    shelf.delete_version("1.0.0")
    assert shelf.get_latest_version("staging", as_of=held) == "1.0.0"
    assert [period["version"] for period in shelf.timeline("staging")] == ["1.0.0", "1.1.0", "1.2.0"]


# retention ---------------------------------------------------------------------------------------


def test_gc_keeps_the_newest_of_each_stage(shelf: ModelRegistry) -> None:
    for version in ("0.1.0", "0.2.0", "0.3.0"):
        save(shelf, version, stage="staging")
    save(shelf, "0.0.1", stage="prod")
    plan = shelf.gc(keep_last=1, dry_run=True)
    # 0.2.0 stays too: staging held it before 0.3.0, so a rollback of staging returns to it
    assert plan["deleted"] == ["0.0.1", "0.1.0", "1.0.0"] and plan["dry_run"] is True
    assert plan["bytes_freed"] > 0 and plan["leftovers"] == []
    assert "0.0.1" in shelf.list_versions(), "a dry run changes nothing"
    done = shelf.gc(keep_last=1, actor="retention")
    assert done == {**plan, "dry_run": False}
    assert shelf.list_versions() == ["0.2.0", "0.3.0", "1.1.0", "2.0.0"]
    assert shelf.history("0.1.0")[-1]["actor"] == "retention"


def test_gc_counts_prereleases_in_their_stages_group(registry_root: Path, by_hand) -> None:
    # made by hand: no trail, so no rollback target protects anything here
    for version in ("1.9.0", "1.10.0", "1.11.0-rc.1", "1.11.0"):
        by_hand(version, {"stage": "prod"})
    by_hand("2.0.0", {})
    registry = ModelRegistry(registry_root)
    # prod's newest two are 1.11.0 and 1.11.0-rc.1; 1.10.0 is above 1.9.0 (not by the string)
    assert registry.gc(keep_last=2, dry_run=True)["deleted"] == ["1.9.0", "1.10.0"]
    assert registry.gc(keep_last=3, dry_run=True)["deleted"] == ["1.9.0"]


def test_gc_without_a_rule_deletes_no_version(shelf: ModelRegistry) -> None:
    assert shelf.gc() == {"deleted": [], "leftovers": [], "bytes_freed": 0, "dry_run": False}
    assert shelf.list_versions() == ["1.0.0", "1.1.0", "2.0.0"]


def test_gc_by_age_and_both_rules(registry_root: Path, by_hand) -> None:
    registry = ModelRegistry(registry_root)
    by_hand("1.0.0", {"created_at": "2020-01-01T00:00:00Z"})
    by_hand("1.1.0", {})  # no created_at: its metadata.json's modification time
    old = time.time() - 40 * 86400
    os.utime(registry_root / "versions/1.1.0/metadata.json", (old, old))
    by_hand("1.2.0", {})
    by_hand("2.0.0", {"created_at": "2020-01-01T00:00:00Z", "stage": "prod"})
    assert registry.gc(older_than=timedelta(days=30), dry_run=True)["deleted"] == ["1.0.0", "1.1.0"]
    assert registry.gc(keep_last=2, older_than=timedelta(days=30), dry_run=True)["deleted"] == ["1.0.0"]
    assert registry.gc(keep_last=5, older_than=timedelta(days=1))["deleted"] == []


@pytest.mark.parametrize("bad", [{"keep_last": -1}, {"keep_last": 1.5}, {"older_than": 30}])
def test_gc_refuses_bad_rules(shelf: ModelRegistry, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        shelf.gc(**bad)  # type: ignore[arg-type]


def test_gc_removes_leftovers_by_their_rules(registry_root: Path, shelf: ModelRegistry) -> None:
    versions = registry_root / "versions"
    old = time.time() - 2 * 3600
    for name in ("3.0.0", ".staging-dead", ".staging-young", "3.1.0", "notes"):
        (versions / name).mkdir()
        (versions / name / "model.pkl").write_bytes(b"x" * 10)
    for name in ("3.0.0", ".staging-dead", "notes"):
        for path in (versions / name / "model.pkl", versions / name):
            os.utime(path, (old, old))
    half_done = registry_root / ".deleted" / "0.9.0@abc"
    half_done.mkdir(parents=True)
    (half_done / "model.pkl").write_bytes(b"y" * 7)
    plan = shelf.gc(dry_run=True)
    assert plan["leftovers"] == [".staging-dead", "0.9.0@abc", "3.0.0"] and plan["bytes_freed"] == 27
    assert shelf.gc() == {**plan, "dry_run": False}
    assert sorted(p.name for p in versions.iterdir()) == [
        ".staging-young",
        "1.0.0",
        "1.1.0",
        "2.0.0",
        "3.1.0",
        "notes",
    ]
    assert not half_done.exists()


def test_a_delete_decided_on_a_stale_state_changes_nothing(
    any_registry: ModelRegistry, registry_target: servers.RegistryTarget
) -> None:
    save(any_registry, "1.0.0")
    save(any_registry, "2.0.0", stage="prod")
    seen = any_registry.snapshot().by_version["1.0.0"].stamp
    any_registry.update_metadata("1.0.0", {"note": "changed since"})
    with pytest.raises(ConflictError):  # the store's own conditional delete (or the version's lock)
        any_registry.storage.remove_version("1.0.0", seen)
    assert registry_target.open().list_versions() == ["1.0.0", "2.0.0"]
    any_registry.delete_version("1.0.0")
    with pytest.raises(FileNotFoundError):
        any_registry.storage.remove_version("1.0.0", seen)


@pytest.mark.parametrize("registry_target", ["s3"], indirect=True)
def test_a_delete_decides_on_the_metadata_as_it_is_now(
    any_registry: ModelRegistry, registry_target: servers.RegistryTarget
) -> None:
    save(any_registry, "1.0.0")
    save(any_registry, "2.0.0", stage="prod")
    assert any_registry.get_latest_version("staging") is None
    path = registry_target.path("versions", "1.0.0", "metadata.json")
    edited = {**json.loads(registry_target.filesystem.cat_file(path)), "stage": "staging"}
    registry_target.filesystem.pipe_file(path, json.dumps(edited).encode())  # by hand: no manifest
    assert "'staging'" in refused(any_registry, "1.0.0")


# every storage -----------------------------------------------------------------------------------


def test_delete_and_gc_on_every_storage(
    any_registry: ModelRegistry, registry_target: servers.RegistryTarget
) -> None:
    for version, stage in (("1.0.0", None), ("1.1.0", None), ("2.0.0", "prod")):
        save(any_registry, version, **({"stage": stage} if stage else {}))
    other = registry_target.open(refresh_interval=0.5)
    assert other.list_versions() == ["1.0.0", "1.1.0", "2.0.0"]
    refused(any_registry, "2.0.0")
    any_registry.delete_version("1.0.0", actor="ops")
    assert any_registry.list_versions() == ["1.1.0", "2.0.0"]
    assert registry_target.stored_names("versions", "1.0.0") == [], "artefact removed too"
    assert [e["action"] for e in other.history("1.0.0")] == ["publish", "delete"]
    with pytest.raises(VersionExistsError, match="was deleted"):
        save(other, "1.0.0")
    deadline = time.monotonic() + 30
    while "1.0.0" in other.list_versions():  # within its refresh interval, not its full listing
        assert time.monotonic() < deadline, "the other registry still lists the deleted version"
        time.sleep(0.05)
    assert registry_target.open().list_versions() == ["1.1.0", "2.0.0"], "a cold start too"
    # a half-done delete on object storage (killed after metadata.json went): the artefact waits
    # for gc, which removes it at any age since the version's last event is its delete
    fs = registry_target.filesystem
    fs.pipe_file(registry_target.path("versions", "1.0.0", "model-left.pkl"), b"left behind")
    assert any_registry.gc(dry_run=True)["leftovers"] == ["1.0.0"]
    assert any_registry.gc()["bytes_freed"] == len(b"left behind")
    assert registry_target.stored_names("versions", "1.0.0") == []


def test_gc_reads_the_trail_once_unless_another_writer_comes_between(
    shelf: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(6):
        save(shelf, f"0.{n}.0")
    whole_reads, checks = [], []
    history = shelf.history

    def counted(version: str | None = None, limit: int | None = None, before: str | None = None) -> list:
        if version is None and limit is None:
            whole_reads.append(None)
        if limit == 1:
            checks.append(None)
            if len(checks) == 4:  # before the fourth delete, another writer changes something
                shelf.update_metadata("2.0.0", {"note": "meanwhile"}, actor="someone-else")
        return history(version, limit, before)

    monkeypatch.setattr(shelf, "history", counted)
    result = shelf.gc(keep_last=1)
    assert result["deleted"] == ["0.0.0", "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "1.0.0"]
    assert len(whole_reads) == 2, "read at the start, and again after the other writer's change only"
    assert [e["action"] for e in shelf.history("0.3.0")] == ["publish", "delete"]


def test_a_broken_version_can_be_deleted(shelf: ModelRegistry, by_hand) -> None:
    by_hand("1.5.0", raw=b'{"stage": "prod", ')  # unreadable metadata: its stage is unknown
    assert shelf.snapshot().by_version["1.5.0"].error
    assert shelf.gc(keep_last=0, dry_run=True)["deleted"] == ["1.0.0", "1.1.0"], "gc never picks it"
    shelf.delete_version("1.5.0", actor="ops")  # but a person may
    assert "1.5.0" not in shelf.list_versions()
    assert shelf.history("1.5.0")[-1]["before"] == {}, "no metadata to keep"
