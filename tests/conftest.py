"""Shared fixtures: a registry on a fresh folder, and pytest-flask's ``app`` / ``client`` over it."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers_procs import Children, write_by_hand

from flask_model_registry import FlaskModelRegistry, ModelRegistry


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    """An empty registry folder (``versions/`` is created by the first save)."""
    return tmp_path / "registry"


@pytest.fixture
def registry(registry_root: Path) -> ModelRegistry:
    """A :class:`ModelRegistry` on ``registry_root``."""
    return ModelRegistry(registry_root)


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra config for the ``app`` fixture; override it in a module or with ``parametrize``."""
    return {}


@pytest.fixture
def app(registry_root: Path, app_config: dict[str, Any]) -> Flask:
    """A Flask app with the extension on ``registry_root``, as the README sets one up."""
    app = Flask("prediction_service")
    app.config.update(TESTING=True, MODEL_REGISTRY_ROOT=str(registry_root), **app_config)
    FlaskModelRegistry(app)
    return app


@pytest.fixture
def published(registry: ModelRegistry) -> ModelRegistry:
    """The registry with 1.0.0 (prod), 1.1.0 (staging, canary) and 2.0.0-rc.1 published."""
    registry.save_model("1.0.0", {"weights": [1.0]}, {"stage": "prod", "auc": 0.81}, actor="trainer")
    registry.save_model("1.1.0", {"weights": [1.1]}, {"stage": "staging", "canary": True}, actor="trainer")
    registry.save_model("2.0.0-rc.1", {"weights": [2.0]}, {"auc": 0.9}, actor="trainer")
    return registry


@pytest.fixture
def by_hand(registry_root: Path) -> Callable[..., Path]:
    """Make a version in ``registry_root`` by hand, as the seed registries were made:
    ``by_hand("1.0.0", {"owner": "ml"}, model)`` (see :func:`helpers_procs.write_by_hand`)."""
    return functools.partial(write_by_hand, registry_root)


@pytest.fixture
def children() -> Iterator[Children]:
    """Real child processes (forked, as gunicorn forks its workers); none outlives the test."""
    kids = Children(multiprocessing.get_context("fork"))
    yield kids
    kids.kill_all()


@pytest.fixture
def auth_headers(app: Flask) -> dict[str, str]:
    """Turn on ``app``'s API token; the headers that carry it."""
    token = "test-api-token"
    app.config["MODEL_REGISTRY_API_TOKEN"] = token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def json_error() -> Callable[[Any], dict[str, Any]]:
    """``json_error(response)``: assert the API's error answer, ``{"error": {"code", "message"}}``
    in JSON with ``code`` the HTTP status, and return its ``error`` object."""

    def check(response: Any) -> dict[str, Any]:
        assert response.mimetype == "application/json", response.data[:200]
        body = response.get_json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert body["error"]["code"] == response.status_code
        assert isinstance(body["error"]["message"], str)
        return body["error"]

    return check
