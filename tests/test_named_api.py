"""The JSON API of named models under ``<prefix>/<name>``: the same answers as the default registry's."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import servers
from flask import Flask, url_for
from hypothesis import given
from hypothesis import strategies as st
from servers_gunicorn import get, gunicorn
from test_fuzz import fuzz, version_strings
from test_store_outage import FAIL_FAST

from flask_model_registry import FlaskModelRegistry, ModelRegistry

TOKEN = "named-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

#: Requests (after the prefix) whose answers must not depend on which registry they ask.
READS = [
    "",
    "?stage=prod",
    "?stage=archived",
    "?stage=a%20b",
    "/latest",
    "/latest?stage=prod",
    "/latest?stage=archived",
    "/latest?prerelease=true",
    "/latest?prerelease=maybe",
    "/1.0.0",
    "/1.1.0",
    "/9.9.9",
    "/1.0",
    "/1.0.0%2F..",
    "/1.1.0/history",
    "/9.9.9/history",
    "/1.0.0/nothing/here",
]


@pytest.fixture
def app_config(named_models: dict[str, Any]) -> dict[str, Any]:
    return named_models


@pytest.fixture
def twins(published: ModelRegistry, registry_root: Path, model_roots: dict[str, Path]) -> None:
    """The named model ``fraud`` holds a byte-for-byte copy of the default registry (``published``),
    audit trail included; ``churn`` holds one version of its own."""
    shutil.copytree(registry_root, model_roots["fraud"], dirs_exist_ok=True)
    ModelRegistry(model_roots["churn"]).save_model("7.0.0", "churn model", {"stage": "prod"})


def make_app(root: Path, models: dict[str, Any] | None, **config: Any) -> Flask:
    """A service on the local default ``root`` with the named ``models``."""
    app = Flask("named_service")
    app.config.update(MODEL_REGISTRY_ROOT=str(root), MODEL_REGISTRY_MODELS=models, **config)
    FlaskModelRegistry(app)
    return app


def same(first: Any, second: Any) -> None:
    """Two answers are the same: status, headers that matter, body."""
    assert first.status_code == second.status_code
    assert first.mimetype == second.mimetype
    for header in ("ETag", "Allow", "WWW-Authenticate"):
        assert first.headers.get(header) == second.headers.get(header), header
    assert first.data == second.data


@pytest.mark.usefixtures("twins")
@pytest.mark.parametrize("path", READS)
def test_a_named_model_answers_as_the_default_registry(client, path: str):
    same(client.get("/models" + path), client.get("/models/fraud" + path))


@pytest.mark.usefixtures("twins")
def test_named_models_answer_from_their_own_registry(client):
    assert [v["version"] for v in client.get("/models/churn").get_json()] == ["7.0.0"]
    assert client.get("/models/churn/latest?stage=prod").get_json()["version"] == "7.0.0"
    assert client.get("/models/churn/1.0.0").status_code == 404
    assert client.get("/models/latest").get_json()["version"] == "1.1.0"


@pytest.mark.usefixtures("twins")
def test_conditional_gets_and_options_are_the_same(client):
    for path in ("", "/latest", "/1.0.0", "/1.0.0/history"):
        etag = client.get("/models/fraud" + path).headers["ETag"]
        same(
            client.get("/models" + path, headers={"If-None-Match": etag}),
            client.get("/models/fraud" + path, headers={"If-None-Match": etag}),
        )
        assert client.get("/models/fraud" + path, headers={"If-None-Match": etag}).status_code == 304
        same(client.options("/models" + path), client.options("/models/fraud" + path))
    same(client.put("/models/1.0.0"), client.put("/models/fraud/1.0.0"))


@pytest.mark.usefixtures("twins")
def test_corrupt_versions_answer_the_same(client, registry_root: Path, model_roots: dict[str, Path]):
    for root in (registry_root, model_roots["fraud"]):
        (root / "versions" / "1.1.0" / "metadata.json").write_text("[1, 2]")
    for path in ("", "/1.1.0"):
        same(client.get("/models" + path), client.get("/models/fraud" + path))
    assert str(model_roots["fraud"]) not in client.get("/models/fraud/1.1.0").get_data(as_text=True)


@pytest.mark.usefixtures("twins")
def test_writes_are_closed_without_a_token(client, model_roots: dict[str, Path], json_error):
    response = client.patch("/models/fraud/1.0.0", json={"stage": "archived"})
    assert response.status_code == 403 and "MODEL_REGISTRY_API_TOKEN" in json_error(response)["message"]
    assert ModelRegistry(model_roots["fraud"]).get_metadata("1.0.0")["stage"] == "prod"


@pytest.mark.usefixtures("twins")
def test_the_token_guards_named_models_before_anything_else(app: Flask, client, json_error):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    for path in ("/fraud", "/fraud/latest", "/fraud/1.0.0", "/fraud/1.0.0/history", "/nope", "/nope/latest"):
        response = client.get("/models" + path)
        assert response.status_code == 401, path  # an unknown name is not told apart without the token
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        json_error(response)
        assert client.get("/models" + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/models/fraud/1.0.0", headers=AUTH).status_code == 200


PATCHES: list[tuple[str, bytes, str]] = [
    ("/1.1.0", b'{"stage": "prod", "canary": null, "notes": {"by": "ana"}}', "application/merge-patch+json"),
    ("/1.0.0", b'{"stage": "no spaces allowed"}', "application/json"),
    ("/1.0.0", b'{"version": "9.9.9"}', "application/json"),
    ("/1.0.0", b"not json", "application/json"),
    ("/1.0.0", b'{"stage": "prod"}', "text/plain"),
    ("/1.0.0", b'{"x": "' + b"a" * 300_000 + b'"}', "application/json"),
    ("/3.0.0", b'{"stage": "prod"}', "application/json"),
    ("/1.0", b'{"stage": "prod"}', "application/json"),
]


@pytest.mark.usefixtures("twins")
@pytest.mark.parametrize(("path", "body", "content_type"), PATCHES)
def test_patches_answer_the_same(app: Flask, client, path: str, body: bytes, content_type: str):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    answers = [
        client.patch(base + path, data=body, content_type=content_type, headers=AUTH)
        for base in ("/models", "/models/fraud")
    ]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].get_json() == answers[1].get_json()
    if answers[0].status_code == 200:  # the ETag of the answer is that of the next GET
        assert answers[1].headers["ETag"] == client.get("/models/fraud" + path, headers=AUTH).headers["ETag"]


@pytest.mark.usefixtures("twins")
def test_a_patch_changes_only_its_own_model(app: Flask, client, model_roots: dict[str, Path]):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    response = client.patch(
        "/models/fraud/1.1.0", json={"stage": "prod"}, headers={**AUTH, "X-Model-Registry-Actor": "ana"}
    )
    assert response.status_code == 200 and response.get_json()["metadata"]["stage"] == "prod"
    assert ModelRegistry(model_roots["fraud"]).get_latest_version("prod") == "1.1.0"  # on disk
    assert app.registry.get_metadata("1.1.0")["stage"] == "staging"  # the default is untouched
    events = client.get("/models/fraud/1.1.0/history", headers=AUTH).get_json()
    assert [e["action"] for e in events] == ["publish", "update_metadata"]
    assert events[-1]["actor"].startswith("ana (api:")
    assert len(client.get("/models/1.1.0/history", headers=AUTH).get_json()) == 1


def test_named_stages_reject_typos(app: Flask, client, json_error):
    app.registries["churn"].save_model("1.0.0", "m")
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    response = client.patch("/models/churn/1.0.0", json={"stage": "pord"}, headers=AUTH)
    assert response.status_code == 400 and "pord" in json_error(response)["message"]


# unknown names and the name/version split ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/nope/latest"),
        ("GET", "/nope/1.0.0"),
        ("GET", "/nope/1.0.0/history"),
        ("GET", "/nope/history"),
        ("PATCH", "/nope/1.0.0"),
        ("PATCH", "/nope"),
        ("GET", "/fraud-2/latest"),
    ],
)
def test_an_unknown_name_is_a_json_404_naming_it(app: Flask, client, json_error, method: str, path: str):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    response = client.open("/models" + path, method=method, json={"stage": "prod"}, headers=AUTH)
    assert response.status_code == 404
    message = json_error(response)["message"]
    assert repr(path.split("/")[1]) in message and "churn, fraud" in message


def test_options_tell_no_name_from_another(app: Flask, client):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    for path in ("", "/latest", "/1.0.0", "/1.0.0/history"):
        same(client.options("/models/nope" + path), client.options("/models/fraud" + path))


def test_names_start_with_a_letter_and_versions_with_a_digit(app: Flask, client):
    app.registries["fraud"].save_model("1.0.0", "fraud model")
    app.registry.save_model("2.0.0", "default model")
    assert client.get("/models/fraud").get_json()[0]["version"] == "1.0.0"
    assert client.get("/models/2.0.0").get_json()["version"] == "2.0.0"
    assert client.get("/models/fraud/1.0.0").status_code == 200
    assert client.get("/models/fraud/2.0.0").status_code == 404


def test_without_named_models_the_default_api_is_unchanged(registry_root: Path, json_error):
    client = make_app(registry_root, None).test_client()
    for bad in ("abc", "v1", "latest-ish"):  # a name-shaped segment is still read as a bad version
        for method in ("GET", "PATCH"):
            response = client.open(f"/models/{bad}", method=method, json={"stage": "prod"})
            assert response.status_code == 400 and bad in json_error(response)["message"]
    response = client.get("/models/abc/latest")
    assert response.status_code == 404
    assert "no model named 'abc'" in json_error(response)["message"]


def test_named_models_follow_the_url_prefix(registry_root: Path, model_roots: dict[str, Path]):
    app = make_app(registry_root, {"fraud": str(model_roots["fraud"])}, MODEL_REGISTRY_URL_PREFIX="/api/v1")
    app.registries["fraud"].save_model("1.0.0", "fraud model")
    client = app.test_client()
    assert client.get("/api/v1/fraud/latest").get_json()["version"] == "1.0.0"
    assert client.get("/models/fraud/latest").mimetype == "text/html"  # not ours


def test_url_for_builds_the_default_or_the_named_route(app: Flask):
    with app.test_request_context():
        assert url_for("model_registry.show_model", version="1.0.0") == "/models/1.0.0"
        assert url_for("model_registry.show_model", version="1.0.0", model="fraud") == "/models/fraud/1.0.0"
        assert url_for("model_registry.list_models", model=None) == "/models"
        assert url_for("model_registry.model_history", model="churn", version="1.0.0") == (
            "/models/churn/1.0.0/history"
        )


def test_a_named_model_whose_local_root_is_missing_answers_503(
    registry_root: Path, model_roots: dict[str, Path], tmp_path: Path, json_error
):
    gone = tmp_path / "not-mounted"
    app = make_app(registry_root, {"gone": str(gone), "churn": str(model_roots["churn"])})
    app.registry.save_model("1.0.0", "default model")
    client = app.test_client()
    for path in ("/gone", "/gone/latest", "/gone/1.0.0", "/gone/1.0.0/history"):
        response = client.get("/models" + path)
        assert response.status_code == 503, path
        assert str(gone) not in json_error(response)["message"]  # no server path in an answer
    assert client.get("/models/latest").get_json()["version"] == "1.0.0"
    assert client.get("/models/churn").get_json() == []
    gone.mkdir()  # mounted: it answers at once
    assert client.get("/models/gone").get_json() == []


# each named model refreshes on its own ------------------------------------------------------------


def test_a_version_published_elsewhere_is_seen_at_once(client, model_roots: dict[str, Path]):
    assert client.get("/models/churn").get_json() == []
    ModelRegistry(model_roots["churn"]).save_model("1.0.0", "by another process")
    assert client.get("/models/churn/latest").get_json()["version"] == "1.0.0"
    assert client.get("/models").get_json() == []


@pytest.fixture
def s3_named(s3_server: servers.Store) -> Callable[..., dict[str, Any]]:
    """``s3_named(**settings)``: the settings of a named model on a fresh prefix of the moto bucket."""

    def settings(**extra: Any) -> dict[str, Any]:
        root = s3_server.url(f"named-{uuid.uuid4().hex}")
        return {"root": root, "storage_options": s3_server.storage_options, **extra}

    return settings


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)


def test_a_named_model_on_s3_beside_a_local_default(s3_named, registry_root: Path):
    fraud = s3_named(refresh_interval=0.2)
    app = make_app(registry_root, {"fraud": fraud}, MODEL_REGISTRY_API_TOKEN=TOKEN)
    client = app.test_client()
    elsewhere = ModelRegistry(fraud["root"], storage_options=fraud["storage_options"], refresh_interval=0)
    app.registry.save_model("3.0.0", "default model", {"stage": "prod"})
    assert client.get("/models/fraud", headers=AUTH).get_json() == []

    elsewhere.save_model("1.0.0", "fraud model", {"stage": "staging"})  # another host publishes
    wait_for(lambda: client.get("/models/fraud/latest", headers=AUTH).status_code == 200)
    listed = client.get("/models/fraud", headers=AUTH)
    assert [v["version"] for v in listed.get_json()] == ["1.0.0"]
    again = client.get("/models/fraud", headers={**AUTH, "If-None-Match": listed.headers["ETag"]})
    assert again.status_code == 304

    response = client.patch("/models/fraud/1.0.0", json={"stage": "prod"}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["ETag"] == client.get("/models/fraud/1.0.0", headers=AUTH).headers["ETag"]
    wait_for(lambda: elsewhere.get_latest_version("prod") == "1.0.0")  # written to the bucket
    events = client.get("/models/fraud/1.0.0/history", headers=AUTH).get_json()
    assert [e["action"] for e in events] == ["publish", "update_metadata"]
    assert client.get("/models/fraud/latest?stage=prod", headers=AUTH).get_json()["version"] == "1.0.0"
    assert client.get("/models/latest?stage=prod", headers=AUTH).get_json()["version"] == "3.0.0"
    assert app.registries["fraud"].get_latest_model("prod") == "fraud model"


def test_a_named_model_whose_store_is_down_answers_503_while_the_others_answer(
    registry_root: Path, model_roots: dict[str, Path], json_error
):
    with servers.moto_s3() as store:  # a server of its own, to stop
        fraud = {"root": store.url("down"), "storage_options": {**store.storage_options, **FAIL_FAST}}
        ModelRegistry(fraud["root"], storage_options=fraud["storage_options"]).save_model("1.0.0", "f")
        models = {"fraud": {**fraud, "refresh_interval": 0}, "churn": str(model_roots["churn"])}
        running = make_app(registry_root, models, MODEL_REGISTRY_API_TOKEN=TOKEN)
        assert running.test_client().get("/models/fraud/latest", headers=AUTH).status_code == 200
    started_during_the_outage = make_app(registry_root, models, MODEL_REGISTRY_API_TOKEN=TOKEN)
    started_during_the_outage.registry.save_model("2.0.0", "default model")
    started_during_the_outage.registries["churn"].save_model("3.0.0", "churn model")

    client = started_during_the_outage.test_client()
    for path in ("/fraud", "/fraud/latest", "/fraud/1.0.0", "/fraud/1.0.0/history"):
        response = client.get("/models" + path, headers=AUTH)
        assert response.status_code == 503, path
        assert "moto-secret" not in json_error(response)["message"]
    assert client.patch("/models/fraud/1.0.0", json={"stage": "prod"}, headers=AUTH).status_code == 503
    assert client.get("/models/latest", headers=AUTH).get_json()["version"] == "2.0.0"
    assert client.get("/models/churn/latest", headers=AUTH).get_json()["version"] == "3.0.0"
    # a service that read the model before the outage keeps serving its last state
    assert running.test_client().get("/models/fraud/latest", headers=AUTH).status_code == 200


@pytest.mark.usefixtures("twins")
def test_patch_preconditions_on_a_named_model(app: Flask, client, json_error):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    etag = client.get("/models/fraud/1.0.0", headers=AUTH).headers["ETag"]
    stale = client.patch("/models/fraud/1.0.0", json={"stage": "x"}, headers={**AUTH, "If-Match": '"old"'})
    assert stale.status_code == 412 and json_error(stale)
    assert app.registries["fraud"].get_metadata("1.0.0")["stage"] == "prod"  # nothing changed
    fresh = client.patch("/models/fraud/1.0.0", json={"stage": "x"}, headers={**AUTH, "If-Match": etag})
    assert fresh.status_code == 200
    app.config["MODEL_REGISTRY_REQUIRE_IF_MATCH"] = True
    required = client.patch("/models/fraud/1.0.0", json={"stage": "y"}, headers=AUTH)
    assert required.status_code == 428 and json_error(required)


@fuzz
@given(
    name=st.from_regex(r"[a-z][a-z0-9_-]{0,70}", fullmatch=True) | version_strings,
    version=version_strings,
)
def test_any_name_and_version_in_the_url_get_a_json_answer(
    app: Flask, client, json_error, model_roots: dict[str, Path], name: str, version: str
):
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    if not app.registries["fraud"].list_versions():
        app.registries["fraud"].save_model("1.0.0", "m")
    segment, quoted = (quote(part.encode("utf-8", "surrogatepass"), safe="") for part in (name, version))
    for method, url in [
        ("GET", f"/models/{segment}"),
        ("GET", f"/models/{segment}/latest"),
        ("GET", f"/models/{segment}/{quoted}"),
        ("GET", f"/models/{segment}/{quoted}/history"),
        ("PATCH", f"/models/{segment}/{quoted}"),
    ]:
        response = client.open(url, method=method, json={"note": "fuzz"}, headers=AUTH)
        assert response.status_code < 500, (method, url, response.data[:300])
        assert response.mimetype == "application/json"
        assert str(model_roots["fraud"]) not in response.get_data(as_text=True)
        if response.status_code >= 400:
            json_error(response)


def test_a_two_model_service_under_real_gunicorn(s3_named, registry_root: Path, model_roots: dict[str, Path]):
    fraud = s3_named(refresh_interval=0.2)
    models = {"fraud": fraud, "churn": str(model_roots["churn"])}
    ModelRegistry(registry_root).save_model("1.0.0", "default model", {"stage": "prod"})
    trainer = ModelRegistry(fraud["root"], storage_options=fraud["storage_options"])
    trainer.save_model("2.0.0", "fraud model", {"stage": "prod"})
    ModelRegistry(model_roots["churn"]).save_model("3.0.0", "churn model")
    env = {"MODEL_REGISTRY_ROOT": str(registry_root), "FLASK_MODEL_REGISTRY_MODELS": json.dumps(models)}
    with gunicorn(env, workers=2) as base:
        status, body = get(f"{base}/models/fraud/latest?stage=prod")
        assert (status, body["version"]) == (200, "2.0.0")
        assert get(f"{base}/models/latest")[1]["version"] == "1.0.0"
        assert [v["version"] for v in get(f"{base}/models/churn")[1]] == ["3.0.0"]
        status, body = get(f"{base}/models/nope/latest")
        assert status == 404 and "nope" in body["error"]["message"]
        trainer.save_model("2.1.0", "newer fraud model")  # every worker sees it within the interval
        wait_for(lambda: all(get(f"{base}/models/fraud/latest")[1]["version"] == "2.1.0" for _ in range(6)))
