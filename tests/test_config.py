"""Typed config: ``from_prefixed_env()`` and ``MODEL_REGISTRY_*`` variables parsed by type at init_app."""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from flask import Flask

from flask_model_registry import ConfigError, FlaskModelRegistry, ModelRegistry, extension
from flask_model_registry.config import KEYS, MODEL_SETTINGS, PREFIX
from flask_model_registry.webhooks import cli as webhooks_cli

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
    monkeypatch.setenv("MODEL_REGISTRY_PICKLE_ALLOW", "example_app.model, sklearn")
    config = create_app().config
    assert config["MODEL_REGISTRY_PICKLE_ALLOW"] == ["example_app.model", "sklearn"]
    assert config["MODEL_REGISTRY_REFRESH_INTERVAL"] == 2.5
    assert config["MODEL_REGISTRY_MODEL_CACHE_SIZE"] == 7
    assert config["MODEL_REGISTRY_STAGES"] == ["staging", "prod"]
    assert config["MODEL_REGISTRY_STORAGE_OPTIONS"] == {"anon": True}
    monkeypatch.setenv("FLASK_MODEL_REGISTRY_STAGES", '["staging", "prod", "archived"]')
    app = create_app()
    assert app.registry.allowed_stages == {"staging", "prod", "archived"}


@pytest.mark.parametrize("prefix", ["FLASK_", ""])
def test_retired_stages_from_the_environment_and_per_model(monkeypatch, prefix, tmp_path: Path):
    assert create_app().registry.retired_stages == {"archived"}, "the default"
    monkeypatch.setenv(f"{prefix}MODEL_REGISTRY_RETIRED_STAGES", "archived, attic")
    (tmp_path / "fraud").mkdir()
    models = {"fraud": str(tmp_path / "fraud"), "churn": {"root": str(tmp_path), "retired_stages": []}}
    app = create_app(MODEL_REGISTRY_MODELS=models)
    assert app.config["MODEL_REGISTRY_RETIRED_STAGES"] == ["archived", "attic"]
    assert app.registry.retired_stages == {"archived", "attic"}
    assert app.registries["fraud"].retired_stages == {"archived", "attic"}, "the app-wide value"
    assert app.registries["churn"].retired_stages == frozenset(), "its own"
    app = create_app(MODEL_REGISTRY_RETIRED_STAGES=["old"])
    assert app.registry.retired_stages == {"old"}, "app.config wins"


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
        ("FLASK_MODEL_REGISTRY_RETIRED_STAGES", "archived,no way", "stage names"),
        ("FLASK_MODEL_REGISTRY_API_TOKEN", "12345", "string"),
        ("FLASK_MODEL_REGISTRY_URL_PREFIX", "", "non-empty"),
        ("MODEL_REGISTRY_STAGE_RULES", '{"prod": {"from": "staging"}}', "'from' must be a list"),
        ("FLASK_MODEL_REGISTRY_STAGE_RULES", '{"prod": {"aprovals": 1}}', "unknown key 'aprovals'"),
        ("MODEL_REGISTRY_PICKLE_ALLOW", "numpy, os system", "dotted module names"),
        ("MODEL_REGISTRY_TOKENS", '{"ana": {"sha256": "abc", "role": "reader"}}', "64 hex digits"),
        (
            "FLASK_MODEL_REGISTRY_TOKENS",
            json.dumps({"ana": {"sha256": "0" * 64, "role": "root"}}),
            "one of reader",
        ),
        ("FLASK_MODEL_REGISTRY_STAGES", "prod,Not A Stage!", "stage names"),
        ("MODEL_REGISTRY_STAGES", '["prod", "x/y"]', "stage names"),
        ("MODEL_REGISTRY_UI_SESSION_LIFETIME", "0", "60 .a minute. to 31622400"),
        ("FLASK_MODEL_REGISTRY_UI_SESSION_LIFETIME", "999999999999", "to 31622400 .366 days"),
        ("MODEL_REGISTRY_UI_SESSION_LIFETIME", "59", "whole number of seconds from 60"),
        ("MODEL_REGISTRY_UI_SESSION_LIFETIME", "1.5", "whole number of seconds"),
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


