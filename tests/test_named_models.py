"""Several models in one app: ``MODEL_REGISTRY_MODELS``, ``app.registries`` and ``get_registry(name)``."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app

import flask_model_registry
from flask_model_registry import (
    ConfigError,
    FlaskModelRegistry,
    ModelRegistry,
    UnknownModelError,
    extension,
    get_registry,
)


@pytest.fixture
def app_config(named_models: dict[str, Any]) -> dict[str, Any]:
    return named_models


def make_app(models: Any, **config: Any) -> Flask:
    app = Flask("named_models")
    app.config.update(MODEL_REGISTRY_MODELS=models, **config)
    FlaskModelRegistry(app)
    return app


# the mapping and get_registry ---------------------------------------------------------------------


def test_named_registries_beside_the_default(app: Flask, registry_root: Path, model_roots: dict[str, Path]):
    assert Path(app.registry.root) == registry_root
    assert isinstance(app.registries, types.MappingProxyType)
    assert sorted(app.registries) == ["churn", "fraud"]
    for name, root in model_roots.items():
        assert isinstance(app.registries[name], ModelRegistry)
        assert Path(app.registries[name].root) == root
    with pytest.raises(TypeError):
        app.registries["other"] = app.registry  # type: ignore[index]
    with app.app_context():
        assert current_app.registries is app.registries
        assert FlaskModelRegistry().registries is app.registries


def test_each_named_model_is_a_registry_of_its_own(app: Flask):
    app.registries["fraud"].save_model("1.0.0", "fraud model")
    app.registries["churn"].save_model("2.0.0", "churn model", {"stage": "prod"})
    app.registry.save_model("0.1.0", "default model")
    assert app.registries["fraud"].list_versions() == ["1.0.0"]
    assert app.registries["churn"].get_latest_model("prod") == "churn model"
    assert app.registry.list_versions() == ["0.1.0"]


def test_get_registry_returns_the_default_or_a_named_one(app: Flask):
    assert "get_registry" in flask_model_registry.__all__
    assert "UnknownModelError" in flask_model_registry.__all__
    with app.app_context():
        assert get_registry() is app.registry
        assert get_registry(None) is app.registry
        assert get_registry("fraud") is app.registries["fraud"]


@pytest.mark.parametrize("name", ["nope", "Fraud", "", "latest"])
def test_get_registry_of_an_unknown_name_is_a_key_error_naming_it(app: Flask, name: str):
    with app.app_context(), pytest.raises(KeyError) as caught:
        get_registry(name)
    assert isinstance(caught.value, UnknownModelError)
    assert f"no model named {name!r}" in str(caught.value)
    assert "churn, fraud" in str(caught.value)  # and which ones exist


def test_without_named_models_the_mapping_is_empty(registry_root: Path):
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    FlaskModelRegistry(app)
    assert app.registries == {} and isinstance(app.registries, types.MappingProxyType)
    with app.app_context(), pytest.raises(KeyError, match="none are configured"):
        get_registry("fraud")


def test_get_registry_outside_an_app_context_is_a_clear_error():
    with pytest.raises(RuntimeError, match="application context"):
        get_registry()
    with pytest.raises(RuntimeError, match="not initialised"), Flask(__name__).app_context():
        get_registry("fraud")


# settings -----------------------------------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The arguments each named :class:`ModelRegistry` is opened with, by root."""
    calls: dict[str, dict[str, Any]] = {}

    class Recording(ModelRegistry):
        def __init__(self, root: str, **kwargs: Any) -> None:
            calls[root] = kwargs
            super().__init__(root, **kwargs)

    monkeypatch.setattr(extension, "ModelRegistry", Recording)
    return calls


