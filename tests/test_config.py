"""Typed config: ``from_prefixed_env()`` and ``MODEL_REGISTRY_*`` variables parsed by type at init_app."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from flask_model_registry import ConfigError, FlaskModelRegistry, ModelRegistry
from flask_model_registry.config import KEYS, PREFIX

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
    for prefix in ("FLASK_" + PREFIX, PREFIX):
        for name in KEYS:
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


@pytest.mark.parametrize("prefix", ["FLASK_", ""])
def test_stage_rules_from_the_environment(monkeypatch, prefix):
    monkeypatch.setenv(f"{prefix}MODEL_REGISTRY_STAGE_RULES", '{"prod": {"approvals": 1}}')
    app = create_app()
    assert app.config["MODEL_REGISTRY_STAGE_RULES"] == {"prod": {"approvals": 1}}
    assert app.registry.stage_rules.rules["prod"].approvals == 1


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
        ("MODEL_REGISTRY_STAGE_RULES", '{"prod": {"from": "staging"}}', "'from' must be a list"),
        ("FLASK_MODEL_REGISTRY_STAGE_RULES", '{"prod": {"aprovals": 1}}', "unknown key 'aprovals'"),
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


#: Each way a token reaches the app factory: app config set in code, ``from_prefixed_env()``, or
#: the registry's own environment variable.
TOKEN_SOURCES = ["app.config", "FLASK_MODEL_REGISTRY_API_TOKEN", "MODEL_REGISTRY_API_TOKEN"]


def _token_from(source: str, monkeypatch: pytest.MonkeyPatch, value: str) -> dict[str, str]:
    """Put ``value`` where ``source`` says; the config overrides to pass to ``create_app``."""
    if source == "app.config":
        return {"MODEL_REGISTRY_API_TOKEN": value}
    monkeypatch.setenv(source, value)
    return {}


NO_TOKEN_SPELLINGS = ["false", "False", "FALSE", "0", "no", "No", "off", "", "  ", " false ", "null", "None"]


def _promotes(client, path: str, token: str) -> int:
    """The status of a promotion sent with ``token`` as the bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    return client.patch(path, json={"stage": "staging"}, headers=headers).status_code


@pytest.mark.parametrize("spelling", NO_TOKEN_SPELLINGS)
@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_a_no_token_spelling_means_no_token_wherever_it_comes_from(
    monkeypatch, source, spelling, model_roots, named_models
):
    ModelRegistry(model_roots["fraud"]).save_model("1.0.0", "model", {"stage": "prod"})
    app = create_app(**_token_from(source, monkeypatch, spelling), **named_models)
    assert app.config["MODEL_REGISTRY_API_TOKEN"] is None
    client = app.test_client()
    assert client.get("/models/latest").status_code == 200, "reads are open"
    for path in ("/models/1.0.0", "/models/fraud/1.0.0"):  # the default registry and a named model
        assert _promotes(client, path, spelling.strip() or "x") == 403, f"{path}: writes stay off"
    assert app.registry.get_metadata("1.0.0")["stage"] == "prod"
    assert app.registries["fraud"].get_metadata("1.0.0")["stage"] == "prod"
    assert client.get("/models/ui/sign-in").status_code == 404, "the console is read-only, no sign-in"


@pytest.mark.parametrize(("text", "parsed"), [("false", False), ("0", 0), ("null", None)])
def test_from_prefixed_env_json_false_zero_and_null_mean_no_token(monkeypatch, text, parsed):
    """``from_prefixed_env()`` parses ``FLASK_MODEL_REGISTRY_API_TOKEN=false`` as the JSON value False."""
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_API_TOKEN", text)
    config = Flask("env_app").config
    config.from_prefixed_env()
    arrived = config["MODEL_REGISTRY_API_TOKEN"]
    assert (type(arrived), arrived) == (type(parsed), parsed)
    app = create_app()
    assert app.config["MODEL_REGISTRY_API_TOKEN"] is None
    assert _promotes(app.test_client(), "/models/1.0.0", text) == 403


@pytest.mark.parametrize("spelling", ["false", "0", "no", ""])
def test_a_no_token_spelling_set_after_init_app_means_no_token(spelling):
    """A token set on ``app.config`` after ``init_app`` (a rotation) is read the same way."""
    app = create_app(MODEL_REGISTRY_API_TOKEN="s3cret")
    client = app.test_client()
    assert client.get("/models").status_code == 401
    app.config["MODEL_REGISTRY_API_TOKEN"] = spelling
    assert client.get("/models").status_code == 200
    assert _promotes(client, "/models/1.0.0", spelling or "x") == 403
    assert client.get("/models/ui/sign-in").status_code == 404


@pytest.mark.parametrize(
    "token",
    ["sécret", "s3cret\N{EM DASH}x", "tab\there", "new\nline", " leading", "trailing "],
    ids=["latin-1", "beyond latin-1", "tab", "newline", "leading space", "trailing space"],
)
@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_a_token_no_http_header_can_carry_is_refused_at_init_app(monkeypatch, source, token):
    """Non-ASCII, control characters, spaces around: refused, never echoed (the API could never
    compare it as sent, since headers are octets that Werkzeug decodes as latin-1)."""
    with pytest.raises(ConfigError, match="printable ASCII") as caught:
        create_app(**_token_from(source, monkeypatch, token))
    assert caught.value.key == "MODEL_REGISTRY_API_TOKEN"
    assert token.strip() not in str(caught.value)


def test_a_non_ascii_token_set_after_init_app_fails_closed():
    app = create_app(MODEL_REGISTRY_API_TOKEN="s3cret")
    app.config["MODEL_REGISTRY_API_TOKEN"] = "sécret"
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer sécret".encode().decode("latin-1")}):
        answer = client.get("/models", headers=headers)
        assert answer.status_code == 500 and "sécret" not in answer.get_data(as_text=True)
