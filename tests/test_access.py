"""Named tokens and roles (SPEC "Who may change what"): every role against every write path of the
HTTP API and the console, 401 and 403 bodies, the token's name as the audit actor, tokens from the
environment, the stage limits of a promoter, and ``flask models token new``."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, live_server, tab
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import expect

from flask_model_registry import ConfigError, FlaskModelRegistry, ModelRegistry
from flask_model_registry.access import identify, require_role, set_caller
from flask_model_registry.config import KEYS, PREFIX
from flask_model_registry.errors import AccessDeniedError
from flask_model_registry.ui.present import metadata_etag

UI = "/models/ui"
#: name → (the secret the test sends, role, stages)
PEOPLE: dict[str, tuple[str, str, list[str] | None]] = {
    "dashboard": ("reader-secret", "reader", None),
    "train-job": ("editor-secret", "editor", None),
    "ana": ("promoter-secret", "promoter", ["staging", "prod"]),
    "release": ("release-secret", "promoter", None),
    "prod-gate": ("prod-gate-secret", "promoter", ["prod"]),
    "ops": ("admin-secret", "admin", None),
}
ROLE_OF = {"reader": "dashboard", "editor": "train-job", "promoter": "release", "admin": "ops"}


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def tokens_config(people: dict[str, tuple[str, str, list[str] | None]] = PEOPLE) -> dict[str, Any]:
    """``MODEL_REGISTRY_TOKENS`` of ``people``: hashes only."""
    config: dict[str, Any] = {}
    for name, (secret, role, stages) in people.items():
        config[name] = {"sha256": sha(secret), "role": role, **({"stages": stages} if stages else {})}
    return config


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {PEOPLE[name][0]}"}


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"MODEL_REGISTRY_TOKENS": tokens_config(), "SECRET_KEY": "access-test-secret"}


@pytest.fixture
def registry(app: Flask, published: ModelRegistry) -> ModelRegistry:
    """The app's registry with ``published``'s versions: 1.0.0 prod, 1.1.0 staging + canary,
    2.0.0-rc.1 in no stage; plus 0.9.0 archived with a boolean flag and 0.8.0, in no stage and in
    nobody's way (the one a delete may take)."""
    published.save_model("0.9.0", {"w": 0}, {"stage": "archived", "reviewed": True}, actor="trainer")
    published.save_model("0.8.0", {"w": 0}, {"notes": "superseded"}, actor="trainer")  # deletable
    return app.registry


def state(registry: ModelRegistry) -> tuple[list[dict[str, Any]], int]:
    """Every version's metadata and the number of audit events: what a refused change must not touch."""
    return [registry.get_metadata(v) for v in registry.list_versions()], len(registry.history())


#: Each write path of the HTTP API: (name, version, PATCH body or None for DELETE, role needed).
HTTP_WRITES = [
    ("stage", "2.0.0-rc.1", {"stage": "staging"}, "promoter"),
    ("flag", "1.0.0", {"reviewed": True}, "promoter"),
    ("canary", "1.1.0", {"canary": 0.25}, "promoter"),
    ("metadata", "1.0.0", {"notes": "retrained on November data"}, "editor"),
    ("delete", "0.8.0", None, "admin"),
]
ROLES = ["reader", "editor", "promoter", "admin"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("path", "version", "body", "needed"), HTTP_WRITES)
def test_every_role_against_every_http_write(
    client: FlaskClient, registry: ModelRegistry, json_error: Callable, role, path, version, body, needed
) -> None:
    name = ROLE_OF[role]
    before = state(registry)
    headers = {**bearer(name), "X-Model-Registry-Actor": "mallory"}
    if body is None:
        answer = client.delete(f"/models/{version}", headers=headers)
    else:
        answer = client.patch(f"/models/{version}", json=body, headers=headers)
    if ROLES.index(role) >= ROLES.index(needed):
        assert answer.status_code == (200 if body is not None else 204), answer.data
        event = registry.history(version)[-1]
        assert event["actor"] == name  # the token's name; the actor header is ignored
        assert event["action"] == ("update_metadata" if body is not None else "delete")
    else:
        error = json_error(answer)
        assert answer.status_code == 403
        assert f"needs role {needed}" in error["message"] and repr(name) in error["message"]
        assert state(registry) == before