def test_a_dict_sets_a_models_own_settings_and_the_rest_come_from_the_app(tmp_path: Path, opened):
    options = {"auto_mkdir": True}
    app = make_app(
        {
            "plain": str(tmp_path / "plain"),
            "own": {
                "root": str(tmp_path / "own"),
                "storage_options": options,
                "refresh_interval": 5,
                "stages": ["prod"],
                "model_cache_size": 1,
                "watch": False,
                "canary_weight": 0.25,
            },
        },
        MODEL_REGISTRY_REFRESH_INTERVAL=3,
        MODEL_REGISTRY_STAGES=["staging", "prod"],
        MODEL_REGISTRY_MODEL_CACHE_SIZE=2,
        MODEL_REGISTRY_WATCH=True,
        MODEL_REGISTRY_STORAGE_OPTIONS={"anon": True},  # the default's store: not passed on
    )
    assert opened[str(tmp_path / "plain")] == {
        "refresh_interval": 3.0,
        "allowed_stages": ["staging", "prod"],
        "model_cache_size": 2,
        "watch": True,
        "canary_weight": 0.1,
        "retired_stages": ["archived"],
    }
    assert opened[str(tmp_path / "own")] == {
        "storage_options": options,
        "refresh_interval": 5.0,
        "allowed_stages": ["prod"],
        "model_cache_size": 1,
        "watch": False,
        "canary_weight": 0.25,
        "retired_stages": ["archived"],
    }
    assert app.registries["own"].allowed_stages == {"prod"}
    assert not app.registries["own"].storage.watching
    app.registries["own"].save_model("1.0.0", "m")
    with pytest.raises(ValueError, match="staging"):
        app.registries["own"].set_stage("1.0.0", "staging")


BAD_NAMES = ["Fraud", "1model", "", "a" * 65, "with space", "fraud/x", "fraud.v2", "émile", "-x", 5, None]


@pytest.mark.parametrize("name", [*BAD_NAMES, "latest", "openapi.json", "ui", "health", "metrics"])
def test_a_bad_name_is_a_value_error_at_init_app(tmp_path: Path, name: Any):
    with pytest.raises(ValueError, match="MODEL_REGISTRY_MODELS") as caught:
        make_app({name: str(tmp_path)})
    assert repr(name) in str(caught.value)


def test_the_longest_name_and_every_allowed_character_work(tmp_path: Path):
    names = ["a" * 64, "a0_-z", "x"]
    app = make_app({name: str(tmp_path / str(i)) for i, name in enumerate(names)})
    assert sorted(app.registries) == sorted(names)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        (None, "['fraud']"),
        ("", "['fraud']"),
        (5, "['fraud']"),
        ({"stages": ["prod"]}, "needs a 'root'"),
        ({"root": "/x", "rot": "/y"}, "unknown key 'rot'"),
        ({"root": "/x", "refresh_interval": -1}, "['refresh_interval']"),
        ({"root": "/x", "refresh_interval": "soon"}, "['refresh_interval']"),
        ({"root": "/x", "refresh_interval": True}, "['refresh_interval']"),
        ({"root": "/x", "refresh_interval": float("nan")}, "['refresh_interval']"),
        ({"root": "/x", "stages": 5}, "['stages']"),
        ({"root": "/x", "stages": ["no spaces"]}, "['stages']"),
        ({"root": "/x", "stages": [5]}, "['stages']"),
        ({"root": "/x", "model_cache_size": -1}, "['model_cache_size']"),
        ({"root": "/x", "model_cache_size": 1.5}, "['model_cache_size']"),
        ({"root": "/x", "watch": "maybe"}, "['watch']"),
        ({"root": "/x", "model_cache_size": True}, "['model_cache_size']"),
        ({"root": "/x", "storage_options": "anon"}, "['storage_options']"),
    ],
)
def test_a_bad_value_is_a_value_error_naming_the_key(spec: Any, where: str):
    with pytest.raises(ConfigError) as caught:
        make_app({"fraud": spec})
    assert isinstance(caught.value, ValueError) and caught.value.key == "MODEL_REGISTRY_MODELS"
    assert str(caught.value).startswith("MODEL_REGISTRY_MODELS") and where in str(caught.value)


