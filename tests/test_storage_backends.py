"""The storage contract and the registry's behaviour, the same on every backend.

Each test runs on a local folder, ``memory://``, S3 (moto), Azure Blob (Azurite) and GCS
(fake-gcs-server): real servers on 127.0.0.1, started once per session by the fixtures in
``conftest.py``. Other hosts are other :class:`ModelRegistry` instances (or processes) on one root.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle
import pytest
from fsspec.registry import _registry as fsspec_classes
from helpers_procs import Children, count_calls, race_to_save, race_to_update
from servers import AZURITE_KEY, RegistryTarget, Store

from flask_model_registry import (
    CorruptVersionError,
    ModelRegistry,
    StorageBackendMissingError,
    StorageUnavailableError,
    VersionExistsError,
    VersionNotFoundError,
)
from flask_model_registry.errors import ConflictError
from flask_model_registry.storage import Storage, remote
from flask_model_registry.storage.base import METADATA_FILE

WRITERS = 4
#: The refresh interval the freshness tests use on polling backends.
REFRESH = 1.0


def version_files(target: RegistryTarget, version: str) -> list[str]:
    """The names of the objects (or files) stored under ``versions/<version>/``."""
    fs = target.filesystem
    return sorted(
        os.path.basename(p.rstrip("/")) for p in fs.ls(target.path("versions", version), detail=False)
    )


def write_raw(target: RegistryTarget, data: bytes, *parts: str) -> None:
    """Write an object below the root directly, as a person or another tool would."""
    target.filesystem.pipe_file(target.path(*parts), data)


class Reads:
    """Every metadata GET a storage makes (``fetch`` on fsspec, ``read_metadata`` on disk), and how
    many were in flight at once. Wraps the storage's own method: the server is real."""

    def __init__(self, storage: Storage, delay: float = 0.0) -> None:
        self.paths: list[str] = []
        self.peak = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        name = "fetch" if isinstance(storage, remote.FsspecStorage) else "read_metadata"
        original: Callable[[str], Any] = getattr(storage, name)

        def counted(path: str, **options: Any) -> Any:
            with self._lock:
                self.paths.append(path)
                self._in_flight += 1
                self.peak = max(self.peak, self._in_flight)
            try:
                time.sleep(delay)  # long enough for concurrent fetches to overlap
                return original(path, **options)
            finally:
                with self._lock:
                    self._in_flight -= 1

        setattr(storage, name, counted)


# publishing and reading ---------------------------------------------------------------------------


def test_publish_list_latest_and_load_from_another_host(
    registry_target: RegistryTarget, any_registry: ModelRegistry
) -> None:
    any_registry.save_model("1.0.0", {"w": 1}, {"stage": "prod"})
    any_registry.save_model("1.10.0", {"w": 10}, {"stage": "staging"})
    any_registry.save_model("1.9.0", {"w": 9}, {"stage": "prod"})
    any_registry.save_model("2.0.0-rc.1", {"w": 20})

    other = registry_target.open()
    for registry in (any_registry, other):
        assert registry.list_versions() == ["1.0.0", "1.9.0", "1.10.0", "2.0.0-rc.1"]
        assert registry.get_latest_version() == "1.10.0"
        assert registry.get_latest_version(stage="prod") == "1.9.0"
        assert registry.get_latest_version(include_prerelease=True) == "2.0.0-rc.1"
        assert registry.get_model("1.9.0") == {"w": 9}
        assert registry.get_latest_model(stage="staging") == {"w": 10}
    metadata = other.get_metadata("1.9.0")
    assert metadata["version"] == "1.9.0" and metadata["stage"] == "prod"
    assert other.verify("1.9.0") == metadata["artifact"]["sha256"]
    assert version_files(registry_target, "1.9.0") == sorted([METADATA_FILE, metadata["artifact"]["file"]])
    with pytest.raises(VersionExistsError):
        other.save_model("1.0.0", "again")
    with pytest.raises(VersionNotFoundError):
        other.get_model("3.0.0")