def test_a_patch_needs_the_role_of_every_key_it_changes(
    client: FlaskClient, registry: ModelRegistry, json_error: Callable
) -> None:
    before = state(registry)
    answer = client.patch(
        "/models/1.0.0", json={"notes": "x", "stage": "archived"}, headers=bearer("train-job")
    )
    assert answer.status_code == 403 and "needs role promoter" in json_error(answer)["message"]
    assert state(registry) == before  # not even the editor's part of it


@pytest.mark.parametrize(
    ("version", "body", "flag"),
    [
        ("0.9.0", {"reviewed": "yes"}, "reviewed"),  # boolean before
        ("1.0.0", {"approved": False}, "approved"),  # boolean after
        ("0.9.0", {"reviewed": None}, "reviewed"),  # a flag removed
        ("1.1.0", {"canary": None}, "canary"),  # canary, whatever its value
        ("2.0.0-rc.1", {"canary": 0.5}, "canary"),
    ],
)
def test_what_counts_as_a_flag(
    client: FlaskClient, registry: ModelRegistry, json_error: Callable, version, body, flag
) -> None:
    answer = client.patch(f"/models/{version}", json=body, headers=bearer("train-job"))
    message = json_error(answer)["message"]
    assert (
        answer.status_code == 403 and f"changing flag {flag}" in message and "needs role promoter" in message
    )
    assert client.patch(f"/models/{version}", json=body, headers=bearer("release")).status_code == 200


def test_a_key_left_as_it_is_needs_no_role(client: FlaskClient, registry: ModelRegistry) -> None:
    events = len(registry.history())
    answer = client.patch("/models/1.0.0", json={"stage": "prod", "notes": "x"}, headers=bearer("train-job"))
    assert answer.status_code == 200 and answer.get_json()["metadata"]["stage"] == "prod"
    assert [e["after"] for e in registry.history()[events:]] == [{"notes": "x"}]


@pytest.mark.parametrize(
    ("version", "body", "allowed", "named"),
    [
        ("2.0.0-rc.1", {"stage": "staging"}, True, None),  # from no stage: no stage counts as listed
        ("1.1.0", {"stage": "prod"}, True, None),  # staging → prod, both listed
        ("1.0.0", {"stage": None}, True, None),  # prod → no stage
        ("1.0.0", {"stage": "archived"}, False, "'archived'"),  # the stage entered is not listed
        ("0.9.0", {"stage": "staging"}, False, "'archived'"),  # nor the stage left
        ("2.0.0-rc.1", {"stage": "canary-pool"}, False, "'canary-pool'"),
        ("1.1.0", {"canary": 0.5}, True, None),  # a flag of a version in a listed stage
        ("2.0.0-rc.1", {"hotfix": True}, True, None),  # a flag of a version in no stage
        ("0.9.0", {"reviewed": False}, False, "'archived'"),  # a flag of a version in another stage
        ("0.9.0", {"notes": "old"}, True, None),  # metadata: the stage limit is only a promoter's
    ],
)
def test_a_promoter_limited_to_stages(
    client: FlaskClient, registry: ModelRegistry, json_error: Callable, version, body, allowed, named
) -> None:
    before = state(registry)
    answer = client.patch(f"/models/{version}", json=body, headers=bearer("ana"))
    if allowed:
        assert answer.status_code == 200, answer.data
        assert registry.history(version)[-1]["actor"] == "ana"
    else:
        message = json_error(answer)["message"]
        assert answer.status_code == 403 and f"for stage {named}" in message
        assert "needs role promoter" in message and "limited to stages: prod, staging" in message
        assert state(registry) == before


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("release", None),
        ("ops", None),
        ("ana", None),
        ("train-job", "needs role promoter (or above); token 'train-job' has role editor"),
        (None, "needs a token with role promoter: send one"),
    ],
)
def test_require_role_for_other_endpoints(app: Flask, name: str | None, refused: str | None) -> None:
    """The check approvals and DELETE use: the role, and a limited promoter's stage."""
    with app.test_request_context("/models/1.0.0/approvals", method="POST"):
        set_caller(identify(PEOPLE[name][0]) if name else None)
        if refused is None:
            assert require_role("promoter", "approving 1.0.0 for prod", "prod").name == name
        else:
            with pytest.raises(AccessDeniedError, match=re.escape(refused)) as caught:
                require_role("promoter", "approving 1.0.0 for prod", "prod")
            assert caught.value.role == "promoter" and caught.value.http_status == 403
            copy = pickle.loads(pickle.dumps(caught.value))  # a task queue passes it on whole
            assert (str(copy), copy.role) == (str(caught.value), "promoter")
        if name == "ana":
            with pytest.raises(AccessDeniedError, match="for stage 'archived'; token 'ana' is limited"):
                require_role("promoter", "approving 1.0.0 for archived", "archived")
        if name != "ops":
            with pytest.raises(AccessDeniedError, match=r"deleting 1\.0\.0 needs (a token with )?role admin"):
                require_role("admin", "deleting 1.0.0")


