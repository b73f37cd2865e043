"""The ``/models`` JSON API, row by row of the SPEC's HTTP table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from flask_model_registry import FlaskModelRegistry, ModelRegistry

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def with_token(app):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    return app


def error_of(response) -> dict:
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == response.status_code
    return body["error"]


def test_list_is_ascending_with_metadata(client, published):
    response = client.get("/models")
    assert response.status_code == 200
    body = response.get_json()
    assert [item["version"] for item in body] == ["1.0.0", "1.1.0", "2.0.0-rc.1"]
    assert body[0]["metadata"]["stage"] == "prod"
    assert body[0]["metadata"]["artifact"]["sha256"]


def test_list_filters_by_stage(client, published):
    assert [i["version"] for i in client.get("/models?stage=staging").get_json()] == ["1.1.0"]
    assert client.get("/models?stage=archived").get_json() == []


def test_empty_registry_lists_nothing_and_has_no_latest(client):
    assert client.get("/models").get_json() == []
    response = client.get("/models/latest")
    assert response.status_code == 404
    assert "no version" in error_of(response)["message"]


def test_latest_skips_prereleases_unless_asked(client, published):
    assert client.get("/models/latest").get_json()["version"] == "1.1.0"
    assert client.get("/models/latest?prerelease=true").get_json()["version"] == "2.0.0-rc.1"
    assert client.get("/models/latest?stage=prod").get_json()["version"] == "1.0.0"
    assert client.get("/models/latest?stage=archived").status_code == 404


def test_show_one_version(client, published):
    body = client.get("/models/1.1.0").get_json()
    assert body["version"] == "1.1.0"
    assert body["metadata"]["canary"] is True


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "latest-ish", "..", "1.0.0%2F..", "%00", "%ff"])
def test_invalid_version_is_400(client, published, version):
    response = client.get(f"/models/{version}")
    assert response.status_code in (400, 404)
    error_of(response)


def test_missing_version_is_404(client, published):
    response = client.get("/models/9.9.9")
    assert response.status_code == 404
    assert "9.9.9" in error_of(response)["message"]


def test_bad_query_values_are_400(client, published):
    for query in ("prerelease=maybe", "stage=", "stage=a%20b", "stage=" + "x" * 200):
        response = client.get(f"/models/latest?{query}")
        assert response.status_code == 400, query
        error_of(response)


def test_corrupt_version_keeps_listing_alive(client, published, registry_root: Path):
    (registry_root / "versions" / "1.1.0" / "metadata.json").write_text("[1, 2]")
    body = client.get("/models").get_json()
    broken = next(item for item in body if item["version"] == "1.1.0")
    assert "metadata" not in broken and "not an object" in broken["error"]
    response = client.get("/models/1.1.0")
    assert response.status_code == 500
    message = error_of(response)["message"]
    assert "1.1.0" in message and str(registry_root) not in message


def test_unknown_paths_and_methods_under_prefix_answer_json(client, published):
    assert error_of(client.get("/models/1.0.0/nothing/here"))["code"] == 404
    response = client.put("/models/1.0.0")
    assert error_of(response)["code"] == 405
    assert "PATCH" in response.headers["Allow"]


def test_options_answers_in_json_with_the_allowed_methods(client, published):
    for path, allowed in [
        ("/models", ["GET", "HEAD", "OPTIONS"]),
        ("/models/latest", ["GET", "HEAD", "OPTIONS"]),
        ("/models/1.0.0", ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH"]),
    ]:
        response = client.options(path)
        assert response.status_code == 200 and response.mimetype == "application/json"
        assert response.get_json() == {"allow": allowed}
        assert sorted(response.allow) == allowed


def test_host_app_error_pages_stay_untouched(client):
    response = client.get("/not-the-registry")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_etag_gives_304(client, published):
    first = client.get("/models/latest")
    etag = first.headers["ETag"]
    again = client.get("/models/latest", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    published.set_stage("1.1.0", "prod")
    changed = client.get("/models/latest", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_etag_is_the_same_in_every_worker(app, client, published, registry_root):
    other_worker = Flask("prediction_service")
    other_worker.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    FlaskModelRegistry(other_worker)
    for url in ("/models", "/models/latest", "/models/1.0.0"):
        assert other_worker.test_client().get(url).headers["ETag"] == client.get(url).headers["ETag"]


def test_writes_are_closed_without_a_token(client, published):
    response = client.patch("/models/1.0.0", json={"stage": "archived"})
    assert response.status_code == 403
    error_of(response)
    assert published.get_metadata("1.0.0")["stage"] == "prod"


@pytest.mark.usefixtures("with_token")
def test_token_guards_every_endpoint(client, published):
    for url in ("/models", "/models/latest", "/models/1.0.0", "/models/1.0.0/history"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        error_of(response)
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(url, headers={"Authorization": TOKEN}).status_code == 401
        assert client.get(url, headers=AUTH).status_code == 200


@pytest.mark.usefixtures("with_token")
def test_patch_merges_and_records_who(client, published):
    response = client.patch(
        "/models/1.1.0",
        json={"stage": "prod", "canary": None, "notes": {"reviewer": "ana"}},
        headers={**AUTH, "X-Model-Registry-Actor": "ana"},
    )
    assert response.status_code == 200
    metadata = response.get_json()["metadata"]
    assert metadata["stage"] == "prod" and "canary" not in metadata
    assert metadata["notes"] == {"reviewer": "ana"}
    assert client.get("/models/latest?stage=prod", headers=AUTH).get_json()["version"] == "1.1.0"
    events = client.get("/models/1.1.0/history", headers=AUTH).get_json()
    assert [e["action"] for e in events] == ["publish", "update_metadata"]
    assert events[-1]["before"] == {"stage": "staging", "canary": True}
    assert events[-1]["after"] == {"stage": "prod", "notes": {"reviewer": "ana"}}
    assert events[-1]["actor"].startswith("ana (api:")


@pytest.mark.usefixtures("with_token")
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b"\xff\xfe{", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"prod"', "application/json", 400),
        (b'{"version": "9.9.9"}', "application/json", 400),
        (b'{"artifact": null}', "application/json", 400),
        (b'{"stage": "no spaces allowed"}', "application/json", 400),
        (b'{"stage": 5}', "application/json", 400),
        (b"[" * 100000, "application/json", 400),
        (b'{"stage": "prod"}', "text/plain", 415),
        (b'{"x": "' + b"a" * 300_000 + b'"}', "application/json", 413),
    ],
)
def test_bad_patches_are_4xx_and_change_nothing(client, published, body, content_type, status):
    before = published.get_metadata("1.0.0")
    response = client.patch("/models/1.0.0", data=body, content_type=content_type, headers=AUTH)
    assert response.status_code == status
    error_of(response)
    assert published.get_metadata("1.0.0") == before


@pytest.mark.usefixtures("with_token")
def test_patch_missing_version_is_404(client, published):
    assert client.patch("/models/3.0.0", json={"stage": "prod"}, headers=AUTH).status_code == 404


@pytest.mark.parametrize("app_config", [{"MODEL_REGISTRY_STAGES": ["staging", "prod"]}])
def test_configured_stages_reject_typos(app, client, published):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    response = client.patch("/models/1.0.0", json={"stage": "pord"}, headers=AUTH)
    assert response.status_code == 400
    assert "pord" in error_of(response)["message"]


@pytest.mark.parametrize("app_config", [{"MODEL_REGISTRY_URL_PREFIX": "/api/v1/models/"}])
def test_url_prefix_is_configurable(client, published):
    assert client.get("/api/v1/models/latest").get_json()["version"] == "1.1.0"
    assert client.get("/models/latest").mimetype == "text/html"  # not ours any more
    assert error_of(client.get("/api/v1/models/nope/nope"))["code"] == 404


@pytest.mark.parametrize("app_config", [{"MODEL_REGISTRY_API_ENABLED": False}])
def test_api_can_be_switched_off(app, client, published):
    assert client.get("/models").status_code == 404
    assert app.registry.list_versions() == ["1.0.0", "1.1.0", "2.0.0-rc.1"]


def test_answers_never_show_server_paths(client, published, registry_root: Path):
    (registry_root / "versions" / "1.0.0" / "metadata.json").write_bytes(b"\x00garbage")
    for url in ("/models", "/models/1.0.0", "/models/latest?stage=prod", "/models/..%2F..%2Fetc"):
        assert str(registry_root) not in client.get(url).get_data(as_text=True)


def test_json_is_valid_even_with_odd_metadata(client, registry: ModelRegistry):
    registry.save_model("1.0.0", 1, {"note": "caf\u00e9 \u2603", "nested": {"a": [1, 2.5, None]}})
    body = json.loads(client.get("/models/1.0.0").data)
    assert body["metadata"]["note"] == "caf\u00e9 \u2603"


def test_a_missing_root_is_503_without_its_path(tmp_path: Path, json_error):
    missing = tmp_path / "typo-in-the-root"
    app = Flask("typo")
    app.config["MODEL_REGISTRY_ROOT"] = str(missing)
    FlaskModelRegistry(app)
    for url in ("/models", "/models/latest", "/models/1.0.0"):
        response = app.test_client().get(url)
        assert response.status_code == 503, url
        message = json_error(response)["message"]
        assert "root folder does not exist" in message and str(tmp_path) not in message
    ModelRegistry(missing).save_model("1.0.0", "model")  # save_model creates the root
    assert app.test_client().get("/models/latest").get_json()["version"] == "1.0.0"