def test_hand_made_versions_are_listed_and_anything_else_ignored(registry_target: RegistryTarget) -> None:
    write_raw(registry_target, cloudpickle.dumps("hand-made"), "versions", "1.0.0", "model.pkl")
    write_raw(registry_target, b'{"owner": "ml"}', "versions", "1.0.0", METADATA_FILE)
    for junk in ("v1", "latest", "1.0", ".staging-x"):
        write_raw(registry_target, b"{}", "versions", junk, METADATA_FILE)
    write_raw(registry_target, b"half", "versions", "2.0.0", "model.pkl")  # being written
    write_raw(registry_target, b"{}", "versions", "3.0.0", "nested", METADATA_FILE)
    write_raw(registry_target, b"{}", "versions", METADATA_FILE)

    registry = registry_target.open()
    assert registry.list_versions() == ["1.0.0"]
    assert registry.get_metadata("1.0.0") == {"owner": "ml"}
    assert registry.get_model("1.0.0") == "hand-made"


def test_a_tampered_artefact_is_refused(registry_target: RegistryTarget, any_registry: ModelRegistry) -> None:
    written = any_registry.save_model("1.0.0", {"w": 1})
    write_raw(
        registry_target, cloudpickle.dumps({"w": "evil"}), "versions", "1.0.0", written["artifact"]["file"]
    )

    other = registry_target.open()
    with pytest.raises(CorruptVersionError, match="sha256"):
        other.get_model("1.0.0")
    with pytest.raises(CorruptVersionError, match="sha256"):
        other.verify("1.0.0")


def test_corrupt_metadata_breaks_neither_listing_nor_the_model_being_served(
    registry_target: RegistryTarget, any_registry: ModelRegistry
) -> None:
    any_registry.save_model("1.0.0", {"w": 1})
    reader = registry_target.open(refresh_interval=0, full_refresh=0)  # finds hand-made files at once
    assert reader.get_latest_model() == {"w": 1}

    write_raw(registry_target, b"{not json", "versions", "1.1.0", METADATA_FILE)
    write_raw(registry_target, b"[1, 2]", "versions", "1.2.0", METADATA_FILE)
    assert reader.list_versions() == ["1.0.0", "1.1.0", "1.2.0"]
    with pytest.raises(CorruptVersionError, match="not valid JSON"):
        reader.get_metadata("1.1.0")
    with pytest.raises(CorruptVersionError, match="not an object"):
        reader.get_metadata("1.2.0")
    assert reader.get_latest_model() == {"w": 1}, "keeps serving the last good model"


def test_promotions_metadata_edits_and_history(
    registry_target: RegistryTarget, any_registry: ModelRegistry
) -> None:
    any_registry.save_model("1.0.0", "model", {"owner": "ml"}, actor="trainer")
    any_registry.set_stage("1.0.0", "prod", actor="alice")
    any_registry.update_metadata("1.0.0", {"auc": 0.91, "owner": None}, actor="bob")

    other = registry_target.open()
    metadata = other.get_metadata("1.0.0")
    assert metadata["stage"] == "prod" and metadata["auc"] == 0.91 and "owner" not in metadata
    assert other.get_latest_version(stage="prod") == "1.0.0"
    events = other.history("1.0.0")
    assert [(e["action"], e["actor"]) for e in events] == [
        ("publish", "trainer"),
        ("set_stage", "alice"),
        ("update_metadata", "bob"),
    ]
    assert events[1]["after"] == {"stage": "prod"}
    assert events[2]["before"] == {"owner": "ml"} and events[2]["after"] == {"auc": 0.91}
    assert other.history() == events


def test_a_large_artefact_streams_in_parts_through_a_file_on_disk(
    registry_target: RegistryTarget, any_registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "_BLOCK", 5 << 20)  # S3's smallest multipart part
    monkeypatch.setattr(remote, "SPOOL_IN_MEMORY", 1 << 20)
    model = os.urandom(11 << 20)
    any_registry.save_model("1.0.0", model)
    assert registry_target.open().get_model("1.0.0") == model


# the storage contract -----------------------------------------------------------------------------


def test_commit_is_create_only_and_the_loser_removes_only_its_own_artefact(
    registry_target: RegistryTarget, any_registry: ModelRegistry
) -> None:
    storage = any_registry.storage
    first, second = storage.begin_publication("1.0.0"), storage.begin_publication("1.0.0")
    for publication, model in ((first, "first"), (second, "second")):
        with publication.open_artifact() as f:
            f.write(cloudpickle.dumps(model))
    first.commit(f'{{"artifact": {{"file": "{first.artifact_file}"}}}}'.encode())
    with pytest.raises(VersionExistsError):
        second.commit(f'{{"artifact": {{"file": "{second.artifact_file}"}}}}'.encode())
    second.abort()

    assert version_files(registry_target, "1.0.0") == sorted([METADATA_FILE, first.artifact_file])
    assert registry_target.open().get_model("1.0.0") == "first"
    with pytest.raises(VersionExistsError):
        storage.begin_publication("1.0.0")