# who the request is ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {sha('ana-secret')}"},
        {"Authorization": f"Bearer {sha(PEOPLE['ops'][0])}"},  # the configured sha256 is not the token
        {"Authorization": PEOPLE["ops"][0]},  # no scheme
        {"Authorization": f"Basic {PEOPLE['ops'][0]}"},
        {"Authorization": "Bearer "},
    ],
)
def test_every_endpoint_needs_a_known_token(
    client: FlaskClient, registry: ModelRegistry, json_error: Callable, headers
) -> None:
    requests = [("get", "/models"), ("get", "/models/1.0.0/history"), ("get", "/models/metrics")]
    for method, path in [*requests, ("patch", "/models/1.0.0")]:
        answer = getattr(client, method)(
            path, headers=headers, json={"notes": "x"} if method == "patch" else None
        )
        assert answer.status_code == 401, (path, answer.data)
        assert "Authorization: Bearer" in json_error(answer)["message"]
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="models"'
    assert registry.get_metadata("1.0.0").get("notes") is None


def test_reads_need_only_a_reader_and_health_and_options_no_token(client: FlaskClient, registry) -> None:
    for path in (
        "/models",
        "/models/latest",
        "/models/1.0.0",
        "/models/1.0.0/history",
        "/models/openapi.json",
        "/models/metrics",
    ):
        assert client.get(path, headers=bearer("dashboard")).status_code == 200, path
    assert client.get("/models/health").status_code == 200
    assert client.options("/models/1.0.0").status_code == 200


@pytest.mark.parametrize("app_config", [{"MODEL_REGISTRY_API_TOKEN": "shared-secret"}])
def test_the_api_token_alone_keeps_the_actor_header(client: FlaskClient, registry: ModelRegistry) -> None:
    headers = {"Authorization": "Bearer shared-secret", "X-Model-Registry-Actor": "carol"}
    assert client.patch("/models/1.0.0", json={"stage": "archived"}, headers=headers).status_code == 200
    assert registry.history("1.0.0")[-1]["actor"].startswith("carol (api:")


