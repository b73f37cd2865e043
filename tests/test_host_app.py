"""Inside a real host app: its error handlers, flask-cors, OPTIONS preflights, stable answers.

Under the prefix every answer is JSON whatever error handlers the host registers (before or after
``init_app``); outside it the host answers exactly as the same app without the extension.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from flask_model_registry import FlaskModelRegistry, ModelRegistry

TOKEN = "host-app-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The error handlers a host app registers, by the name the tests use.
HANDLER_KINDS: dict[str, int | type[Exception]] = {
    "404": 404,
    "405": 405,
    "HTTPException": HTTPException,
    "Exception": Exception,
}
HANDLER_SETS = [[kind] for kind in HANDLER_KINDS] + [list(HANDLER_KINDS)]
#: Requests outside the prefix: the host's own pages, found, missing, wrong method, crashing.
HOST_REQUESTS = [
    ("GET", "/hello"),
    ("GET", "/nope"),
    ("DELETE", "/hello"),
    ("GET", "/boom"),
    ("GET", "/models-x"),
]
#: Requests under the prefix and the status each answers.
API_REQUESTS = [
    ("GET", "/models/", 404),
    ("GET", "/models/1.0.0/nope", 404),
    ("GET", "/models//1.0.0", 404),
    ("PUT", "/models/1.0.0", 405),
    ("POST", "/models", 405),
    ("GET", "/models/9.9.9", 404),
    ("GET", "/models/not-a-version", 400),
    ("GET", "/models/latest?prerelease=maybe", 400),
    ("PATCH", "/models/1.0.0", 403),
]


def host_handler(kind: str) -> Callable[[Exception], Any]:
    """What a host app typically registers: its own JSON (or HTML) error pages."""

    def handle(exc: Exception) -> Any:
        code = exc.code if isinstance(exc, HTTPException) else 500
        if kind == "404":
            return "<h1>host page: not found</h1>", 404
        return jsonify(host=kind, code=code), code

    return handle


def make_host(root: Path, kinds: list[str], order: str) -> Flask:
    """A host app with its own routes and ``kinds`` of error handlers, registered ``before`` or
    ``after`` the extension, or with no extension at all (``order="without"``)."""
    app = Flask("host_app")
    app.config["MODEL_REGISTRY_ROOT"] = str(root)

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("the host's own bug")

    def register_handlers() -> None:
        for kind in kinds:
            app.register_error_handler(HANDLER_KINDS[kind], host_handler(kind))

    if order == "before":
        register_handlers()
        FlaskModelRegistry(app)
    elif order == "after":
        FlaskModelRegistry(app)
        register_handlers()
    else:
        register_handlers()
    return app


def answer(app: Flask, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    response = app.test_client().open(path, method=method)
    headers = dict(response.headers)
    if "Allow" in headers:
        headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
    return response.status_code, headers, response.data


@pytest.fixture
def root(published: ModelRegistry, registry_root: Path) -> Path:
    return registry_root


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("kinds", HANDLER_SETS, ids=["+".join(k) for k in HANDLER_SETS])
def test_outside_the_prefix_the_host_answers_as_without_the_extension(root: Path, kinds, order):
    without = make_host(root, kinds, "without")
    with_extension = make_host(root, kinds, order)
    for method, path in HOST_REQUESTS:
        assert answer(with_extension, method, path) == answer(without, method, path), (method, path)


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("kinds", [[], *HANDLER_SETS], ids=["none"] + ["+".join(k) for k in HANDLER_SETS])
def test_under_the_prefix_every_answer_is_json(root: Path, kinds, order, json_error, monkeypatch):
    app = make_host(root, kinds, order)
    client = app.test_client()
    for method, path, status in API_REQUESTS:
        response = client.open(path, method=method)
        assert response.status_code == status, (method, path, response.data[:200])
        json_error(response)
    assert client.get("/models/latest").get_json()["version"] == "1.1.0"

    def crash() -> None:
        raise RuntimeError("/secret/path/in/a/traceback")

    monkeypatch.setattr(app.registry, "snapshot", crash)
    response = client.get("/models")
    assert response.status_code == 500
    assert "/secret" not in json_error(response)["message"]


def test_the_example_of_the_issue_a_catch_all_host_handler(root: Path, json_error):
    """The issue's first report: a host with a catch-all handler keeps its own JSON 404 and 405."""
    app = make_host(root, ["Exception"], "before")
    assert app.test_client().get("/nope").get_json() == {"host": "Exception", "code": 404}
    assert app.test_client().delete("/hello").get_json() == {"host": "Exception", "code": 405}
    assert json_error(app.test_client().get("/models/1.0.0/nope"))["code"] == 404


@pytest.fixture
def cors_app(root: Path) -> Flask:
    """A host app with flask-cors and a token, as a browser dashboard on another origin uses it."""
    app = Flask("dashboard_backend")
    app.config.update(MODEL_REGISTRY_ROOT=str(root), MODEL_REGISTRY_API_TOKEN=TOKEN)
    CORS(app)
    FlaskModelRegistry(app)
    return app


def test_cors_preflight_needs_no_token_and_reveals_only_allow(cors_app: Flask):
    preflight = {
        "Origin": "https://dashboard.example",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }
    client = cors_app.test_client()
    for path, allowed in [
        ("/models", "GET, HEAD, OPTIONS"),
        ("/models/1.0.0", "DELETE, GET, HEAD, OPTIONS, PATCH"),
    ]:
        response = client.options(path, headers=preflight)
        assert response.status_code == 200, response.data
        assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://dashboard.example")
        assert response.headers["Allow"] == allowed
        assert response.get_json() == {"allow": allowed.split(", ")}
        assert "ETag" not in response.headers and "WWW-Authenticate" not in response.headers
    denied = client.get("/models/1.0.0", headers={"Origin": "https://dashboard.example"})
    assert denied.status_code == 401 and "Access-Control-Allow-Origin" in denied.headers
    allowed = client.get("/models/1.0.0", headers={"Origin": "https://dashboard.example", **AUTH})
    assert allowed.status_code == 200 and allowed.get_json()["version"] == "1.0.0"


def test_options_without_cors_needs_no_token(cors_app: Flask):
    cors_app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    response = cors_app.test_client().options("/models/latest")
    assert response.status_code == 200 and response.get_json() == {"allow": ["GET", "HEAD", "OPTIONS"]}


def test_error_and_success_bodies_share_one_compact_rendering(app: Flask, client, published):
    for response in (
        client.get("/models/1.0.0"),
        client.get("/models/9.9.9"),
        client.put("/models/1.0.0"),
    ):
        body = response.get_json()
        assert response.data == json.dumps(body, separators=(",", ":")).encode()


ALLOW_PROBE = """
import json, sys
from flask import Flask
from flask_model_registry import FlaskModelRegistry
app = Flask("probe")
app.config["MODEL_REGISTRY_ROOT"] = sys.argv[1]
FlaskModelRegistry(app)
client = app.test_client()
print(json.dumps([client.options("/models/1.0.0").headers["Allow"],
                  client.put("/models/1.0.0").headers["Allow"]]))
"""


def test_allow_has_one_order_in_every_process(root: Path):
    """Werkzeug builds ``Allow`` from a set, whose order changes with the process's hash seed."""
    seen = set()
    for seed in range(6):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        run = subprocess.run(
            [sys.executable, "-c", ALLOW_PROBE, str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        seen.update(json.loads(run.stdout))
    assert seen == {"DELETE, GET, HEAD, OPTIONS, PATCH"}