@pytest.mark.parametrize("models", [["fraud"], "not json", '["fraud"]', 5])
def test_a_value_that_is_no_mapping_is_a_value_error(models: Any):
    with pytest.raises(ValueError, match="MODEL_REGISTRY_MODELS"):
        make_app(models)


def test_a_bad_config_leaves_the_app_without_the_extension(tmp_path: Path):
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_MODELS"] = {"Bad": str(tmp_path)}
    with pytest.raises(ValueError):
        FlaskModelRegistry(app)
    assert "model_registry" not in app.extensions
    app.config["MODEL_REGISTRY_MODELS"] = {"good": str(tmp_path)}
    FlaskModelRegistry(app)  # fixed, it initialises
    assert list(app.registries) == ["good"]


# from the environment -----------------------------------------------------------------------------


def test_from_flask_prefixed_env_it_is_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    models = {"fraud": str(tmp_path / "fraud"), "churn": {"root": str(tmp_path / "churn"), "watch": False}}
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_MODELS", json.dumps(models))
    app = Flask(__name__)
    app.config.from_prefixed_env()
    FlaskModelRegistry(app)
    assert sorted(app.registries) == ["churn", "fraud"]
    assert not app.registries["churn"].storage.watching


def test_from_the_registrys_own_variable_it_is_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MODEL_REGISTRY_MODELS", json.dumps({"fraud": str(tmp_path / "fraud")}))
    app = Flask(__name__)
    FlaskModelRegistry(app)
    assert Path(app.registries["fraud"].root) == tmp_path / "fraud"


@pytest.mark.parametrize("variable", ["FLASK_MODEL_REGISTRY_MODELS", "MODEL_REGISTRY_MODELS"])
def test_bad_json_in_the_environment_is_a_value_error(monkeypatch: pytest.MonkeyPatch, variable: str):
    monkeypatch.setenv(variable, "{fraud: s3://b/fraud}")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    with pytest.raises(ValueError, match="MODEL_REGISTRY_MODELS is not valid JSON"):
        FlaskModelRegistry(app)


# the README's two-model service -------------------------------------------------------------------


class Scorer:
    """A stand-in model that says which model and version it is."""

    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, rows: list[list[float]]) -> list[str]:
        return [self.name for _ in rows]


def test_the_readme_two_model_service(s3_server, registry_root: Path, tmp_path: Path):
    fraud_root = s3_server.url(f"fraud-{tmp_path.name}")
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    app.config["MODEL_REGISTRY_MODELS"] = {
        "fraud": {"root": fraud_root, "storage_options": s3_server.storage_options, "refresh_interval": 0},
        "churn": {"root": str(tmp_path / "churn"), "stages": ["staging", "prod"], "refresh_interval": 5},
    }
    FlaskModelRegistry(app)

    @app.post("/fraud/predict")
    def predict_fraud():
        served = get_registry("fraud").get_latest("prod")
        return {"version": served.version, "score": served.model.predict([[1.0]])}

    trainer = ModelRegistry(fraud_root, storage_options=s3_server.storage_options)
    trainer.save_model("1.0.0", Scorer("fraud v1"), {"stage": "prod"})
    app.registry.save_model("1.0.0", Scorer("default"), {"stage": "prod"})
    client = app.test_client()
    assert client.post("/fraud/predict").get_json() == {"version": "1.0.0", "score": ["fraud v1"]}
    trainer.save_model("1.1.0", Scorer("fraud v2"), {"stage": "prod"})  # picked up, no restart
    assert client.post("/fraud/predict").get_json() == {"version": "1.1.0", "score": ["fraud v2"]}
    assert app.registry.get_latest_model("prod").name == "default"
    with app.app_context():
        assert current_app.registries["churn"].allowed_stages == {"staging", "prod"}