@pytest.mark.parametrize(
    "app_config", [{"MODEL_REGISTRY_API_TOKEN": "shared-secret", "MODEL_REGISTRY_TOKENS": tokens_config()}]
)
def test_the_api_token_beside_named_tokens_is_the_admin_named_api(
    client: FlaskClient, registry: ModelRegistry
) -> None:
    headers = {"Authorization": "Bearer shared-secret", "X-Model-Registry-Actor": "carol"}
    assert client.patch("/models/1.0.0", json={"stage": "archived"}, headers=headers).status_code == 200
    assert registry.history("1.0.0")[-1]["actor"] == "api"
    assert client.get("/models", headers=bearer("dashboard")).status_code == 200


def test_tokens_set_after_init_app_apply_at_once(app: Flask, client: FlaskClient, registry) -> None:
    people = {**PEOPLE, "ana": ("rotated-secret", "promoter", ["staging", "prod"])}
    app.config["MODEL_REGISTRY_TOKENS"] = tokens_config(people)
    assert client.get("/models", headers=bearer("ana")).status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer rotated-secret"}).status_code == 200


def test_malformed_tokens_set_after_init_app_fail_closed(app: Flask, client: FlaskClient, registry) -> None:
    app.config["MODEL_REGISTRY_TOKENS"] = {"ana": {"sha256": "not-a-hash", "role": "admin"}}
    assert client.patch("/models/1.0.0", json={"notes": "x"}).status_code == 401
    for headers in (bearer("ops"), {"Authorization": "Bearer not-a-hash"}):
        answer = client.patch("/models/1.0.0", json={"notes": "x"}, headers=headers)
        assert answer.status_code == 500 and "MODEL_REGISTRY_TOKENS" in answer.get_json()["error"]["message"]
    assert "notes" not in registry.get_metadata("1.0.0")


def test_named_models_obey_the_same_roles(
    registry_root: Path, named_models: dict[str, Any], model_roots: dict[str, Path], json_error: Callable
) -> None:
    app = Flask("named_access")
    app.config.update(
        MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_TOKENS=tokens_config(), **named_models
    )
    FlaskModelRegistry(app)
    app.registries["churn"].save_model("1.0.0", {"w": 1}, {"stage": "staging"})
    client = app.test_client()
    refused = client.patch("/models/churn/1.0.0", json={"stage": "prod"}, headers=bearer("train-job"))
    assert refused.status_code == 403 and "needs role promoter" in json_error(refused)["message"]
    assert (
        client.patch("/models/churn/1.0.0", json={"stage": "prod"}, headers=bearer("ana")).status_code == 200
    )
    assert app.registries["churn"].history("1.0.0")[-1]["actor"] == "ana"


# tokens from the environment and malformed config ---------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for prefix in ("FLASK_" + PREFIX, PREFIX):
        for key in KEYS:
            monkeypatch.delenv(prefix + key, raising=False)
    return monkeypatch


def _factory_app(registry_root: Path) -> Flask:
    app = Flask("factory")
    app.config.from_prefixed_env()
    app.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    FlaskModelRegistry(app)
    return app


@pytest.mark.parametrize("variable", ["FLASK_MODEL_REGISTRY_TOKENS", "MODEL_REGISTRY_TOKENS"])
def test_tokens_from_the_environment(clean_env, registry_root: Path, variable: str) -> None:
    clean_env.setenv(variable, json.dumps(tokens_config()))
    app = _factory_app(registry_root)
    app.registry.save_model("1.0.0", {"w": 1})
    client = app.test_client()
    assert client.get("/models").status_code == 401
    assert client.patch("/models/1.0.0", json={"stage": "staging"}, headers=bearer("ana")).status_code == 200
    assert app.registry.history("1.0.0")[-1]["actor"] == "ana"
    assert app.config["MODEL_REGISTRY_TOKENS"]["ana"]["role"] == "promoter"


