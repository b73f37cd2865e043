"""``<prefix>/openapi.json``: a valid OpenAPI 3.1 document that names exactly the blueprint's routes."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from flask_model_registry.api import bp
from flask_model_registry.monitoring import bp as monitoring_bp

#: Methods Flask adds to every rule by itself; the document leaves them out, as is usual.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
PREFIXES = ["/models", "/api/v1/models/"]


def openapi_url(app: Flask) -> str:
    return "/" + app.config["MODEL_REGISTRY_URL_PREFIX"].strip("/") + "/openapi.json"


@pytest.fixture
def document(app: Flask, client) -> dict[str, Any]:
    response = client.get(openapi_url(app))
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def blueprint_operations(app: Flask) -> set[tuple[str, str]]:
    """``(path, method)`` of every route the blueprint registered, with OpenAPI path templates."""
    return {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.partition(".")[0] in (bp.name, monitoring_bp.name)
        for method in rule.methods - IMPLICIT_METHODS
    }


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The document's operations by ``(path, method)``."""
    return {
        (path, method): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method not in ("parameters", "summary", "description", "servers")
    }


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


@pytest.mark.parametrize("app_config", [{"MODEL_REGISTRY_URL_PREFIX": p} for p in PREFIXES], ids=PREFIXES)
def test_document_names_exactly_the_routes_of_the_blueprint(app, document):
    prefix = "/" + app.config["MODEL_REGISTRY_URL_PREFIX"].strip("/")
    routes = blueprint_operations(app)
    assert (prefix, "get") in routes and (f"{prefix}/{{version}}", "patch") in routes
    assert set(operations(document)) == routes


def test_default_document_is_the_packaged_file_plus_the_named_models(document):
    packaged = json.loads(resources.files("flask_model_registry").joinpath("openapi.json").read_bytes())
    default_paths = {p: item for p, item in document["paths"].items() if not p.startswith("/models/{model}")}
    assert {**document, "paths": default_paths} == packaged
    for path, item in packaged["paths"].items():
        if path not in ("/models/openapi.json", "/models/health", "/models/metrics"):  # app-wide
            named = document["paths"][path.replace("/models", "/models/{model}", 1)]
            assert named["parameters"][0] == {"$ref": "#/components/parameters/model"}
            for method in set(item) - {"parameters"}:
                assert named[method]["operationId"] == item[method]["operationId"] + "OfModel"
                assert item[method]["responses"].items() <= named[method]["responses"].items()
                assert "404" in named[method]["responses"]  # an unknown name


def test_document_names_the_mount_point_as_its_server(app, client):
    document = client.get(openapi_url(app), environ_overrides={"SCRIPT_NAME": "/svc"}).get_json()
    assert document["servers"] == [{"url": "/svc"}]
    assert client.get(openapi_url(app)).get_json()["servers"] == [{"url": "/"}]


def test_every_error_answer_is_documented_with_the_error_schema(document):
    responses = document["components"]["responses"]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for where, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                name = response["$ref"].removeprefix("#/components/responses/")
                assert responses[name]["content"] == error, (where, status)


def test_document_is_served_behind_the_token(app, client, auth_headers, json_error):
    url = openapi_url(app)
    response = client.get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    json_error(response)
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(url, headers=auth_headers).get_json()["openapi"].startswith("3.1.")


def test_document_has_an_etag(app, client):
    first = client.get(openapi_url(app))
    again = client.get(openapi_url(app), headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
