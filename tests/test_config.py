"""Typed config: ``from_prefixed_env()`` and ``MODEL_REGISTRY_*`` variables parsed by type at init_app."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from flask_model_registry import ConfigError, FlaskModelRegistry, ModelRegistry

models = FlaskModelRegistry()


def create_app(**config) -> Flask:
    """An app factory as the README writes one: config from ``FLASK_*`` variables, then overrides."""
    app = Flask("factory_app")
    app.config.from_prefixed_env()
    app.config.update(config)
    models.init_app(app)
    return app


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, registry_root: Path) -> None:
    for prefix in ("FLASK_MODEL_REGISTRY_", "MODEL_REGISTRY_"):
        for name in (
            "ROOT",
            "API_ENABLED",
            "API_TOKEN",
            "WATCH",
            "STAGES",
            "STORAGE_OPTIONS",
            "REFRESH_INTERVAL",
        ):
            monkeypatch.delenv(prefix + name, raising=False)
    ModelRegistry(registry_root).save_model("1.0.0", "model", {"stage": "prod"})
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_ROOT", str(registry_root))


@pytest.mark.parametrize("spelling", ["False", "false", "FALSE", "0", "no", "off", " Off "])
@pytest.mark.parametrize("prefix", ["FLASK_", ""])
def test_api_enabled_false_in_any_spelling_switches_the_api_off(monkeypatch, spelling, prefix):
    monkeypatch.setenv(f"{prefix}MODEL_REGISTRY_API_ENABLED", spelling)
    app = create_app()
    assert app.config["MODEL_REGISTRY_API_ENABLED"] is False
    assert app.test_client().get("/models").status_code == 404
    assert app.registry.list_versions() == ["1.0.0"]


@pytest.mark.parametrize("spelling", ["True", "true", "1", "yes", "on"])
def test_api_enabled_true_in_any_spelling(monkeypatch, spelling):
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_API_ENABLED", spelling)
    app = create_app()
    assert app.config["MODEL_REGISTRY_API_ENABLED"] is True
    assert app.test_client().get("/models/latest").get_json()["version"] == "1.0.0"


@pytest.mark.parametrize("prefix", ["FLASK_", ""])
def test_watch_false_from_the_environment(monkeypatch, prefix):
    monkeypatch.setenv(f"{prefix}MODEL_REGISTRY_WATCH", "False")
    assert create_app().registry.storage.watching is False


def test_app_config_wins_over_the_registry_environment(monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY_API_ENABLED", "false")
    app = create_app(MODEL_REGISTRY_API_ENABLED=True)
    assert app.test_client().get("/models").status_code == 200
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_API_ENABLED", "true")
    assert create_app().config["MODEL_REGISTRY_API_ENABLED"] is True


def test_numbers_lists_and_json(monkeypatch):
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_REFRESH_INTERVAL", "2.5")
    monkeypatch.setenv("MODEL_REGISTRY_MODEL_CACHE_SIZE", "7")
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_STAGES", "staging, prod")
    monkeypatch.setenv("MODEL_REGISTRY_STORAGE_OPTIONS", '{"anon": true}')
    config = create_app().config
    assert config["MODEL_REGISTRY_REFRESH_INTERVAL"] == 2.5
    assert config["MODEL_REGISTRY_MODEL_CACHE_SIZE"] == 7
    assert config["MODEL_REGISTRY_STAGES"] == ["staging", "prod"]
    assert config["MODEL_REGISTRY_STORAGE_OPTIONS"] == {"anon": True}
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_STAGES", '["staging", "prod", "archived"]')
    app = create_app()
    assert app.registry.allowed_stages == {"staging", "prod", "archived"}


def test_a_token_from_the_environment_guards_the_api(monkeypatch):
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_API_TOKEN", "s3cret-from-env")
    client = create_app().test_client()
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer s3cret-from-env"}).status_code == 200


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FLASK_MODEL_REGISTRY_API_ENABLED", "maybe", "boolean"),
        ("MODEL_REGISTRY_API_ENABLED", "2", "boolean"),
        ("FLASK_MODEL_REGISTRY_WATCH", "nope", "boolean"),
        ("FLASK_MODEL_REGISTRY_REFRESH_INTERVAL", "soon", "number"),
        ("MODEL_REGISTRY_REFRESH_INTERVAL", "-1", "number"),
        ("MODEL_REGISTRY_MODEL_CACHE_SIZE", "4.5", "whole number"),
        ("MODEL_REGISTRY_STORAGE_OPTIONS", "{not json", "JSON"),
        ("FLASK_MODEL_REGISTRY_STORAGE_OPTIONS", "[1, 2]", "JSON object"),
        ("MODEL_REGISTRY_STAGES", '["prod", 5]', "list of names"),
        ("FLASK_MODEL_REGISTRY_API_TOKEN", "12345", "string"),
        ("FLASK_MODEL_REGISTRY_URL_PREFIX", "", "non-empty"),
    ],
)
def test_an_invalid_value_is_a_clear_error_at_init_app(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected) as caught:
        create_app()
    key = variable.removeprefix("FLASK_")
    assert caught.value.key == key and str(caught.value).startswith(key)
    assert isinstance(caught.value, ValueError)


def test_a_bad_token_is_never_echoed(monkeypatch):
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_API_TOKEN", "[123456789]")
    with pytest.raises(ConfigError) as caught:
        create_app()
    assert "123456789" not in str(caught.value)


def test_values_set_in_code_are_parsed_too():
    with pytest.raises(ConfigError, match="MODEL_REGISTRY_WATCH"):
        create_app(MODEL_REGISTRY_WATCH="sometimes")
    assert create_app(MODEL_REGISTRY_REQUIRE_IF_MATCH="yes").config["MODEL_REGISTRY_REQUIRE_IF_MATCH"] is True
