"""``FlaskModelRegistry``: init_app, config defaults, factories and several apps."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask, current_app

from flask_model_registry import FlaskModelRegistry, ModelRegistry
from flask_model_registry.extension import CONFIG_DEFAULTS


def test_app_registry_is_the_extension_state(app: Flask, registry_root: Path):
    registry = app.extensions["model_registry"]
    assert isinstance(registry, ModelRegistry)
    assert app.registry is registry
    with app.app_context():
        assert current_app.registry is registry
    assert Path(registry.root) == registry_root


def test_config_defaults_are_set_but_never_override(registry_root: Path):
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_URL_PREFIX"] = "/registry"
    FlaskModelRegistry(app)
    for key, default in CONFIG_DEFAULTS.items():
        assert key in app.config
        if key != "MODEL_REGISTRY_URL_PREFIX":
            assert app.config[key] == default
    assert app.config["MODEL_REGISTRY_URL_PREFIX"] == "/registry"


def test_second_init_app_is_an_error(app: Flask):
    with pytest.raises(RuntimeError, match="already initialised"):
        FlaskModelRegistry().init_app(app)


def test_factory_pattern_with_several_apps(tmp_path: Path):
    ext = FlaskModelRegistry()
    apps = []
    for name in ("a", "b"):
        root = tmp_path / name
        ModelRegistry(root).save_model("1.0.0" if name == "a" else "2.0.0", name)
        app = Flask(name)
        app.config["MODEL_REGISTRY_ROOT"] = str(root)
        ext.init_app(app)
        apps.append(app)
    assert not any(isinstance(v, Flask) for v in vars(ext).values())  # no app kept on self
    assert [a.registry.get_latest_model() for a in apps] == ["a", "b"]
    with apps[1].app_context():
        assert ext.registry is apps[1].registry
    assert apps[0].test_client().get("/models/latest").get_json()["version"] == "1.0.0"
    assert apps[1].test_client().get("/models/latest").get_json()["version"] == "2.0.0"


def test_root_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch, registry_root: Path):
    ModelRegistry(registry_root).save_model("1.2.3", "env")
    monkeypatch.setenv("MODEL_REGISTRY_ROOT", str(registry_root))
    app = Flask(__name__)
    FlaskModelRegistry(app)
    assert app.registry.get_latest_version() == "1.2.3"


def test_registry_outside_an_app_context_is_a_clear_error():
    with pytest.raises(RuntimeError), Flask(__name__).app_context():
        FlaskModelRegistry().registry  # noqa: B018


def test_prediction_view_picks_up_new_versions(app: Flask, client, registry: ModelRegistry):
    @app.post("/predict")
    def predict():
        return {"model": current_app.registry.get_latest_model()}

    registry.save_model("1.0.0", "first")
    assert client.post("/predict").get_json() == {"model": "first"}
    registry.save_model("1.1.0", "second")
    assert client.post("/predict").get_json() == {"model": "second"}
