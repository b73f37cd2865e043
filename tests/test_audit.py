"""The audit trail: every change has its event and no failed change has one, even when the event
cannot be written (a full disk, a size limit) or the writer dies; ids, paging and links under audit/.

Local disk and S3 (moto) where the storage matters; kill -9 tests are in test_faults.py."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers_procs import Children, promote_as, reaching, with_clock_off
from servers import RegistryTarget

from flask_model_registry import (
    InvalidArgumentError,
    InvalidMetadataError,
    ModelRegistry,
    VersionNotFoundError,
)
from flask_model_registry.audit import MAX_LIMIT
from flask_model_registry.metadata import MAX_METADATA_BYTES
from flask_model_registry.trail import Rollback, rollback_plan

on_disk_and_s3 = pytest.mark.parametrize("registry_target", ["local", "s3"], indirect=True)
AUTH = {"Authorization": "Bearer test-api-token"}


def trail(registry: ModelRegistry, version: str | None = None) -> list[tuple[str, dict, dict]]:
    return [(e["action"], e["before"], e["after"]) for e in registry.history(version)]


class FullDisk(Exception):
    pass


def fail_audit_writes(registry: ModelRegistry, which: str) -> list[list[str]]:
    """Make the registry's audit writes whose first name starts with ``which`` raise ENOSPC, as a
    full disk does; returns the names of every audit write tried."""
    storage, tried = registry.storage, []
    original = storage.audit_create

    def create(names: list[str], data: bytes) -> None:
        tried.append(list(names))
        if names[0].startswith(which):
            raise OSError(errno.ENOSPC, "No space left on device")
        original(names, data)

    storage.audit_create = create  # type: ignore[method-assign]
    return tried


# ids and paging ---------------------------------------------------------------------------------


@on_disk_and_s3
def test_every_event_has_a_unique_id_ordered_as_the_changes_happened(registry_target: RegistryTarget) -> None:
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "a")
    registry.save_model("2.0.0", "b")
    for n in range(5):
        registry.update_metadata("1.0.0", {"n": n})
        registry.update_metadata("2.0.0", {"n": n})
    events = registry_target.open().history()
    ids = [e["id"] for e in events]
    assert len(ids) == 12 and len(set(ids)) == 12 and ids == sorted(ids)
    assert [(e["version"], e["after"].get("n")) for e in events[2:4]] == [("1.0.0", 0), ("2.0.0", 0)]
    assert [e["id"] for e in registry.history("1.0.0")] == [
        e["id"] for e in events if e["version"] == "1.0.0"
    ]


@on_disk_and_s3
def test_a_writer_whose_clock_is_an_hour_slow_keeps_the_trail_in_order(
    registry_target: RegistryTarget, clean_children: Children
) -> None:
    """Another host, its clock an hour slow, promotes 1.1.0 after 2.0.0 was promoted and demoted:
    its event follows theirs in the registry-wide trail, so a rollback of prod goes back to 1.0.0
    (not to 2.0.0, which was demoted for a reason). Its ``time`` is its own clock's."""
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "staging"}, actor="ci")
    registry.save_model("2.0.0", "c", {"stage": "prod"}, actor="ci")
    registry.set_stage("2.0.0", "staging", actor="ci")
    slow_host = reaching(registry_target, functools.partial(with_clock_off, -3600.0, promote_as))
    clean_children.run(slow_host, registry_target.root, "1.1.0", "prod", "slow-host")
    reader = registry_target.open()
    events = reader.history()
    assert [(e["version"], e["actor"], e["after"]["stage"]) for e in events] == [
        ("1.0.0", "ci", "prod"),
        ("1.1.0", "ci", "staging"),
        ("2.0.0", "ci", "prod"),
        ("2.0.0", "ci", "staging"),
        ("1.1.0", "slow-host", "prod"),
    ]
    clock_gap = datetime.fromisoformat(events[-2]["time"]) - datetime.fromisoformat(events[-1]["time"])
    assert clock_gap > timedelta(minutes=59), "the writer's clock was not slow"
    plan = rollback_plan(reader.snapshot(), events, "prod")
    assert plan == Rollback("prod", "1.1.0", "1.0.0", {"1.1.0": "staging"})
    assert reader.history("1.1.0") == [e for e in events if e["version"] == "1.1.0"]


def test_a_host_whose_clock_is_behind_the_trail_says_so_once(
    published: ModelRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() - 3600 * 10**9)
    with caplog.at_level(logging.WARNING, logger="flask_model_registry.audit"):
        published.set_stage("1.0.0", "archived")
        published.set_stage("1.1.0", "prod")
    assert len(caplog.records) == 1 and "clock is 3" in caplog.text and "s behind the newest" in caplog.text
    events = published.history()
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert [e["version"] for e in events[-2:]] == ["1.0.0", "1.1.0"]