def test_metadata_is_replaced_only_if_unchanged(any_registry: ModelRegistry) -> None:
    any_registry.save_model("1.0.0", "model")
    storage = any_registry.storage
    data, stamp = storage.read_metadata("1.0.0")
    storage.replace_metadata("1.0.0", data.replace(b"{", b'{"a": 1, ', 1), stamp)
    with pytest.raises(ConflictError):
        storage.replace_metadata("1.0.0", data.replace(b"{", b'{"b": 2, ', 1), stamp)
    assert storage.read_metadata("1.0.0")[0].startswith(b'{"a": 1, ')
    assert set(storage.scan()) == {"1.0.0"}
    with pytest.raises(FileNotFoundError):
        storage.read_metadata("9.9.9")


def test_audit_objects_are_created_once_and_listed_in_order(any_registry: ModelRegistry) -> None:
    storage = any_registry.storage
    storage.audit_create(["1.0.0/b.json", ".log/b.json"], b'{"n": 2}')
    storage.audit_create(["1.0.0/a.json"], b'{"n": 1}')
    storage.audit_create(["1.0.0-rc.1/c.json"], b'{"n": 3}')
    storage.audit_create(["1.0.0/a.json"], b'{"n": 1}')  # the same bytes again: a retry, done
    with pytest.raises(FileExistsError):
        storage.audit_create(["1.0.0/a.json"], b'{"n": 0}')
    assert storage.audit_list("1.0.0") == ["a.json", "b.json"]
    assert storage.audit_list("1.0.0", start_after="a.json") == ["b.json"]
    assert storage.audit_list("1.0.0", limit=1) == ["a.json"]
    assert storage.audit_list("") == ["1.0.0", "1.0.0-rc.1"]  # hidden folders left out
    assert storage.audit_read(".log/b.json") == b'{"n": 2}'
    storage.audit_delete("1.0.0/a.json")
    storage.audit_delete("1.0.0/a.json")
    assert storage.audit_list("1.0.0") == ["b.json"]
    with pytest.raises(FileNotFoundError):
        storage.audit_read("1.0.0/a.json")


def test_a_publisher_that_dies_before_its_commit_leaves_no_version(
    registry_target: RegistryTarget, any_registry: ModelRegistry
) -> None:
    publication = any_registry.storage.begin_publication("1.0.0")
    with publication.open_artifact() as f:
        f.write(b"half a model")
    # the publisher is killed here: neither commit nor abort

    reader = registry_target.open()
    assert reader.list_versions() == []
    with pytest.raises(VersionNotFoundError):
        reader.get_model("1.0.0")
    any_registry.save_model("1.0.0", "whole")
    assert registry_target.open().get_model("1.0.0") == "whole"


# races --------------------------------------------------------------------------------------------


def test_publishers_racing_in_threads_leave_one_winner(registry_target: RegistryTarget) -> None:
    hosts = [registry_target.open() for _ in range(WRITERS)]
    go = threading.Barrier(WRITERS)

    def publish(i: int) -> str:
        go.wait(10)
        try:
            hosts[i].save_model("1.0.0", {"payload": i}, {"writer": i})
        except VersionExistsError:
            return "lost"
        return "won"

    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = list(pool.map(publish, range(WRITERS)))
    assert Counter(outcomes) == {"won": 1, "lost": WRITERS - 1}

    reader = registry_target.open()
    winner = outcomes.index("won")
    assert reader.get_model("1.0.0") == {"payload": winner}
    assert [e["action"] for e in reader.history()] == ["publish"]
    artefact = reader.get_metadata("1.0.0")["artifact"]["file"]
    assert version_files(registry_target, "1.0.0") == sorted([METADATA_FILE, artefact]), "losers clean up"


