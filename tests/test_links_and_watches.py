"""Registries behind symbolic links that deployments switch, aliases, and the resources change
notification may use (inotify watches, descriptors)."""

from __future__ import annotations

import gc
import logging
import os
import time
import warnings
from pathlib import Path

import pytest
from helpers_procs import Children, count_calls, edit_in_place, update_through, write_by_hand

from flask_model_registry import ModelRegistry, VersionAliasError
from flask_model_registry.storage import watch
from flask_model_registry.storage.local import LocalStorage

WATCH_MODES = pytest.mark.parametrize("watching", [True, False], ids=["inotify", "stat"])


def switch_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one step, as Kubernetes, git-sync and ``ln -sfn`` deploys do."""
    tmp = link.with_name(f"{link.name}.tmp")
    tmp.symlink_to(target)
    os.rename(tmp, link)


def release(folder: Path, models: dict[str, str]) -> None:
    for version, model in models.items():
        write_by_hand(folder, version, {"release": folder.name}, model)


# symbolic links switched by deployments ---------------------------------------------------------


@WATCH_MODES
def test_a_root_link_switched_to_another_release_is_followed(tmp_path: Path, watching: bool) -> None:
    release(tmp_path / "blue", {"1.0.0": "blue 1"})
    release(tmp_path / "green", {"1.0.0": "green 1", "2.0.0": "green 2"})
    current = tmp_path / "current"
    current.symlink_to("blue")
    registry = ModelRegistry(current, watch=watching)
    assert registry.list_versions() == ["1.0.0"] and registry.get_latest_model() == "blue 1"

    switch_link(current, "green")
    assert registry.list_versions() == ["1.0.0", "2.0.0"]
    assert registry.get_model("1.0.0") == "green 1" and registry.get_latest_model() == "green 2"
    switch_link(current, "blue")
    assert registry.list_versions() == ["1.0.0"] and registry.get_model("1.0.0") == "blue 1"


@WATCH_MODES
def test_a_kubernetes_data_link_switched_is_followed(registry_root: Path, watching: bool) -> None:
    """A ConfigMap-style volume: ``versions -> ..data/versions``, ``..data -> ..<timestamp>``."""
    release(registry_root / "..2026_01", {"1.0.0": "first"})
    (registry_root / "..data").symlink_to("..2026_01")
    (registry_root / "versions").symlink_to("..data/versions")
    registry = ModelRegistry(registry_root, watch=watching)
    assert registry.get_latest_model() == "first"
    for _ in range(3):
        registry.list_versions()

    release(registry_root / "..2026_02", {"1.0.0": "first", "1.1.0": "second"})
    switch_link(registry_root / "..data", "..2026_02")
    assert registry.list_versions() == ["1.0.0", "1.1.0"]
    assert registry.get_latest_model() == "second"
    write_by_hand(registry_root / "..2026_02", "1.2.0", {"late": True}, "third")  # watched there now
    assert registry.get_latest_model() == "third"


# aliases: one folder, two names -------------------------------------------------------------------


def race_through(children: Children, root: Path, names: list[str], keys_each: int) -> tuple[set, set]:
    go = children.context.Barrier(len(names) + 1)
    results = children.context.Queue()
    for i, name in enumerate(names):
        keys = [f"k{i}_{j}" for j in range(keys_each)]
        children.start(update_through, root, name, keys, go, results)
    go.wait(Children.TIMEOUT)
    acknowledged: set[str] = set()
    refused: set[str] = set()
    for _ in names:
        ok, no = results.get(timeout=Children.TIMEOUT)
        acknowledged.update(ok)
        refused.update(no)
    return acknowledged, refused


def test_writes_through_an_alias_are_refused_and_none_is_lost(
    registry: ModelRegistry, registry_root: Path, children: Children
) -> None:
    registry.save_model("1.0.0", "model")
    (registry_root / "versions" / "1.0.0+alias").symlink_to("1.0.0")
    assert registry.list_versions() == ["1.0.0", "1.0.0+alias"]
    assert registry.get_model("1.0.0+alias") == "model"
    with pytest.raises(VersionAliasError, match=r"alias of 1\.0\.0"):
        registry.set_stage("1.0.0+alias", "prod")

    acknowledged, refused = race_through(children, registry_root, ["1.0.0", "1.0.0+alias"] * 2, 25)
    assert len(acknowledged) == 50 and len(refused) == 50
    metadata = ModelRegistry(registry_root).get_metadata("1.0.0")
    assert acknowledged <= set(metadata) and not refused & set(metadata)


def test_two_links_to_one_folder_share_one_lock(registry_root: Path, children: Children) -> None:
    """Two version names linked to one folder elsewhere in the root: racing writers through both
    names lose no acknowledged change."""
    write_by_hand(registry_root / "shared", "x", {"owner": "ml"}, "model")
    (registry_root / "versions").mkdir()
    for name in ("2.0.0", "2.0.0+b"):
        (registry_root / "versions" / name).symlink_to("../shared/versions/x")
    acknowledged, refused = race_through(children, registry_root, ["2.0.0", "2.0.0+b"] * 2, 25)
    assert len(acknowledged) == 100 and not refused
    assert acknowledged <= set(ModelRegistry(registry_root).get_metadata("2.0.0+b"))


# inotify watches: bounded, degrading per folder ---------------------------------------------------


def many_versions(root: Path, count: int) -> list[str]:
    versions = [f"1.0.{n}" for n in range(count)]
    for version in versions:
        folder = root / "versions" / version
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text('{"stage": "none"}')
    return versions


def test_a_large_registry_watches_within_its_budget_and_stays_fresh(
    registry_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    versions = many_versions(registry_root, 300)
    service = ModelRegistry(registry_root, storage=LocalStorage(str(registry_root), max_watches=100))
    with caplog.at_level(logging.WARNING, logger=watch.__name__):
        assert service.list_versions()[-1] == "1.0.299"
        watcher = service.storage.watcher
        assert watcher.watches <= 100 + 2 and watcher.unwatched == 200
        assert service.storage.watching

        write_by_hand(registry_root, "2.0.0", {"stage": "new"})  # a new version: seen at once
        assert service.get_latest_version() == "2.0.0"
        ModelRegistry(registry_root).set_stage("1.0.0", "prod")  # unwatched: its writer says so
        assert service.get_latest_version("prod") == "1.0.0"

        scans = count_calls(service.storage, "scan")
        for _ in range(1000):  # warm: no rescan between polls
            service.list_versions()
        assert len(scans) <= 1

        edit_in_place(registry_root / "versions" / "1.0.1" / "metadata.json", {"stage": "hand"})
        deadline = time.monotonic() + watch.UNWATCHED_POLL_SECONDS + 1
        while service.get_latest_version("hand") is None:  # by hand in an unwatched folder: polled
            assert time.monotonic() < deadline, "a hand edit in an unwatched folder was never seen"
            time.sleep(0.05)
    warnings_logged = [r for r in caplog.records if "change notification" in r.getMessage()]
    assert len(warnings_logged) == 1, warnings_logged
    assert versions


def test_20000_versions_do_not_take_20000_watches(registry_root: Path) -> None:
    many_versions(registry_root, 20_000)
    service = ModelRegistry(registry_root)
    assert len(service.list_versions()) == 20_000
    watcher = service.storage.watcher
    assert watcher.watches <= watch.watch_budget() + 2 < 20_000
    assert watcher.unwatched == 20_000 - watch.watch_budget()
    assert service.storage.unchanged()  # the warm path: no stat per version


def test_when_the_host_runs_out_of_watches_the_rest_is_polled(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    many_versions(registry_root, 20)
    added: list[str] = []
    original = watch.INotify.add_watch

    def add_watch(self, path, mask):  # the host's limit: 10 watches left for this user
        if len(added) >= 10:
            raise OSError(28, "No space left on device")
        added.append(path)
        return original(self, path, mask)

    monkeypatch.setattr(watch.INotify, "add_watch", add_watch)
    service = ModelRegistry(registry_root)
    with caplog.at_level(logging.WARNING, logger=watch.__name__):
        assert len(service.list_versions()) == 20
        for _ in range(3):
            write_by_hand(registry_root, f"3.0.{_}", {"n": _})
            time.sleep(watch.UNWATCHED_POLL_SECONDS)
            assert service.get_latest_version() == f"3.0.{_}"
    assert service.storage.watching and service.storage.watcher.watches == 10
    assert len([r for r in caplog.records if "change notification" in r.getMessage()]) == 1


def test_one_folder_that_cannot_be_watched_leaves_the_others_watched(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many_versions(registry_root, 5)
    original = watch.INotify.add_watch

    def add_watch(self, path, mask):
        if path.endswith("1.0.3"):
            raise PermissionError(13, "Permission denied")
        return original(self, path, mask)

    monkeypatch.setattr(watch.INotify, "add_watch", add_watch)
    service = ModelRegistry(registry_root)
    service.list_versions()
    assert service.storage.watching and service.storage.watcher.unwatched == 1
    edit_in_place(registry_root / "versions" / "1.0.2" / "metadata.json", {"stage": "prod"})
    assert service.get_latest_version("prod") == "1.0.2"  # a watched folder: at once


# close() and the context manager ----------------------------------------------------------------


def inotify_fd(registry: ModelRegistry) -> int:
    return registry.storage.watcher._fd


def test_close_frees_the_watch_descriptor_and_is_idempotent(published: ModelRegistry) -> None:
    published.list_versions()
    fd = inotify_fd(published)
    os.fstat(fd)
    published.close()
    published.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert published.list_versions() == ["1.0.0", "1.1.0", "2.0.0-rc.1"]  # still answers, by stat


def test_a_registry_used_as_a_context_manager_leaks_nothing(registry_root: Path, published) -> None:
    gc.collect()  # what earlier tests left for the collector is not this registry's
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with ModelRegistry(registry_root) as registry:
            assert registry.get_latest_model("prod") == {"weights": [1.0]}
            fd = inotify_fd(registry)
        del registry
        gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_dropped_registry_frees_its_descriptor_quietly(registry_root: Path, published) -> None:
    registry = ModelRegistry(registry_root)
    registry.list_versions()
    fd = inotify_fd(registry)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del registry
        gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)