@pytest.mark.parametrize("stages", [["prod", "Not A Stage!"], ["prod", ""], "prod,a/b"])
def test_an_invalid_app_wide_stage_name_is_a_config_error_naming_the_key(stages):
    """As for a named model's ``stages``: a ``ConfigError`` naming the key, not an
    ``InvalidMetadataError`` from inside the registry."""
    with pytest.raises(ConfigError, match="stage names") as caught:
        create_app(MODEL_REGISTRY_STAGES=stages)
    assert caught.value.key == "MODEL_REGISTRY_STAGES"
    assert str(caught.value).startswith("MODEL_REGISTRY_STAGES: ")


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


def write_ec_public_key(path: Path) -> Path:
    """A fresh P-256 public key as PEM at ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.mark.parametrize("prefix", ["FLASK_", ""])
def test_trusted_keys_from_the_environment_turn_signatures_on(monkeypatch, tmp_path, prefix):
    first, second = write_ec_public_key(tmp_path / "a.pub"), write_ec_public_key(tmp_path / "b.pub")
    monkeypatch.setenv(f"{prefix}MODEL_REGISTRY_TRUSTED_KEYS", f"{first},{second}")
    app = create_app()
    assert app.config["MODEL_REGISTRY_TRUSTED_KEYS"] == [str(first), str(second)]
    assert app.registry.signatures.required and len(app.registry.signatures.trusted) == 2
    monkeypatch.setenv(f"{prefix}MODEL_REGISTRY_REQUIRE_SIGNATURE", "false")
    assert not create_app().registry.signatures.required


def test_trusted_keys_in_app_config_as_a_list_a_pem_text_and_a_folder(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    write_ec_public_key(folder / "ci.pub")
    pem = write_ec_public_key(tmp_path / "x.pub").read_text()
    app = create_app(MODEL_REGISTRY_TRUSTED_KEYS=[folder, pem])
    assert len(app.registry.signatures.trusted) == 2 and app.registry.signatures.required
    assert create_app().config["MODEL_REGISTRY_REQUIRE_SIGNATURE"] is None  # default: on with keys
    assert not create_app().registry.signatures.required


def test_bad_signature_settings_are_a_config_error_at_init_app(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_REGISTRY_REQUIRE_SIGNATURE", "true")
    with pytest.raises(ConfigError, match="names no key") as caught:
        create_app()
    assert caught.value.key == "MODEL_REGISTRY_REQUIRE_SIGNATURE"
    monkeypatch.delenv("MODEL_REGISTRY_REQUIRE_SIGNATURE")
    (tmp_path / "rsa.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    for value in [str(tmp_path / "missing.pub"), str(tmp_path / "rsa.pub"), "5"]:
        monkeypatch.setenv("FLASK_MODEL_REGISTRY_TRUSTED_KEYS", value)
        with pytest.raises(ConfigError, match="public key") as caught:
            create_app()
        assert caught.value.key == "MODEL_REGISTRY_TRUSTED_KEYS"
    monkeypatch.delenv("FLASK_MODEL_REGISTRY_TRUSTED_KEYS")
    with pytest.raises(ConfigError, match="no trusted keys") as caught:
        create_app(MODEL_REGISTRY_MODELS={"fraud": {"root": str(tmp_path), "require_signature": True}})
    assert caught.value.key == "MODEL_REGISTRY_MODELS"


def test_a_config_error_survives_pickling() -> None:
    error = ConfigError("MODEL_REGISTRY_TRUSTED_KEYS", "MODEL_REGISTRY_TRUSTED_KEYS: names no key")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ConfigError and (copy.key, str(copy)) == (error.key, str(error))


def test_trusted_keys_holding_no_key_are_a_config_error_unless_signatures_are_off(monkeypatch, tmp_path):
    empty = tmp_path / "keys"
    empty.mkdir()
    with pytest.raises(ConfigError, match="names no key") as caught:
        create_app(MODEL_REGISTRY_TRUSTED_KEYS=[str(empty)])
    assert caught.value.key == "MODEL_REGISTRY_TRUSTED_KEYS"
    monkeypatch.setenv("MODEL_REGISTRY_TRUSTED_KEYS", str(empty))
    with pytest.raises(ConfigError, match="names no key"):
        create_app()
    monkeypatch.setenv("MODEL_REGISTRY_REQUIRE_SIGNATURE", "false")
    assert not create_app().registry.signatures.required
    monkeypatch.delenv("MODEL_REGISTRY_REQUIRE_SIGNATURE")
    monkeypatch.delenv("MODEL_REGISTRY_TRUSTED_KEYS")
    with pytest.raises(ConfigError, match="no trusted keys") as caught:
        create_app(MODEL_REGISTRY_MODELS={"fraud": {"root": str(tmp_path), "trusted_keys": [str(empty)]}})
    assert caught.value.key == "MODEL_REGISTRY_MODELS"


def test_a_named_model_has_its_own_trusted_keys(tmp_path):
    key = write_ec_public_key(tmp_path / "fraud.pub")
    app = create_app(MODEL_REGISTRY_MODELS={"fraud": {"root": str(tmp_path), "trusted_keys": [str(key)]}})
    assert app.registries["fraud"].signatures.required
    assert not app.registry.signatures.required


# every key, through Flask ------------------------------------------------------------------------

#: The sample registry's DEMO keys (a key pair whose private half is public: for tests and demos only).
DEMO_KEYS = Path(__file__).resolve().parent.parent / "example_app" / "keys"
#: A webhook secret of the form the config asks for.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True)
class Case:
    """A value of one key, as an environment variable holds it ("{tmp}": the test's folder), and
    what the app must then do; ``extra`` is more app config the check needs."""

    text: str
    check: Callable[[Flask, Path, dict[str, Any]], None]
    extra: dict[str, Any] = field(default_factory=dict)


def _argument(expected: Any) -> Callable[[Flask, Path, dict[str, Any]], None]:
    """The check of a key that sets a ``ModelRegistry`` argument: the app's registry got it."""

    def check(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
        del app
        name = next(n for n, row in MODEL_SETTINGS.items() if PREFIX + row.key == built["key"])
        value = expected(tmp) if callable(expected) else expected
        assert built["arguments"][MODEL_SETTINGS[name].argument] == value

    return check


def _answers(path: str, status: int, **headers: str) -> Callable[[Flask, Path, dict[str, Any]], None]:
    def check(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
        assert app.test_client().get(path, headers=headers).status_code == status

    return check


def _webhook_setting(name: str, value: float) -> Callable[[Flask, Path, dict[str, Any]], None]:
    def check(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
        with app.app_context():
            assert getattr(webhooks_cli.settings(), name) == value

    return check


def _prefix_moved(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    client = app.test_client()
    assert client.get("/registry/latest").status_code == 200
    assert client.get("/models/latest").status_code == 404


def _token_guards(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    client = app.test_client()
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


#: A named token's secret and the config entry of its sha256.
NAMED_SECRET = "ana-s3cret"
NAMED_TOKENS = json.dumps(
    {"ana": {"sha256": hashlib.sha256(NAMED_SECRET.encode()).hexdigest(), "role": "promoter"}}
)


def _named_token_guards(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    client = app.test_client()
    assert client.get("/models").status_code == 401
    headers = {"Authorization": f"Bearer {NAMED_SECRET}"}
    assert client.patch("/models/1.0.0", json={"stage": "staging"}, headers=headers).status_code == 200
    assert app.registry.history("1.0.0")[-1]["actor"] == "ana"


def _if_match_required(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    headers = {"Authorization": "Bearer t"}
    answer = app.test_client().patch("/models/1.0.0", json={"stage": "staging"}, headers=headers)
    assert answer.status_code == 428


def _named_model(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    assert list(app.registries) == ["fraud"]
    assert Path(app.registries["fraud"].root) == tmp / "fraud"


def _cookie_lifetime(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    answer = app.test_client().get("/models/ui/sign-in")
    assert answer.status_code == 200
    assert "Max-Age=3600" in answer.headers["Set-Cookie"]


def _webhooks(app: Flask, tmp: Path, built: dict[str, Any]) -> None:
    with app.app_context():
        assert [(hook.url, hook.events) for hook in webhooks_cli.configured()] == [
            ("http://127.0.0.1:9/hook", ("publish",))
        ]


#: One case per key; ``test_every_key_reaches_the_app`` walks ``KEYS``, so a new key without a
#: case here fails.
CASES: dict[str, Case] = {
    "ROOT": Case("{tmp}/other", _argument(lambda tmp: str(tmp / "other"))),
    "URL_PREFIX": Case("/registry", _prefix_moved),
    "API_ENABLED": Case("false", _answers("/models/latest", 404)),
    "API_TOKEN": Case("s3cret", _token_guards),
    "TOKENS": Case(NAMED_TOKENS, _named_token_guards),
    "STORAGE_OPTIONS": Case('{"anon": true}', _argument({"anon": True})),
    "REFRESH_INTERVAL": Case("2.5", _argument(2.5)),
    "FULL_REFRESH": Case("2", _argument(2.0)),
    "STAGES": Case("staging,prod", _argument(["staging", "prod"])),
    "MODEL_CACHE_SIZE": Case("7", _argument(7)),
    "WATCH": Case("false", _argument(False)),
    "CANARY_WEIGHT": Case("0.3", _argument(0.3)),
    "STAGE_RULES": Case('{"prod": {"approvals": 1}}', _argument({"prod": {"approvals": 1}})),
    "RETIRED_STAGES": Case("archived,attic", _argument(["archived", "attic"])),
    "PICKLE_ALLOW": Case("example_app.model, numpy", _argument(["example_app.model", "numpy"])),
    "REQUIRE_IF_MATCH": Case("true", _if_match_required, {PREFIX + "API_TOKEN": "t"}),
    "MODELS": Case('{"fraud": "{tmp}/fraud"}', _named_model),
    "UI_ENABLED": Case("false", _answers("/models/ui/", 404)),
    "UI_SESSION_LIFETIME": Case("3600", _cookie_lifetime, {PREFIX + "API_TOKEN": "t", "SECRET_KEY": "k"}),
    "WEBHOOKS": Case(
        f'[{{"url": "http://127.0.0.1:9/hook", "secret": "{SECRET}", "events": ["publish"]}}]', _webhooks
    ),
    "WEBHOOK_RETRY_BASE": Case("3", _webhook_setting("retry_base", 3.0)),
    "WEBHOOK_RETRY_HOURS": Case("0.5", _webhook_setting("retry_hours", 0.5)),
    "WEBHOOK_TIMEOUT": Case("4", _webhook_setting("timeout", 4.0)),
    "WEBHOOK_POLL_INTERVAL": Case("0.25", _webhook_setting("poll_interval", 0.25)),
    "TRUSTED_KEYS": Case(str(DEMO_KEYS / "demo-only.pub"), _argument([str(DEMO_KEYS / "demo-only.pub")])),
    "REQUIRE_SIGNATURE": Case(
        "false", _argument(False), {PREFIX + "TRUSTED_KEYS": str(DEMO_KEYS / "demo-only.pub")}
    ),
    "SIGNING_KEY": Case(str(DEMO_KEYS / "demo-only.priv"), _argument(str(DEMO_KEYS / "demo-only.priv"))),
}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The arguments ``init_app`` builds the app's default registry with (the first registry built)."""
    seen: dict[str, Any] = {}

    class Recording(ModelRegistry):
        def __init__(self, root: Any = None, **kwargs: Any) -> None:
            seen.setdefault("arguments", {"root": root, **kwargs})
            super().__init__(root, **kwargs)

    monkeypatch.setattr(extension, "ModelRegistry", Recording)
    return seen


@pytest.mark.parametrize("source", ["app.config", "FLASK_", ""])
@pytest.mark.parametrize("name", sorted(KEYS))
def test_every_key_reaches_the_app(monkeypatch, tmp_path, built, name, source):
    """Each ``MODEL_REGISTRY_*`` key, from app.config, ``from_prefixed_env()`` or the registry's own
    environment variable, does what it says (a key without a case in ``CASES`` fails)."""
    assert name in CASES, f"{PREFIX}{name} has no case in CASES: say what the app does with it"
    case, key = CASES[name], PREFIX + name
    text = case.text.replace("{tmp}", str(tmp_path))
    monkeypatch.delenv("FLASK_" + key, raising=False)
    config = dict(case.extra)
    if source == "app.config":
        config[key] = text
    else:
        monkeypatch.setenv(source + key, text)
    app = create_app(**config)
    assert app.config[key] != KEYS[name].default, "the case must set a value other than the default"
    built["key"] = key
    case.check(app, tmp_path, built)


def test_the_default_registry_and_named_models_share_one_settings_table():
    """Every keyword argument of ``ModelRegistry`` (but an already open storage) is a row of
    ``MODEL_SETTINGS``, whose app-wide key is a config key: no setting can reach one and not the other."""
    parameters = inspect.signature(ModelRegistry.__init__).parameters
    arguments = {name for name in parameters if name not in ("self", "storage")}
    assert {row.argument for row in MODEL_SETTINGS.values()} == arguments
    assert {row.key for row in MODEL_SETTINGS.values()} <= set(KEYS)


def test_full_refresh_reaches_the_default_registry_and_named_models(model_roots):
    app = create_app(
        MODEL_REGISTRY_ROOT="memory://config-full-refresh",
        MODEL_REGISTRY_FULL_REFRESH="2",
        MODEL_REGISTRY_MODELS={"fraud": {"root": "memory://config-fraud"}},
    )
    assert app.registry.storage.discovery.full_refresh == 2.0
    assert app.registries["fraud"].storage.discovery.full_refresh == 2.0


def test_full_refresh_through_flask_finds_a_copy_made_by_hand(monkeypatch, s3_server):
    """A version copied by hand into the bucket is served within about ``FULL_REFRESH`` seconds,
    far below the 60 s default full listing (the deadline is generous for a loaded machine)."""
    root = s3_server.url(f"full-refresh-{uuid.uuid4().hex}")
    ModelRegistry(root, storage_options=s3_server.storage_options).save_model("1.0.0", "model")
    monkeypatch.setenv("MODEL_REGISTRY_FULL_REFRESH", "1")
    app = create_app(MODEL_REGISTRY_ROOT=root, MODEL_REGISTRY_STORAGE_OPTIONS=s3_server.storage_options)
    client = app.test_client()
    assert client.get("/models/latest").get_json()["version"] == "1.0.0"
    fs = s3_server.filesystem()
    path = fs._strip_protocol(root)
    fs.pipe_file(f"{path}/versions/1.1.0/model.pkl", cloudpickle.dumps("by hand"))
    fs.pipe_file(f"{path}/versions/1.1.0/metadata.json", b'{"owner": "a person"}')
    deadline = time.monotonic() + 1 + 25
    while client.get("/models/latest").get_json()["version"] != "1.1.0":
        assert time.monotonic() < deadline, "a copy made by hand is not found by the full listing"
        time.sleep(0.1)