@on_disk_and_s3
def test_history_pages_back_from_the_newest(registry_target: RegistryTarget) -> None:
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "a")
    for n in range(9):
        registry.update_metadata("1.0.0", {"n": n})
    everything = registry.history("1.0.0")
    assert len(everything) == 10
    newest = registry.history("1.0.0", limit=4)
    assert newest == everything[-4:]
    older = registry.history("1.0.0", limit=4, before=newest[0]["id"])
    assert older == everything[-8:-4]
    oldest = registry.history("1.0.0", limit=4, before=older[0]["id"])
    assert oldest == everything[:2]
    assert registry.history("1.0.0", limit=4, before=oldest[0]["id"]) == []
    assert registry.history("1.0.0", before=everything[5]["id"]) == everything[:5]
    assert registry.history(limit=3) == everything[-3:]
    assert registry_target.open().history(limit=3, before=everything[-1]["id"]) == everything[-4:-1]


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": MAX_LIMIT + 1},
        {"limit": "5"},
        {"limit": 2.0},
        {"limit": True},
        {"before": "x"},
        {"before": "1-2"},
        {"before": 5},
        {"before": "../../etc/passwd"},
    ],
)
def test_bad_paging_arguments_are_a_clear_error(published: ModelRegistry, arguments: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        published.history("1.0.0", **arguments)


def test_history_over_http_pages_and_refuses_bad_values(client, published: ModelRegistry, json_error) -> None:
    published.set_stage("1.1.0", "prod")
    published.set_stage("1.1.0", "archived")
    everything = client.get("/models/1.1.0/history").get_json()
    assert [e["action"] for e in everything] == ["publish", "set_stage", "set_stage"]
    page = client.get("/models/1.1.0/history?limit=2")
    assert page.get_json() == everything[1:]
    before = everything[1]["id"]
    assert client.get(f"/models/1.1.0/history?limit=2&before={before}").get_json() == everything[:1]
    again = client.get("/models/1.1.0/history?limit=2", headers={"If-None-Match": page.headers["ETag"]})
    assert again.status_code == 304
    for query in ("limit=0", "limit=x", "limit=", "limit=99999999", "before=nope", "limit=1.5", "limit=%00"):
        response = client.get(f"/models/1.1.0/history?{query}")
        assert response.status_code == 400, query
        json_error(response)


def test_events_written_by_earlier_releases_are_read_with_their_ids(registry_root: Path) -> None:
    shutil.copytree(Path(__file__).parent.parent / "registry", registry_root, dirs_exist_ok=True)
    registry = ModelRegistry(registry_root)
    old = registry.history("1.0.0")
    assert [e["action"] for e in old] == ["publish"] and old[0]["id"].startswith("0179")
    registry.set_stage("1.0.0", "archived")
    events = registry.history()
    assert [(e["version"], e["action"]) for e in events] == [
        ("1.0.0", "publish"),
        ("1.1.0", "publish"),
        ("1.0.0", "set_stage"),
    ]
    assert registry.history(limit=1, before=events[-1]["id"]) == events[1:2]


# size limits: checked before anything is written ------------------------------------------------


@on_disk_and_s3
def test_a_change_near_the_metadata_limit_is_made_and_recorded(registry_target: RegistryTarget) -> None:
    """Before and after of a big value together exceed the metadata limit: the event still fits."""
    registry = registry_target.open(refresh_interval=0)
    big = MAX_METADATA_BYTES * 3 // 4
    registry.save_model("1.0.0", "model", {"notes": "a" * big})
    registry.update_metadata("1.0.0", {"notes": "b" * big})
    assert registry.get_metadata("1.0.0")["notes"] == "b" * big
    assert [e["after"]["notes"][0] for e in registry_target.open().history("1.0.0")] == ["a", "b"]


def test_a_change_refused_for_its_event_changes_nothing(published: ModelRegistry) -> None:
    before = published.get_metadata("1.0.0")
    with pytest.raises(InvalidMetadataError, match="actor"):
        published.set_stage("1.0.0", "archived", actor="x" * 10_000)
    with pytest.raises(InvalidMetadataError, match="actor"):
        published.save_model("3.0.0", "model", actor="z" * 257)
    assert published.get_metadata("1.0.0") == before
    assert "3.0.0" not in published.list_versions()
    assert [e["action"] for e in published.history("1.0.0")] == ["publish"]


# a full disk --------------------------------------------------------------------------------------


@on_disk_and_s3
def test_a_full_disk_before_the_change_fails_the_call_and_changes_nothing(
    registry_target: RegistryTarget,
) -> None:
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "model", {"stage": "staging"})
    tried = fail_audit_writes(registry, ".pending/")
    with pytest.raises(OSError) as raised:
        registry.set_stage("1.0.0", "prod")
    assert raised.value.errno == errno.ENOSPC and tried
    with pytest.raises(OSError):
        registry.save_model("2.0.0", "model")
    other = registry_target.open()
    assert other.get_metadata("1.0.0")["stage"] == "staging"
    assert other.list_versions() == ["1.0.0"]
    assert [e["action"] for e in other.history()] == ["publish"]
    registry_target.open().save_model("2.0.0", "model")  # the retry, once there is room again