# Processes on S3 only: the other stores enforce the same conditions against the threads above (each
# host its own client), and a local disk's processes are raced in test_concurrency.py.
@pytest.mark.parametrize("registry_target", ["s3"], indirect=True)
def test_publishers_and_promoters_racing_in_processes_on_s3(
    registry_target: RegistryTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert registry_target.store is not None
    for name, value in registry_target.store.child_env().items():  # as any host would reach it
        monkeypatch.setenv(name, value)
    children = Children(multiprocessing.get_context("spawn"))  # no threads of this process inherited
    try:
        reports = children.race(race_to_save, registry_target.root, "1.0.0", list(range(WRITERS)))
        keys = [f"approved_by_{i}" for i in range(WRITERS)]
        approvals = children.race(race_to_update, registry_target.root, "1.0.0", keys)
    finally:
        children.kill_all()
    assert Counter(outcome for outcome, _ in reports) == {"won": 1, "lost": WRITERS - 1}
    (winner,) = [payload for outcome, payload in reports if outcome == "won"]
    assert sorted(approvals) == keys

    reader = registry_target.open()
    assert reader.get_model("1.0.0") == {"payload": winner}
    metadata = reader.get_metadata("1.0.0")
    assert all(metadata[key] is True for key in keys), "no promotion lost"
    assert Counter(e["action"] for e in reader.history("1.0.0")) == {"publish": 1, "update_metadata": WRITERS}


def test_concurrent_promotions_on_different_keys_lose_nothing(registry_target: RegistryTarget) -> None:
    registry_target.open().save_model("1.0.0", "model", {"owner": "ml"})
    hosts = [registry_target.open() for _ in range(6)]
    go = threading.Barrier(len(hosts))

    def promote(i: int) -> None:
        go.wait(10)
        if i == 0:
            hosts[i].set_stage("1.0.0", "prod")
        else:
            hosts[i].update_metadata("1.0.0", {f"check_{i}": "passed"})

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(promote, range(len(hosts))))

    metadata = registry_target.open().get_metadata("1.0.0")
    assert metadata["stage"] == "prod" and metadata["owner"] == "ml"
    assert all(metadata[f"check_{i}"] == "passed" for i in range(1, len(hosts)))
    actions = Counter(e["action"] for e in registry_target.open().history("1.0.0"))
    assert actions == {"publish": 1, "set_stage": 1, "update_metadata": len(hosts) - 1}


# discovery ----------------------------------------------------------------------------------------


def test_a_change_by_another_host_is_seen_within_the_refresh_interval(
    registry_target: RegistryTarget,
) -> None:
    if registry_target.is_remote:  # fsspec's listing cache turned on: it must not hide changes
        options = {**(registry_target.storage_options or {}), "use_listings_cache": True}
        reader = ModelRegistry(registry_target.root, storage_options=options, refresh_interval=REFRESH)
    else:
        reader = registry_target.open()
    writer = registry_target.open()
    scan_started = time.monotonic()  # the reader's next scan is due REFRESH after its scan began
    assert reader.list_versions() == []
    scan_ended = time.monotonic()
    scans = count_calls(reader.storage, "refresh")

    writer.save_model("1.0.0", "model")
    if not registry_target.is_remote:
        assert reader.list_versions() == ["1.0.0"], "a local disk is always fresh"
        return
    while time.monotonic() < scan_started + 0.8 * REFRESH:  # within the interval: the snapshot answers
        listed = reader.list_versions()
        if time.monotonic() < scan_started + REFRESH:  # the call ended before a refresh was due
            assert listed == [] and scans == [], "no request before the refresh interval is up"
        time.sleep(0.02)
    while reader.list_versions() != ["1.0.0"]:  # the refresh's own requests may be slow on a busy host
        assert time.monotonic() < scan_ended + REFRESH + 5.0, "not seen within the refresh interval"
        time.sleep(0.02)
    assert len(scans) == 1


