"""Reading a registry on local disk: discovery, metadata, models, and what is refused."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import cloudpickle
import pytest

from flask_model_registry import (
    CorruptVersionError,
    InvalidMetadataError,
    InvalidVersionError,
    ModelRegistry,
    RegistryError,
    StorageUnavailableError,
    VersionExistsError,
    VersionNotFoundError,
)


@pytest.mark.parametrize(
    ("error", "also_a", "http_status"),
    [
        (InvalidVersionError, ValueError, 400),
        (InvalidMetadataError, ValueError, 400),
        (VersionNotFoundError, LookupError, 404),
        (VersionExistsError, RegistryError, 409),
        (CorruptVersionError, RegistryError, 500),
    ],
)
def test_the_error_table(error: type[RegistryError], also_a: type[Exception], http_status: int) -> None:
    assert issubclass(error, RegistryError) and issubclass(error, also_a)
    assert error.http_status == http_status


def test_the_root_comes_from_the_environment_else_registry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODEL_REGISTRY_ROOT", raising=False)
    ModelRegistry().save_model("1.0.0", "in ./registry")
    assert (tmp_path / "registry/versions/1.0.0/metadata.json").is_file()
    assert ModelRegistry(f"file://{tmp_path / 'registry'}").get_latest_model() == "in ./registry"
    monkeypatch.setenv("MODEL_REGISTRY_ROOT", str(tmp_path / "mounted"))
    with pytest.raises(StorageUnavailableError):  # not there yet: not an empty registry
        ModelRegistry().list_versions()
    ModelRegistry().save_model("2.0.0", "in the mounted folder")  # creates it
    assert (tmp_path / "mounted/versions/2.0.0/model.pkl").is_file()


@pytest.mark.parametrize(
    "call",
    [
        lambda r, v: r.get_metadata(v),
        lambda r, v: r.get_model(v),
        lambda r, v: r.verify(v),
        lambda r, v: r.history(v),
        lambda r, v: r.set_stage(v, "prod"),
        lambda r, v: r.update_metadata(v, {"owner": "x"}),
        lambda r, v: r.save_model(v, "model"),
    ],
    ids=["get_metadata", "get_model", "verify", "history", "set_stage", "update_metadata", "save_model"],
)
@pytest.mark.parametrize("version", ["../1.0.0", "1.0.0/../../x", "..", "1.0", 100])
def test_every_call_refuses_an_invalid_version(
    published: ModelRegistry, registry_root: Path, call, version: object
) -> None:
    before = sorted(str(p.relative_to(registry_root)) for p in registry_root.rglob("*"))
    with pytest.raises(InvalidVersionError):
        call(published, version)
    assert sorted(str(p.relative_to(registry_root)) for p in registry_root.rglob("*")) == before


# Discovery ------------------------------------------------------------------------------------------


def test_an_empty_registry(registry: ModelRegistry) -> None:
    assert registry.list_versions() == []
    assert registry.get_latest_version() is None
    with pytest.raises(VersionNotFoundError):
        registry.get_metadata("1.0.0")
    with pytest.raises(LookupError, match="no version"):
        registry.get_latest_model()


def test_versions_are_listed_in_semver_order(registry: ModelRegistry) -> None:
    for version in ["1.10.0", "1.0.0", "1.9.0", "1.0.0-rc.1", "1.0.0+build.2", "1.0.0+build.10"]:
        registry.save_model(version, version)
    assert registry.list_versions() == [
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.0+build.10",
        "1.0.0+build.2",
        "1.9.0",
        "1.10.0",
    ]


def test_names_that_are_not_versions_are_ignored(registry_root: Path, by_hand) -> None:
    for name in ["v1", "latest", ".staging-x", "1.0", "1.0.0.0", "01.0.0"]:
        by_hand(name, {"owner": "someone"})
    (registry_root / "versions" / "1.2.3").write_text("a file, not a folder")
    (registry_root / "versions" / "README.md").write_text("notes")
    by_hand("2.0.0", {"owner": "someone"})
    assert ModelRegistry(registry_root).list_versions() == ["2.0.0"]


def test_a_folder_without_metadata_is_not_a_version_yet(registry: ModelRegistry, by_hand) -> None:
    by_hand("1.0.0", metadata=None)
    assert registry.list_versions() == []
    with pytest.raises(VersionNotFoundError):
        registry.get_metadata("1.0.0")


def test_latest_version_by_stage_and_prerelease(published: ModelRegistry) -> None:
    assert published.list_versions() == ["1.0.0", "1.1.0", "2.0.0-rc.1"]
    assert published.get_latest_version() == "1.1.0"
    assert published.get_latest_version(include_prerelease=True) == "2.0.0-rc.1"
    assert published.get_latest_version(stage="prod") == "1.0.0"
    assert published.get_latest_version(stage="staging") == "1.1.0"
    assert published.get_latest_version(stage="archived") is None


def test_the_highest_version_of_a_shared_stage_wins(published: ModelRegistry) -> None:
    published.set_stage("1.1.0", "prod")
    assert published.get_latest_version(stage="prod") == "1.1.0"
    assert published.get_latest_model(stage="prod") == {"weights": [1.1]}


def test_only_prereleases_do_not_qualify_as_latest(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0-rc.1", "candidate")
    assert registry.get_latest_version() is None
    with pytest.raises(VersionNotFoundError):
        registry.get_latest_model()
    assert registry.get_latest_model(include_prerelease=True) == "candidate"


def test_hand_made_versions_load(registry: ModelRegistry, by_hand) -> None:
    """The seed registries: any JSON object as metadata, a model.pkl written with cloudpickle."""
    by_hand("1.1.0", {"owner": "ml-team", "auc": 0.93}, lambda x: 2 * x)
    by_hand("1.2.0", {}, {"weights": [1, 2]})
    assert registry.list_versions() == ["1.1.0", "1.2.0"]
    assert registry.get_metadata("1.1.0") == {"owner": "ml-team", "auc": 0.93}
    assert registry.get_model("1.1.0")(21) == 42
    assert registry.get_latest_model() == {"weights": [1, 2]}
    assert registry.verify("1.2.0") is None  # nothing recorded to check against


# Metadata -------------------------------------------------------------------------------------------


def test_get_metadata_never_touches_the_artefact(registry: ModelRegistry, registry_root: Path) -> None:
    written = registry.save_model("1.0.0", {"weights": [1]}, {"auc": 0.9})
    artefact = registry_root / "versions" / "1.0.0" / "model.pkl"
    artefact.write_bytes(b"garbage that would not unpickle")
    assert ModelRegistry(registry_root).get_metadata("1.0.0") == written
    artefact.unlink()
    assert ModelRegistry(registry_root).get_metadata("1.0.0") == written
    assert registry.get_metadata("1.0.0") == written


def test_get_metadata_returns_a_copy(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", "model", {"tags": ["a"], "stage": "prod"})
    metadata = registry.get_metadata("1.0.0")
    metadata["tags"].append("b")
    metadata["artifact"]["sha256"] = "0" * 64
    metadata["stage"] = "archived"
    assert registry.get_metadata("1.0.0")["tags"] == ["a"]
    assert registry.get_latest_version(stage="prod") == "1.0.0"
    assert registry.get_model("1.0.0") == "model"


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe", b""])
def test_metadata_that_is_not_a_json_object_is_corrupt(
    registry: ModelRegistry, by_hand, content: bytes
) -> None:
    registry.save_model("1.0.0", "good")
    by_hand("1.1.0", raw=content)
    assert registry.list_versions() == ["1.0.0", "1.1.0"]
    with pytest.raises(CorruptVersionError, match=r"1\.1\.0 is corrupt: metadata\.json"):
        registry.get_metadata("1.1.0")
    with pytest.raises(CorruptVersionError):
        registry.get_model("1.1.0")
    assert registry.get_metadata("1.0.0")["version"] == "1.0.0"


def test_unreadable_metadata_does_not_break_the_listing(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", "good")
    broken = registry_root / "versions" / "1.1.0"
    broken.mkdir()
    (broken / "metadata.json").symlink_to("metadata.json")  # a link to itself: ELOOP on open
    assert registry.list_versions() == ["1.0.0", "1.1.0"]
    with pytest.raises(CorruptVersionError, match="cannot be read"):
        registry.get_metadata("1.1.0")


# Models ---------------------------------------------------------------------------------------------


def test_get_model_is_cached(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    model = registry.get_model("1.0.0")
    assert model == {"weights": [1.0]}
    assert registry.get_model("1.0.0") is model
    assert registry.get_latest_model() is model


def test_a_promotion_does_not_reload_the_model(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    model = registry.get_model("1.0.0")
    registry.set_stage("1.0.0", "prod")
    registry.update_metadata("1.0.0", {"owner": "ml"})
    assert registry.get_model("1.0.0") is model
    assert registry.get_latest_model(stage="prod") is model


def test_a_tampered_artefact_is_refused(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    (registry_root / "versions/1.0.0/model.pkl").write_bytes(cloudpickle.dumps({"weights": [666]}))
    with pytest.raises(CorruptVersionError, match="sha256"):
        registry.get_model("1.0.0")
    with pytest.raises(CorruptVersionError, match="sha256"):
        registry.verify("1.0.0")


def test_a_missing_artefact_is_corrupt(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    (registry_root / "versions/1.0.0/model.pkl").unlink()
    with pytest.raises(CorruptVersionError, match="missing"):
        registry.get_model("1.0.0")
    assert registry.list_versions() == ["1.0.0"]


def test_an_artefact_that_does_not_unpickle_is_corrupt(registry: ModelRegistry, by_hand) -> None:
    folder = by_hand("1.0.0", {"owner": "ml"}, model=None)
    (folder / "model.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CorruptVersionError, match="failed to load"):
        registry.get_model("1.0.0")


@pytest.mark.parametrize("file", ["../../x.pkl", "../1.0.0/model.pkl", "/tmp/x.pkl", ".model.pkl", "a/b.pkl"])
def test_artefact_names_that_could_leave_the_folder_are_refused(
    registry: ModelRegistry, registry_root: Path, file: str
) -> None:
    registry.save_model("1.0.0", "other")
    folder = registry_root / "versions" / "2.0.0"
    folder.mkdir()
    target = Path(os.path.normpath(folder / file))
    if target.is_relative_to(registry_root.parent):  # put a loadable model where the name leads
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(cloudpickle.dumps("loaded from elsewhere"))
    (folder / "metadata.json").write_text(json.dumps({"artifact": {"file": file}}))
    with pytest.raises(CorruptVersionError, match="not allowed"):
        registry.get_model("2.0.0")


def test_an_artefact_linked_from_outside_the_root_is_refused(
    registry: ModelRegistry, registry_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(cloudpickle.dumps("code from outside the root"))
    folder = registry_root / "versions" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "model.pkl").symlink_to(outside)
    sha = hashlib.sha256(outside.read_bytes()).hexdigest()  # even with a matching checksum
    (folder / "metadata.json").write_text(json.dumps({"artifact": {"file": "model.pkl", "sha256": sha}}))
    assert registry.list_versions() == ["1.0.0"]
    with pytest.raises(CorruptVersionError):
        registry.get_model("1.0.0")


def test_an_artefact_linked_inside_the_root_loads(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", "shared weights")
    folder = registry_root / "versions" / "1.0.1"
    folder.mkdir()
    (folder / "model.pkl").symlink_to("../1.0.0/model.pkl")
    shutil.copy(registry_root / "versions/1.0.0/metadata.json", folder / "metadata.json")
    assert registry.get_model("1.0.1") == "shared weights"


def test_links_inside_the_root_are_followed(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", "shared weights", {"owner": "ml"})
    versions = registry_root / "versions"
    (versions / "1.0.1").symlink_to("1.0.0")  # a version folder that is a link
    (versions / "1.0.2").mkdir()  # a metadata.json that is a link
    (versions / "1.0.2" / "metadata.json").symlink_to("../1.0.0/metadata.json")
    fresh = ModelRegistry(registry_root)
    assert fresh.list_versions() == ["1.0.0", "1.0.1", "1.0.2"]
    assert fresh.get_metadata("1.0.1")["owner"] == fresh.get_metadata("1.0.2")["owner"] == "ml"
    assert fresh.get_model("1.0.1") == "shared weights"


def test_a_metadata_file_linked_from_outside_the_root_is_not_read(
    registry: ModelRegistry, registry_root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    (registry_root / "versions" / "1.0.0").mkdir(parents=True)
    (registry_root / "versions" / "1.0.0" / "metadata.json").symlink_to(secret)
    assert registry.list_versions() == []
    with pytest.raises(VersionNotFoundError):
        registry.get_metadata("1.0.0")


def test_a_version_folder_linked_from_outside_the_root_is_not_a_version(
    registry: ModelRegistry, registry_root: Path, tmp_path: Path
) -> None:
    registry.save_model("1.0.0", "inside")
    outside = tmp_path / "elsewhere" / "9.9.9"
    outside.mkdir(parents=True)
    (outside / "metadata.json").write_text('{"owner": "not the registry"}')
    (outside / "model.pkl").write_bytes(cloudpickle.dumps("outside"))
    (registry_root / "versions" / "9.9.9").symlink_to(outside)
    assert registry.list_versions() == ["1.0.0"]
    with pytest.raises(VersionNotFoundError):
        registry.get_metadata("9.9.9")
    with pytest.raises(VersionNotFoundError):
        registry.get_model("9.9.9")
    with pytest.raises(VersionNotFoundError):
        registry.update_metadata("9.9.9", {"owner": "overwritten"})
    assert json.loads((outside / "metadata.json").read_text()) == {"owner": "not the registry"}


# The latest model -----------------------------------------------------------------------------------


def test_a_corrupt_newest_version_keeps_the_last_good_model_in_service(
    registry: ModelRegistry, registry_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    good = registry.get_latest_model()
    registry.save_model("1.1.0", {"weights": [1.1]})
    (registry_root / "versions/1.1.0/model.pkl").write_bytes(b"truncated")
    with caplog.at_level(logging.ERROR, logger="flask_model_registry"):
        assert registry.get_latest_model() is good
        assert registry.get_latest_model() is good
        assert registry.get_latest() == ("1.0.0", good)  # the version that is really served
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "logged once, not on every request"
    assert "1.1.0" in errors[0].getMessage() and "1.0.0" in errors[0].getMessage()
    assert registry.get_latest_version() == "1.1.0"
    with pytest.raises(CorruptVersionError):
        registry.get_model("1.1.0")


def test_get_latest_gives_the_model_and_its_version(published: ModelRegistry) -> None:
    served = published.get_latest(stage="prod")
    assert (served.version, served.model) == ("1.0.0", {"weights": [1.0]})
    assert published.get_latest(include_prerelease=True) == ("2.0.0-rc.1", {"weights": [2.0]})
    assert published.get_latest().model is published.get_latest_model()
    with pytest.raises(VersionNotFoundError, match="no version in stage 'archived' to load"):
        published.get_latest(stage="archived")


def test_a_corrupt_newest_version_without_a_good_model_before_raises(
    registry: ModelRegistry, registry_root: Path
) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    registry.save_model("1.1.0", {"weights": [1.1]})
    (registry_root / "versions/1.1.0/model.pkl").unlink()
    with pytest.raises(CorruptVersionError) as raised:
        registry.get_latest_model()
    assert isinstance(raised.value, RegistryError)


def test_a_good_version_after_a_corrupt_one_is_served(registry: ModelRegistry, registry_root: Path) -> None:
    registry.save_model("1.0.0", "first")
    registry.get_latest_model()
    registry.save_model("1.1.0", "broken")
    (registry_root / "versions/1.1.0/model.pkl").write_bytes(b"x")
    assert registry.get_latest_model() == "first"
    registry.save_model("1.2.0", "fixed")
    assert registry.get_latest_model() == "fixed"