@on_disk_and_s3
def test_a_full_disk_after_the_change_keeps_the_change_and_its_event(registry_target: RegistryTarget) -> None:
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "model", {"stage": "staging"})
    fail_audit_writes(registry, "1.0.0/")  # the final names: the pending event was written
    assert registry.set_stage("1.0.0", "prod")["stage"] == "prod"  # it happened: not reported as failed
    assert registry.save_model("2.0.0", "model")["version"] == "2.0.0"
    fail_audit_writes(registry, "2.0.0/")
    other = registry_target.open()  # a reader settles what is left pending
    assert other.get_metadata("1.0.0")["stage"] == "prod"
    assert trail(other, "1.0.0")[-1] == ("set_stage", {"stage": "staging"}, {"stage": "prod"})
    assert [(e["version"], e["action"]) for e in other.history()][-2:] == [
        ("1.0.0", "set_stage"),
        ("2.0.0", "publish"),
    ]


REAL_DISK_SCENARIO = textwrap.dedent(
    """
    import errno, json, os, subprocess, sys
    from flask_model_registry import ModelRegistry
    disk = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], check=True)
    registry = ModelRegistry(os.path.join(disk, "registry"))
    registry.save_model("1.0.0", "model", {"stage": "staging"})
    filler = os.path.join(disk, "filler")

    def leave(pages):
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        os.truncate(filler, os.path.getsize(filler) - pages * 4096)

    outcomes = {}
    for pages, value in [(0, "a"), (1, "b"), (4, "c")]:
        leave(pages)
        try:
            registry.update_metadata("1.0.0", {"notes": value * 5000})
            pending = [n for n in os.listdir(f"{disk}/registry/audit/.pending") if n[0] != "."]
            outcomes[pages] = f"changed, {len(pending)} event left pending"
        except OSError as exc:
            outcomes[pages] = errno.errorcode[exc.errno]
        os.unlink(filler)
    reader = ModelRegistry(os.path.join(disk, "registry"))
    print(json.dumps({
        "outcomes": outcomes,
        "notes": reader.get_metadata("1.0.0").get("notes", "")[:1],
        "trail": [e["after"].get("notes", "")[:1] for e in reader.history("1.0.0")[1:]],
    }))
    """
)


def test_a_real_full_disk(tmp_path: Path) -> None:
    """A real tmpfs of 1 MiB filled up (in a private mount namespace): with no room the call fails
    and nothing changed; with room for the event but not the metadata, likewise; with room for
    both but not the final event, the change is made and its event settled by the next reader."""
    if shutil.which("unshare") is None:
        pytest.fail("needs unshare (util-linux) to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    run = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", REAL_DISK_SCENARIO, str(disk)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    print(found)
    assert found["outcomes"] == {"0": "ENOSPC", "1": "ENOSPC", "4": "changed, 1 event left pending"}
    assert found["notes"] == "c" and found["trail"] == ["c"]


# links under audit/ and .locks/ ---------------------------------------------------------------------


def test_links_under_audit_that_lead_outside_are_refused(published: ModelRegistry, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = {
        "id": "0" * 20 + "-" + "0" * 12,
        "action": "secret",
        "version": "9.9.9",
        "before": {},
        "after": {},
    }
    (outside / "01795839490417385883-2232444a7f20.json").write_text(json.dumps(secret))
    audit = Path(published.root, "audit")
    (audit / "9.9.9").symlink_to(outside)
    published.save_model("9.9.9", "model")
    assert [
        e["action"] for e in published.history("9.9.9")
    ] == []  # not the outside file, and no event either
    os.rename(audit / "1.1.0", tmp_path / "moved")
    (audit / "1.1.0").symlink_to(tmp_path / "moved")
    assert published.history("1.1.0") == []
    assert "secret" not in [e["action"] for e in published.history()]


def test_a_locks_folder_linked_outside_is_refused(published: ModelRegistry, tmp_path: Path) -> None:
    outside = tmp_path / "locks-outside"
    outside.mkdir()
    locks = Path(published.root, ".locks")
    shutil.rmtree(locks, ignore_errors=True)
    locks.symlink_to(outside)
    with pytest.raises(OSError, match="outside"):
        published.set_stage("1.0.0", "archived")
    assert list(outside.iterdir()) == []
    assert published.get_metadata("1.0.0")["stage"] == "prod"


def test_history_of_an_unknown_version(published: ModelRegistry) -> None:
    with pytest.raises(VersionNotFoundError):
        published.history("7.7.7", limit=5)
