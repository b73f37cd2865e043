"""Answers lost on the way back from S3 (a proxy drops them after the store acted): the client
retries, the store refuses the retry of a conditional write that had landed, and the registry must
take that refusal for the success it was: nothing deleted, nothing reported as failed, one audit
event per change."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import servers

from flask_model_registry import ModelRegistry, VersionExistsError


@pytest.fixture
def lossy(s3_server: servers.Store) -> Iterator[tuple[servers.Store, servers.StoreProxy]]:
    """The S3 server through a proxy that loses the answers it is told to."""
    with servers.proxied(s3_server) as (store, proxy):
        yield store, proxy


@pytest.fixture
def proxy(lossy: tuple[servers.Store, servers.StoreProxy]) -> servers.StoreProxy:
    """The proxy, to tell which answer to lose."""
    return lossy[1]


@pytest.fixture
def root(lossy: tuple[servers.Store, servers.StoreProxy]) -> str:
    """A fresh registry prefix in the test bucket."""
    return lossy[0].url(f"lost-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def registry(lossy: tuple[servers.Store, servers.StoreProxy], root: str) -> ModelRegistry:
    """A registry that reaches S3 through the lossy proxy."""
    return ModelRegistry(root, storage_options=lossy[0].storage_options, refresh_interval=0)


@pytest.fixture
def direct(s3_server: servers.Store, root: str) -> ModelRegistry:
    """The same registry, reached directly: what another host sees."""
    return ModelRegistry(root, storage_options=s3_server.storage_options, refresh_interval=0)


def actions(registry: ModelRegistry, version: str) -> list[str]:
    return [event["action"] for event in registry.history(version)]


def test_a_publish_whose_commit_answer_is_lost_is_published_whole(
    registry: ModelRegistry, direct: ModelRegistry, proxy: servers.StoreProxy
):
    proxy.lose_next_answer("PUT", "/versions/1.0.0/metadata.json")

    written = registry.save_model("1.0.0", {"weights": [1.0]}, {"stage": "prod"})

    assert [(method, status) for method, _, status in proxy.lost] == [("PUT", 200)]
    assert direct.get_metadata("1.0.0") == written
    assert direct.get_model("1.0.0") == {"weights": [1.0]}  # the artefact it names is still there
    assert direct.verify("1.0.0") == written["artifact"]["sha256"]
    assert actions(direct, "1.0.0") == ["publish"]
    with pytest.raises(VersionExistsError):
        registry.save_model("1.0.0", {"weights": [2.0]})


def test_an_audit_event_whose_answer_is_lost_is_recorded_once(
    registry: ModelRegistry, direct: ModelRegistry, proxy: servers.StoreProxy
):
    registry.save_model("1.0.0", {"weights": [1.0]})
    proxy.lose_next_answer("PUT", "/audit/1.0.0/")

    assert registry.set_stage("1.0.0", "prod", actor="release-bot")["stage"] == "prod"

    assert len(proxy.lost) == 1
    assert actions(direct, "1.0.0") == ["publish", "set_stage"]


def test_a_promotion_whose_answer_is_lost_is_applied_and_audited(
    registry: ModelRegistry, direct: ModelRegistry, proxy: servers.StoreProxy
):
    registry.save_model("1.0.0", {"weights": [1.0]}, {"stage": "staging"})
    proxy.lose_next_answer("PUT", "/versions/1.0.0/metadata.json")

    assert registry.set_stage("1.0.0", "prod", actor="release-bot")["stage"] == "prod"

    assert len(proxy.lost) == 1
    assert direct.get_metadata("1.0.0")["stage"] == "prod"
    promotion = direct.history("1.0.0")[-1]
    assert (promotion["action"], promotion["actor"]) == ("set_stage", "release-bot")
    assert (promotion["before"], promotion["after"]) == ({"stage": "staging"}, {"stage": "prod"})


def test_a_publish_that_loses_the_race_still_loses_and_removes_only_its_own_artefact(
    registry: ModelRegistry, direct: ModelRegistry
):
    publication = registry.storage.begin_publication("1.0.0")
    with publication.open_artifact() as f:
        f.write(b"the loser's artefact")
    winner = direct.save_model("1.0.0", {"weights": [1.0]})["artifact"]["file"]
    with pytest.raises(VersionExistsError):
        publication.commit(b'{"version": "1.0.0"}')
    publication.abort()

    listed = direct.storage.fs.ls(f"{direct.storage.root}/versions/1.0.0")
    files = {path.rsplit("/", 1)[-1] for path in listed}
    assert files == {"metadata.json", winner}
    assert direct.get_model("1.0.0") == {"weights": [1.0]}


def test_a_delete_whose_answer_is_lost_is_done_once(
    registry: ModelRegistry, direct: ModelRegistry, proxy: servers.StoreProxy
):
    registry.save_model("1.0.0", {"weights": [1.0]})
    registry.save_model("2.0.0", {"weights": [2.0]}, {"stage": "prod"})
    proxy.lose_next_answer("DELETE", "/versions/1.0.0/metadata.json")

    registry.delete_version("1.0.0")  # the retry finds it gone: its own delete, not another's

    assert [(method, status) for method, _, status in proxy.lost] == [("DELETE", 204)]
    assert direct.list_versions() == ["2.0.0"]
    assert actions(direct, "1.0.0") == ["publish", "delete"]