def test_discovery_fetches_only_changed_metadata_a_few_at_a_time(registry_target: RegistryTarget) -> None:
    writer = registry_target.open()
    versions = [f"1.{i}.0" for i in range(12)]
    for version in versions:
        writer.save_model(version, version)
    remote_store = registry_target.is_remote
    if remote_store:  # a registry without its manifest (hand-made, or older): one GET per version
        registry_target.filesystem.rm_file(registry_target.path("manifest.json"))
    reader = registry_target.open(refresh_interval=0)
    reads = Reads(reader.storage, delay=0.02)

    assert reader.list_versions() == versions
    assert len(reads.paths) == len(versions), "cold: each metadata.json once"
    if isinstance(reader.storage, remote.FsspecStorage):
        assert 2 <= reads.peak <= reader.storage.concurrency, "fetched concurrently, and bounded"

    reads.paths.clear()
    assert reader.list_versions() == versions and reader.get_metadata("1.3.0")["version"] == "1.3.0"
    assert reads.paths == [], "warm: nothing re-read that did not change"

    writer.set_stage("1.3.0", "prod")
    assert reader.get_latest_version(stage="prod") == "1.3.0"
    # on object storage too: the cold start saw no manifest, so the change is read from the object
    assert len(reads.paths) == 1 and "1.3.0" in reads.paths[0], "only the changed metadata"


def test_a_storage_of_ones_own_must_implement_the_whole_contract() -> None:
    class ReadOnly(Storage):  # a storage that forgot how to write
        def describe(self) -> str:
            return "read-only"

        def may_have_changed(self) -> bool:
            return False

        def scan(self) -> dict[str, Any]:
            return {}

        def read_metadata(self, version: str) -> tuple[bytes, Any]:
            raise FileNotFoundError(version)

    with pytest.raises(TypeError) as refused:
        ReadOnly()  # type: ignore[abstract]
    for method in ("replace_metadata", "begin_publication", "open_artifact", "audit_create", "audit_list"):
        assert method in str(refused.value)


# configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["s3_server", "gcs_server"])
def test_a_bucket_that_does_not_exist_is_an_error_not_an_empty_registry(
    server: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(server)
    empty = ModelRegistry(store.url("nothing-here-yet"), storage_options=store.storage_options)
    assert empty.list_versions() == []  # an existing bucket with nothing under the prefix
    typo = ModelRegistry(f"{store.scheme}://no-such-bucket/registry", storage_options=store.storage_options)
    with pytest.raises(StorageUnavailableError, match="bucket 'no-such-bucket' does not exist"):
        typo.list_versions()
    with pytest.raises(StorageUnavailableError):
        typo.get_latest_version()  # still, on the next call: nothing to serve


@pytest.mark.parametrize(
    ("url", "package", "extra"),
    [
        ("s3://bucket/registry", "s3fs", "s3"),
        ("az://box/registry", "adlfs", "azure"),
        ("gs://b/r", "gcsfs", "gcs"),
    ],
)
def test_a_missing_backend_is_a_one_line_error_naming_the_extra(
    url: str, package: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # what a machine without the package sees
    monkeypatch.delitem(fsspec_classes, url.partition(":")[0], raising=False)
    with pytest.raises(StorageBackendMissingError) as raised:
        ModelRegistry(url)
    message = str(raised.value)
    assert f"pip install 'flask-model-registry[{extra}]'" in message and "\n" not in message
    assert isinstance(raised.value, ImportError)


def test_backends_outside_the_extras_say_what_to_install() -> None:
    with pytest.raises(StorageBackendMissingError, match="Install ocifs"):
        ModelRegistry("oci://bucket/registry")  # a real fsspec backend, not installed here
    with pytest.raises(StorageBackendMissingError, match="no fsspec backend is known for nosuch://"):
        ModelRegistry("nosuch://bucket/registry")


@pytest.mark.parametrize("registry_target", ["s3", "azure"], indirect=True)
def test_credentials_stay_out_of_labels_and_errors(registry_target: RegistryTarget) -> None:
    secret = registry_target.storage_options["secret"] if registry_target.backend == "s3" else AZURITE_KEY
    registry = registry_target.open()
    assert secret not in repr(registry) and secret not in registry.storage.describe()
    scheme = registry_target.root.partition("://")[0]
    missing = ModelRegistry(f"{scheme}://no-such-bucket/r", storage_options=registry_target.storage_options)
    with pytest.raises((OSError, RuntimeError)) as raised:  # s3fs: FileNotFoundError; adlfs: RuntimeError
        missing.save_model("1.0.0", "model")
    assert secret not in str(raised.value) and secret not in repr(raised.value)


def test_labels_drop_passwords_and_query_strings() -> None:
    assert remote.safe_label("s3://AKIA:hunter2@bucket/registry?sig=abc") == "s3://bucket/registry"
    assert (
        remote.safe_label("abfs://box@account.dfs.core.windows.net/r")
        == "abfs://box@account.dfs.core.windows.net/r"
    )
