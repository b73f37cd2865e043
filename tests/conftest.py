"""Shared fixtures: a registry on a fresh folder, and pytest-flask's ``app`` / ``client`` over it."""

from __future__ import annotations

import functools
import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import servers
from flask import Flask
from helpers_procs import Children, clean_context, write_by_hand

from flask_model_registry import FlaskModelRegistry, ModelRegistry


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    """An empty registry folder (``versions/`` is created by the first save). It exists: a root
    that does not is a ``StorageUnavailableError``, not an empty registry."""
    root = tmp_path / "registry"
    root.mkdir()
    return root


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
def model_roots(tmp_path: Path) -> dict[str, Path]:
    """The roots of the two named models of :func:`named_models`: empty folders (a root that does not
    exist is a ``StorageUnavailableError``, not an empty registry)."""
    roots = {"fraud": tmp_path / "fraud", "churn": tmp_path / "churn"}
    for root in roots.values():
        root.mkdir()
    return roots


@pytest.fixture
def named_models(model_roots: dict[str, Path]) -> dict[str, Any]:
    """Config of a two-model service beside the default registry, as the README sets one up; a test
    module turns it on with ``app_config`` returning it."""
    return {
        "MODEL_REGISTRY_MODELS": {
            "fraud": str(model_roots["fraud"]),
            "churn": {"root": str(model_roots["churn"]), "stages": ["staging", "prod"]},
        }
    }


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


# Remote registries: real object stores on 127.0.0.1 (see servers.py), one of each per test session.


@pytest.fixture(scope="session")
def s3_server() -> Iterator[servers.Store]:
    """moto's S3 server, with a bucket."""
    with servers.moto_s3() as store:
        yield store


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[servers.Store]:
    """Azurite's blob service (installed from npm on first use), with a container."""
    with servers.azurite() as store:
        yield store


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[servers.Store]:
    """fake-gcs-server, with a bucket."""
    with servers.fake_gcs() as store:
        yield store


#: The storages every backend-parametrized test runs on, and the fixture of each store's server.
BACKENDS = {"local": None, "memory": None, "s3": "s3_server", "azure": "azurite_server", "gcs": "gcs_server"}


@pytest.fixture(params=list(BACKENDS))
def registry_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[servers.RegistryTarget]:
    """A fresh registry location on each backend: a folder, ``memory://`` or a prefix in a bucket."""
    backend, name = request.param, f"registry-{uuid.uuid4().hex}"
    server = BACKENDS[backend]
    if server is not None:
        store: servers.Store = request.getfixturevalue(server)
        yield servers.RegistryTarget(backend, store.url(name), store)
    elif backend == "memory":
        target = servers.RegistryTarget(backend, f"memory://{name}")
        yield target
        if target.filesystem.exists(target.path()):  # memory:// is shared by the whole process
            target.filesystem.rm(target.path(), recursive=True)
    else:
        (tmp_path / name).mkdir()
        yield servers.RegistryTarget(backend, str(tmp_path / name))


@pytest.fixture
def any_registry(registry_target: servers.RegistryTarget) -> ModelRegistry:
    """A :class:`ModelRegistry` on ``registry_target``, whichever backend that is."""
    return registry_target.open()


@pytest.fixture
def clean_children() -> Iterator[Children]:
    """Real child processes forked from a clean fork server (see :func:`helpers_procs.clean_context`):
    safe beside the threads of the object store servers; none outlives the test."""
    kids = Children(clean_context())
    yield kids
    kids.kill_all()
