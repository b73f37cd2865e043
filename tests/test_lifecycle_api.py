"""Deleting versions over HTTP (``DELETE <prefix>/<v>``, also of named models): 204 and an empty
body, 409 naming why a version in use stays, ``If-Match`` and ``REQUIRE_IF_MATCH`` as for ``PATCH``,
and the write token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_model_registry import ModelRegistry

TOKEN = "lifecycle-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app_config(named_models: dict[str, Any]) -> dict[str, Any]:
    return {"MODEL_REGISTRY_API_TOKEN": TOKEN, **named_models}


@pytest.fixture
def shelf(app: Flask) -> ModelRegistry:
    """The default registry with 1.0.0 (no stage, serving nothing) below 2.0.0 (prod)."""
    app.registry.save_model("1.0.0", "old", actor="trainer")
    app.registry.save_model("2.0.0", "new", {"stage": "prod"}, actor="trainer")
    return app.registry


def test_delete_answers_204_and_the_history_stays(client, shelf: ModelRegistry) -> None:
    last = client.get("/models/1.0.0", headers=AUTH).get_json()["metadata"]
    answer = client.delete("/models/1.0.0", headers={**AUTH, "X-Model-Registry-Actor": "ana"})
    assert answer.status_code == 204 and answer.data == b""
    assert client.get("/models/1.0.0", headers=AUTH).status_code == 404
    assert [v["version"] for v in client.get("/models", headers=AUTH).get_json()] == ["2.0.0"]
    history = client.get("/models/1.0.0/history", headers=AUTH)
    assert history.status_code == 200
    event = history.get_json()[-1]
    assert event["action"] == "delete" and event["before"] == last and event["after"] == {}
    assert event["actor"].startswith("ana (api:")


def test_a_version_in_use_is_409_naming_why(client, shelf: ModelRegistry, json_error) -> None:
    error = json_error(client.delete("/models/2.0.0", headers=AUTH))
    assert error["code"] == 409 and "2.0.0 is in use" in error["message"] and "'prod'" in error["message"]
    assert "2.0.0" in shelf.list_versions()


def test_missing_and_invalid_versions(client, shelf: ModelRegistry, json_error) -> None:
    assert json_error(client.delete("/models/9.9.9", headers=AUTH))["code"] == 404
    assert json_error(client.delete("/models/9.9", headers=AUTH))["code"] == 400
    assert client.delete("/models/1.0.0", headers=AUTH).status_code == 204
    assert "deleted at" in json_error(client.delete("/models/1.0.0", headers=AUTH))["message"]


def test_the_write_token_is_needed(app: Flask, client, shelf: ModelRegistry, json_error) -> None:
    assert json_error(client.delete("/models/1.0.0"))["code"] == 401
    assert json_error(client.delete("/models/1.0.0", headers={"Authorization": "Bearer no"}))["code"] == 401
    app.config["MODEL_REGISTRY_API_TOKEN"] = None
    assert json_error(client.delete("/models/1.0.0"))["code"] == 403
    assert shelf.list_versions() == ["1.0.0", "2.0.0"]


def test_if_match_is_honoured(client, shelf: ModelRegistry, json_error) -> None:
    etag = client.get("/models/1.0.0", headers=AUTH).headers["ETag"]
    shelf.update_metadata("1.0.0", {"note": "changed since"})
    stale = client.delete("/models/1.0.0", headers={**AUTH, "If-Match": etag})
    assert json_error(stale)["code"] == 412 and "1.0.0" in shelf.list_versions()
    etag = client.get("/models/1.0.0", headers=AUTH).headers["ETag"]
    assert client.delete("/models/1.0.0", headers={**AUTH, "If-Match": etag}).status_code == 204


def test_require_if_match_makes_a_blind_delete_428(
    app: Flask, client, shelf: ModelRegistry, json_error
) -> None:
    app.config["MODEL_REGISTRY_REQUIRE_IF_MATCH"] = True
    assert json_error(client.delete("/models/1.0.0", headers=AUTH))["code"] == 428
    assert client.delete("/models/1.0.0", headers={**AUTH, "If-Match": "*"}).status_code == 204


def test_a_named_models_delete_touches_only_it(
    app: Flask, client, shelf: ModelRegistry, model_roots: dict[str, Path], json_error
) -> None:
    fraud = app.registries["fraud"]
    fraud.save_model("1.0.0", "fraud-old")
    fraud.save_model("1.1.0", "fraud-new")
    assert json_error(client.delete("/models/fraud/1.1.0", headers=AUTH))["code"] == 409
    assert client.delete("/models/fraud/1.0.0", headers=AUTH).status_code == 204
    assert fraud.list_versions() == ["1.1.0"] and shelf.list_versions() == ["1.0.0", "2.0.0"]
    assert client.get("/models/fraud/1.0.0/history", headers=AUTH).get_json()[-1]["action"] == "delete"
    assert json_error(client.delete("/models/nope/1.0.0", headers=AUTH))["code"] == 404


def test_the_openapi_document_declares_the_delete(client) -> None:
    paths = client.get("/models/openapi.json", headers=AUTH).get_json()["paths"]
    for path in ("/models/{version}", "/models/{model}/{version}"):
        responses = paths[path]["delete"]["responses"]
        assert {"204", "401", "403", "404", "409", "412", "428"} <= set(responses)