GOOD = sha("x")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "must map token names"),
        (json.dumps({"ana": "promoter"}), "['ana'] must be an object"),
        (json.dumps({"ana": {"sha256": GOOD, "role": "owner"}}), "['ana']['role'] must be one of reader"),
        (json.dumps({"ana": {"sha256": GOOD}}), "['ana']['role']"),
        (
            json.dumps({"ana": {"sha256": GOOD[:63], "role": "reader"}}),
            "['ana']['sha256'] must be the 64 hex",
        ),
        (json.dumps({"ana": {"sha256": "g" * 64, "role": "reader"}}), "['ana']['sha256']"),
        (json.dumps({"ana": {"token": "plain", "role": "reader"}}), "unknown key 'token'"),
        (json.dumps({"ana": {"sha256": GOOD, "role": "editor", "stages": ["prod"]}}), "limits a promoter"),
        (json.dumps({"ana": {"sha256": GOOD, "role": "promoter", "stages": "prod"}}), "list of stage names"),
        (json.dumps({"ana": {"sha256": GOOD, "role": "promoter", "stages": ["pr od"]}}), "['ana']['stages']"),
        (json.dumps({"": {"sha256": GOOD, "role": "reader"}}), "token name"),
        (
            json.dumps(
                {"a": {"sha256": GOOD, "role": "reader"}, "b": {"sha256": GOOD.upper(), "role": "admin"}}
            ),
            "'a' and 'b' have the same sha256",
        ),
    ],
)
@pytest.mark.parametrize("variable", ["FLASK_MODEL_REGISTRY_TOKENS", "MODEL_REGISTRY_TOKENS"])
def test_a_malformed_token_entry_is_a_config_error_naming_it(
    clean_env, registry_root: Path, variable: str, value: str, says: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        _factory_app(registry_root)
    assert caught.value.key == "MODEL_REGISTRY_TOKENS" and says in str(caught.value), str(caught.value)


def test_a_named_token_may_not_take_the_api_tokens_name(clean_env, registry_root: Path) -> None:
    clean_env.setenv("MODEL_REGISTRY_API_TOKEN", "shared-secret")
    clean_env.setenv("MODEL_REGISTRY_TOKENS", json.dumps({"api": {"sha256": GOOD, "role": "reader"}}))
    with pytest.raises(ConfigError, match="'api' is MODEL_REGISTRY_API_TOKEN's"):
        _factory_app(registry_root)


# the console --------------------------------------------------------------------------------------


def hidden(html: bytes, name: str) -> str | None:
    match = re.search(rb'name="%s" value="([^"]*)"' % name.encode(), html)
    return match.group(1).decode() if match else None


def console_sign_in(client: FlaskClient, name: str) -> bytes:
    """Sign in with ``name``'s token alone; the front page it lands on."""
    page = client.get(f"{UI}/sign-in").data
    assert b'name="name"' not in page  # the token alone: its name is the actor
    answer = client.post(
        f"{UI}/sign-in", data={"csrf_token": hidden(page, "csrf_token"), "token": PEOPLE[name][0]}
    )
    assert answer.status_code == 303, answer.data
    return client.get(f"{UI}/").data


def promote_form(client: FlaskClient, registry: ModelRegistry, version: str, stage: str) -> Any:
    page = client.get(f"{UI}/v/{version}").data
    data = {
        "csrf_token": hidden(page, "csrf_token"),
        "etag": metadata_etag(registry.get_metadata(version)),
        "stage": stage,
    }
    return client.post(f"{UI}/v/{version}/promote", data=data)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_against_a_console_promotion(
    client: FlaskClient, registry: ModelRegistry, role: str
) -> None:
    name = ROLE_OF[role]
    front = console_sign_in(client, name)
    assert f"Signed in as <strong>{name}</strong>".encode() in front
    page = client.get(f"{UI}/v/1.1.0").data
    before = state(registry)
    answer = promote_form(client, registry, "1.1.0", "prod")
    if role in ("promoter", "admin"):
        assert b"/v/1.1.0/promote" in page
        assert answer.status_code == 303, answer.data
        assert registry.get_metadata("1.1.0")["stage"] == "prod"
        assert registry.history("1.1.0")[-1]["actor"] == name
    else:
        assert b"/v/1.1.0/promote" not in page and b"Set flag" not in page  # no forms it may not use
        assert answer.status_code == 403 and b"needs role promoter" in answer.data
        assert state(registry) == before


@pytest.mark.parametrize(
    ("name", "allowed"), [("train-job", False), ("prod-gate", False), ("ana", True), ("ops", True)]
)
def test_a_console_rollback_needs_a_promoter_of_every_stage_it_moves(
    app: Flask, registry: ModelRegistry, name: str, allowed: bool
) -> None:
    """Rolling prod back gives it to 1.0.0 and sends 1.1.0 back to staging: both moves are checked
    before the first is made, so a refused rollback changes nothing."""
    registry.set_stage("1.1.0", "prod", actor="trainer")
    planner = app.test_client()
    console_sign_in(planner, "release")
    page = planner.get(f"{UI}/rollback?stage=prod").data
    client = app.test_client()
    shown = console_sign_in(client, name)
    assert (b"Roll back" in shown) is (name != "train-job")  # offered on the stages it may change
    data = {"csrf_token": hidden(client.get(f"{UI}/").data, "csrf_token"), "stage": "prod"}
    before = state(registry)
    answer = client.post(f"{UI}/rollback", data={**data, "plan": hidden(page, "plan")})
    if allowed:
        assert answer.status_code == 303, answer.data
        assert registry.get_latest_version("prod") == "1.0.0"
        assert registry.get_metadata("1.1.0")["stage"] == "staging"
        assert {e["actor"] for e in registry.history()[before[1] :]} == {name}
    else:
        assert answer.status_code == 403 and b"needs role promoter" in answer.data
        assert state(registry) == before


@pytest.mark.parametrize("role", ROLES)
def test_every_role_against_a_console_delete(client: FlaskClient, registry: ModelRegistry, role: str) -> None:
    name = ROLE_OF[role]
    console_sign_in(client, name)
    shown = client.get(f"{UI}/v/0.8.0").data + client.get(f"{UI}/v/0.8.0/delete").data
    data = {
        "csrf_token": hidden(shown, "csrf_token"),
        "etag": metadata_etag(registry.get_metadata("0.8.0")),
    }
    before = state(registry)
    answer = client.post(f"{UI}/v/0.8.0/delete", data=data)
    if role == "admin":
        assert b"Delete this version" in shown and b"/v/0.8.0/delete" in shown
        assert answer.status_code == 303, answer.data
        assert "0.8.0" not in registry.list_versions()
        assert registry.history("0.8.0")[-1]["actor"] == name
    else:
        assert b"Delete this version" not in shown and b'class="danger"' not in shown
        assert answer.status_code == 403 and b"deleting 0.8.0 needs role admin" in answer.data
        assert state(registry) == before


def test_a_limited_promoter_sees_forms_only_for_its_stages(
    client: FlaskClient, registry: ModelRegistry
) -> None:
    console_sign_in(client, "ana")
    assert b"/v/1.1.0/promote" in client.get(f"{UI}/v/1.1.0").data
    assert b"/v/0.9.0/promote" not in client.get(f"{UI}/v/0.9.0").data
    before = state(registry)
    answer = promote_form(client, registry, "0.9.0", "staging")
    assert answer.status_code == 403 and b"for stage &#39;archived&#39;" in answer.data
    assert state(registry) == before


def test_a_console_sign_in_with_an_unknown_token_is_refused(client: FlaskClient, registry) -> None:
    page = client.get(f"{UI}/sign-in").data
    for token in ("nope", sha(PEOPLE["ops"][0])):
        answer = client.post(f"{UI}/sign-in", data={"csrf_token": hidden(page, "csrf_token"), "token": token})
        assert answer.status_code == 401 and b"not one of the registry" in answer.data
    assert client.get(f"{UI}/").status_code == 303


def test_a_changed_token_signs_its_console_session_out(app: Flask, client: FlaskClient, registry) -> None:
    console_sign_in(client, "release")
    assert client.get(f"{UI}/").status_code == 200
    app.config["MODEL_REGISTRY_TOKENS"] = tokens_config({**PEOPLE, "release": ("new", "promoter", None)})
    assert client.get(f"{UI}/").status_code == 303


def test_in_chromium_a_promoter_promotes_and_a_reader_sees_no_promote_form(
    app: Flask, registry: ModelRegistry
) -> None:
    """The console in a real browser: sign in with the token alone (no name field), the promoter's
    promotion recorded under the token's name; the reader's version page has no forms."""
    with chromium() as browser, live_server(app) as base:
        for name in ("release", "dashboard"):
            with tab(browser, base) as t:
                t.goto("/models/ui/v/1.1.0")
                expect(t.page.get_by_label("Your name")).to_have_count(0)
                t.page.get_by_label("Token").fill(PEOPLE[name][0])
                t.page.get_by_role("button", name="Sign in").click()
                expect(t.page.locator("h1")).to_contain_text("Version 1.1.0")
                expect(t.page.locator(".who")).to_contain_text(f"Signed in as {name} ({PEOPLE[name][1]})")
                if name == "dashboard":
                    expect(t.page.get_by_role("button", name="Promote")).to_have_count(0)
                    expect(t.page.locator("section.actions form")).to_have_count(0)
                else:
                    t.page.get_by_label("Stage", exact=True).fill("prod")
                    t.page.get_by_role("button", name="Promote").click()
                    expect(t.page.locator(".notice")).to_contain_text("1.1.0: now in stage prod")
                assert t.errors == [] and t.outside() == []
    assert registry.get_latest_version("prod") == "1.1.0"
    assert registry.history("1.1.0")[-1]["actor"] == "release"


# flask models token new -----------------------------------------------------------------------


def test_token_new_prints_a_token_once_and_the_config_line_of_its_hash(
    app: Flask, registry: ModelRegistry, clean_env, registry_root: Path
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["models", "token", "new", "reviewer", "--role", "promoter", "--stages", "prod"]
    )
    assert result.exit_code == 0, result.output
    token_line, config_line = result.stdout.splitlines()
    token = token_line.removeprefix("token: ")
    variable, _, value = config_line.partition("=")
    assert variable == "MODEL_REGISTRY_TOKENS" and token not in config_line
    configured = json.loads(shlex.split(value)[0])
    assert configured["reviewer"] == {"sha256": sha(token), "role": "promoter", "stages": ["prod"]}
    assert configured["ana"] == tokens_config()["ana"]  # merged with the tokens already there
    assert "shown only this once" in result.stderr
    again = runner.invoke(args=["models", "token", "new", "ana", "--role", "reader"])
    assert again.stdout.splitlines()[0] != token_line and "replaces" in again.stderr

    clean_env.setenv("MODEL_REGISTRY_TOKENS", shlex.split(value)[0])
    client = _factory_app(registry_root).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.patch("/models/2.0.0-rc.1", json={"stage": "prod"}, headers=headers).status_code == 200
    assert client.patch("/models/1.1.0", json={"stage": "prod"}, headers=headers).status_code == 403


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["x", "--role", "owner"], "'owner' is not one of"),
        (["x", "--role", "editor", "--stages", "prod"], "limits a promoter"),
        (["x", "--role", "promoter", "--stages", "pr od"], "stages"),
        (["", "--role", "reader"], "token name"),
    ],
)
def test_token_new_refuses_what_the_config_would(app: Flask, registry, args: list[str], says: str) -> None:
    result = app.test_cli_runner().invoke(args=["models", "token", "new", *args])
    assert result.exit_code != 0 and says in result.output, result.output
