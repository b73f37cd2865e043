"""Approvals (SPEC "Who may change what"): ``registry.approve``, ``POST <prefix>/<v>/approvals``,
``flask models approve`` and the console's button; audited, listed beside the metadata, and counted
by the ``approvals`` stage rule for distinct actors other than the publisher and the promoter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, live_server, tab
from flask import Flask
from playwright.sync_api import expect

from flask_model_registry import (
    FlaskModelRegistry,
    InvalidMetadataError,
    InvalidVersionError,
    ModelRegistry,
    PromotionRefusedError,
    VersionNotFoundError,
    approvals,
)
from flask_model_registry.trail import unexplained
from flask_model_registry.webhooks.message import body, event_kinds

RULES = {"prod": {"approvals": 1}}
TOKEN = "approvals-test-token"


@pytest.fixture
def app_config() -> dict[str, Any]:
    """The ``app`` fixture: prod needs one approval; a token (writes) and a secret key (console)."""
    return {"MODEL_REGISTRY_STAGE_RULES": RULES, "MODEL_REGISTRY_API_TOKEN": TOKEN, "SECRET_KEY": "approvals"}


@pytest.fixture
def ruled(app: Flask) -> ModelRegistry:
    """The app's registry with 1.0.0 published by ``trainer`` (staging)."""
    app.registry.save_model("1.0.0", {"w": 1}, {"stage": "staging"}, actor="trainer")
    return app.registry


def headers(actor: str | None = None) -> dict[str, str]:
    sent = {"Authorization": f"Bearer {TOKEN}"}
    return {**sent, "X-Model-Registry-Actor": actor} if actor else sent


def unmet_of(registry: ModelRegistry, actor: str) -> list[str]:
    with pytest.raises(PromotionRefusedError) as caught:
        registry.set_stage("1.0.0", "prod", actor=actor)
    return caught.value.unmet


# Python ------------------------------------------------------------------------------------------


def test_an_approval_is_an_audit_event_that_changes_no_metadata(
    ruled: ModelRegistry, registry_root: Path
) -> None:
    before = (registry_root / "versions" / "1.0.0" / "metadata.json").read_bytes()
    approval = ruled.approve("1.0.0", "prod", actor="bo")
    assert set(approval) == {"stage", "actor", "at"} and approval["actor"] == "bo"
    assert (registry_root / "versions" / "1.0.0" / "metadata.json").read_bytes() == before
    event = ruled.history("1.0.0")[-1]
    assert (event["action"], event["stage"], event["actor"]) == ("approve", "prod", "bo")
    assert (event["before"], event["after"], event["time"]) == ({}, {}, approval["at"])
    assert ruled.history()[-1]["id"] == event["id"]  # in the registry-wide trail too
    assert unexplained(ruled.snapshot(), ruled.history()) == []  # the replay of stages is unchanged


def test_approving_checks_its_arguments(ruled: ModelRegistry, registry_root: Path) -> None:
    with pytest.raises(VersionNotFoundError):
        ruled.approve("9.9.9", "prod", actor="bo")
    with pytest.raises(InvalidVersionError):
        ruled.approve("../x", "prod", actor="bo")
    with pytest.raises(InvalidMetadataError):
        ruled.approve("1.0.0", "no spaces", actor="bo")
    with pytest.raises(InvalidMetadataError):
        ruled.approve("1.0.0", "prod", actor="x" * 300)
    with pytest.raises(InvalidMetadataError):  # a typo, with allowed stages
        ModelRegistry(registry_root, allowed_stages=["staging", "prod"]).approve("1.0.0", "pord", actor="bo")
    assert [e["action"] for e in ruled.history("1.0.0")] == ["publish"]


def test_the_same_actor_twice_counts_once(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, stage_rules={"prod": {"approvals": 2}})
    registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    registry.approve("1.0.0", "prod", actor="bo")
    registry.approve("1.0.0", "prod", actor="bo")
    assert unmet_of(registry, "ana") == [
        "approvals: prod needs 2 approval(s) by others than the publisher and the promoter; 1.0.0 has 1"
    ]
    registry.approve("1.0.0", "prod", actor="cy")
    assert registry.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"


def test_the_publishers_approval_is_recorded_but_not_counted(ruled: ModelRegistry) -> None:
    ruled.approve("1.0.0", "prod", actor="trainer")
    ruled.approve("1.0.0", "staging", actor="bo")
    listed = [(a["stage"], a["actor"]) for a in approvals.of(ruled, "1.0.0")]
    assert listed == [("prod", "trainer"), ("staging", "bo")]
    assert "has 0" in unmet_of(ruled, "ana")[0]  # trainer published it; bo approved staging, not prod


def test_the_promoters_own_approval_is_not_counted(ruled: ModelRegistry) -> None:
    ruled.approve("1.0.0", "prod", actor="ana")
    assert "has 0" in unmet_of(ruled, "ana")[0]
    assert ruled.set_stage("1.0.0", "prod", actor="bo")["stage"] == "prod"  # ana's counts for bo


def test_a_hand_made_version_has_no_publisher(app: Flask, by_hand: Callable[..., Path]) -> None:
    by_hand("1.0.0", {"stage": "staging"})
    app.registry.approve("1.0.0", "prod", actor="bo")
    assert app.registry.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"


# HTTP --------------------------------------------------------------------------------------------


def test_http_approval_is_listed_beside_the_metadata(
    app: Flask, ruled: ModelRegistry, registry_root: Path
) -> None:
    client = app.test_client()
    etag = client.get("/models/1.0.0", headers=headers()).headers["ETag"]
    answer = client.post("/models/1.0.0/approvals", json={"stage": "prod"}, headers=headers("bo"))
    assert answer.status_code == 201, answer.data
    [approval] = answer.get_json()["approvals"]
    assert approval["stage"] == "prod" and approval["actor"] == "bo (api:127.0.0.1)"
    assert answer.get_json()["metadata"] == ruled.get_metadata("1.0.0")
    shown = client.get("/models/1.0.0", headers=headers())
    assert shown.get_json() == answer.get_json() and shown.headers["ETag"] != etag  # a new ETag
    assert "approvals" not in json.loads((registry_root / "versions" / "1.0.0" / "metadata.json").read_text())
    patched = client.patch(
        "/models/1.0.0", json={"stage": "prod"}, headers={**headers("ana"), "If-Match": shown.headers["ETag"]}
    )
    assert patched.status_code == 200, patched.data  # an ETag with approvals in it still matches
    assert patched.get_json()["approvals"] == [approval]
    assert client.get("/models/1.0.0", headers=headers()).headers["ETag"] == patched.headers["ETag"]


def test_http_promotion_counts_approvals_as_python_does(app: Flask, ruled: ModelRegistry) -> None:
    client = app.test_client()
    client.post("/models/1.0.0/approvals", json={"stage": "prod"}, headers=headers("ana"))
    refused = client.patch("/models/1.0.0", json={"stage": "prod"}, headers=headers("ana"))
    assert refused.status_code == 409
    assert refused.get_json()["error"]["unmet"] == unmet_of(ruled, "ana (api:127.0.0.1)")
    assert client.patch("/models/1.0.0", json={"stage": "prod"}, headers=headers("bo")).status_code == 200


@pytest.mark.parametrize(
    ("send", "status"),
    [
        ({"json": {"stage": "no spaces"}}, 400),
        ({"json": {"stage": 3}}, 400),
        ({"json": {"stage": "prod", "also": 1}}, 400),
        ({"json": ["prod"]}, 400),
        ({"data": b"{", "content_type": "application/json"}, 400),
        ({"data": "stage=prod", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"data": b'{"stage": "' + b"x" * 5000 + b'"}', "content_type": "application/json"}, 413),
    ],
)
def test_http_approval_refuses_bad_bodies(
    app: Flask,
    ruled: ModelRegistry,
    json_error: Callable[[Any], dict[str, Any]],
    send: dict[str, Any],
    status: int,
) -> None:
    answer = app.test_client().post("/models/1.0.0/approvals", headers=headers("bo"), **send)
    assert json_error(answer)["code"] == status
    assert [e["action"] for e in ruled.history("1.0.0")] == ["publish"]


def test_http_approval_needs_the_token_and_a_version(
    app: Flask, ruled: ModelRegistry, json_error: Callable[[Any], dict[str, Any]]
) -> None:
    client = app.test_client()
    assert json_error(client.post("/models/1.0.0/approvals", json={"stage": "prod"}))["code"] == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert (
        json_error(client.post("/models/1.0.0/approvals", json={"stage": "prod"}, headers=wrong))["code"]
        == 401
    )
    assert (
        json_error(client.post("/models/9.9.9/approvals", json={"stage": "prod"}, headers=headers()))["code"]
        == 404
    )
    assert (
        json_error(client.post("/models/v1/approvals", json={"stage": "prod"}, headers=headers()))["code"]
        == 400
    )
    app.config["MODEL_REGISTRY_API_TOKEN"] = None
    assert json_error(client.post("/models/1.0.0/approvals", json={"stage": "prod"}))["code"] == 403
    assert [e["action"] for e in ruled.history("1.0.0")] == ["publish"]


def test_http_approval_of_a_named_model(make_named: Callable[..., Flask]) -> None:
    app = make_named()
    app.registries["churn"].save_model("1.0.0", {"w": 1}, actor="trainer")
    answer = app.test_client().post(
        "/models/churn/1.0.0/approvals", json={"stage": "prod"}, headers=headers("bo")
    )
    assert answer.status_code == 201
    assert [a["stage"] for a in answer.get_json()["approvals"]] == ["prod"]
    assert app.registries["churn"].history("1.0.0")[-1]["action"] == "approve"
    refused = app.test_client().post(
        "/models/churn/1.0.0/approvals", json={"stage": "dev"}, headers=headers()
    )
    assert refused.status_code == 400  # churn allows staging and prod only


@pytest.fixture
def make_named(registry_root: Path, named_models: dict[str, Any]) -> Callable[..., Flask]:
    def make() -> Flask:
        app = Flask("named_approvals")
        app.config.update(
            MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_API_TOKEN=TOKEN, **named_models
        )
        FlaskModelRegistry(app)
        return app

    return make


# CLI and webhooks --------------------------------------------------------------------------------


def test_cli_approve_show_and_history(app: Flask, ruled: ModelRegistry) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["models", "approve", "1.0.0", "prod", "--actor", "bo"])
    assert result.exit_code == 0, result.output
    assert result.output == "1.0.0 approved for stage 'prod' by bo\n"
    shown = json.loads(runner.invoke(args=["models", "show", "1.0.0", "--json"]).output)
    assert [(a["stage"], a["actor"]) for a in shown["approvals"]] == [("prod", "bo")]
    assert shown == app.test_client().get("/models/1.0.0", headers=headers()).get_json()
    assert "approve prod  by bo" in runner.invoke(args=["models", "history", "1.0.0"]).output
    missing = runner.invoke(args=["models", "approve", "9.9.9", "prod"])
    assert missing.exit_code == 1 and missing.output == "Error: version 9.9.9 not found\n"
    assert runner.invoke(args=["models", "promote", "1.0.0", "prod", "--actor", "ana"]).exit_code == 0


def test_a_webhook_message_names_the_stage_approved(ruled: ModelRegistry) -> None:
    ruled.approve("1.0.0", "prod", actor="bo")
    event = ruled.history("1.0.0")[-1]
    assert event_kinds(event) == ["approve"]
    message = json.loads(body(event, None))
    assert message["type"] == "model.approve"
    assert (message["data"]["stage"], message["data"]["actor"]) == ("prod", "bo")
    assert "stage" not in json.loads(body(ruled.history("1.0.0")[0], None))["data"]


# console -----------------------------------------------------------------------------------------


@pytest.fixture
def browser_tab(app: Flask) -> Iterator[Any]:
    """A Chromium tab on the app, served on 127.0.0.1; no console error, nothing requested outside."""
    with chromium() as browser, live_server(app) as base, tab(browser, base) as opened:
        yield opened
        assert opened.errors == [] and opened.outside() == []


def console_sign_in(t: Any, name: str) -> None:
    t.goto("/models/ui/sign-in")
    t.page.get_by_label("API token").fill(TOKEN)
    t.page.get_by_label("Your name").fill(name)
    t.page.get_by_role("button", name="Sign in").click()
    expect(t.page.locator("header")).to_contain_text(f"Signed in as {name}")


def test_console_approve_button_and_a_promotion_under_the_rules(
    browser_tab: Any, ruled: ModelRegistry
) -> None:
    t = browser_tab
    console_sign_in(t, "ana")
    t.goto("/models/ui/v/1.0.0")
    expect(t.page.locator("section[aria-labelledby=approvals-title]")).to_contain_text("No approvals yet")
    t.page.get_by_label("Stage", exact=True).fill("prod")
    t.page.get_by_role("button", name="Promote").click()
    expect(t.page.locator(".error")).to_contain_text("may not enter stage 'prod': approvals: prod needs 1")
    t.answered(409)
    assert ruled.get_metadata("1.0.0")["stage"] == "staging"

    t.page.get_by_label("Approve for stage").fill("prod")
    t.page.get_by_role("button", name="Approve").click()
    expect(t.page.locator(".notice")).to_contain_text("1.0.0: approved for stage prod.")
    expect(t.page.locator("ul.approvals li")).to_contain_text("prod approved by ana")
    expect(t.page.locator("ol.timeline li").first).to_contain_text("approve by ana")
    assert ruled.history("1.0.0")[-1]["stage"] == "prod"

    ruled.approve("1.0.0", "prod", actor="bo")  # ana's own approval does not count for ana
    t.page.get_by_label("Stage", exact=True).fill("prod")
    t.page.get_by_role("button", name="Promote").click()
    expect(t.page.locator(".notice")).to_contain_text("1.0.0: now in stage prod")
    assert ruled.get_metadata("1.0.0")["stage"] == "prod"


def test_approvals_given_elsewhere_are_seen_and_counted(
    app: Flask, ruled: ModelRegistry, registry_root: Path
) -> None:
    client = app.test_client()
    elsewhere = ModelRegistry(registry_root)  # another process, as far as the app knows
    assert client.get("/models/1.0.0", headers=headers()).get_json()["approvals"] == []
    assert "has 0" in unmet_of(ruled, "ana")[0]  # the app has read the trail and remembers it
    elsewhere.approve("1.0.0", "prod", actor="bo")
    elsewhere.update_metadata("1.0.0", {"notes": "reviewed"}, actor="bo")
    assert [a["actor"] for a in client.get("/models/1.0.0", headers=headers()).get_json()["approvals"]] == [
        "bo"
    ]
    assert ruled.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"


def test_approving_needs_role_promoter_for_that_stage(registry_root: Path) -> None:
    def entry(role: str, token: str, stages: list[str] | None = None) -> dict[str, Any]:
        found = {"sha256": hashlib.sha256(token.encode()).hexdigest(), "role": role}
        return found | ({"stages": stages} if stages else {})

    app = Flask("approvals_by_role")
    app.config.update(
        MODEL_REGISTRY_ROOT=str(registry_root),
        MODEL_REGISTRY_STAGE_RULES=RULES,
        MODEL_REGISTRY_TOKENS={
            "train-job": entry("editor", "t-job"),
            "stager": entry("promoter", "t-stager", ["staging"]),
            "reviewer": entry("promoter", "t-reviewer", ["prod"]),
            "release-manager": entry("promoter", "t-release", ["staging", "prod"]),
        },
    )
    FlaskModelRegistry(app)
    app.registry.save_model("1.0.0", {"w": 1}, {"stage": "staging"}, actor="train-job")
    client = app.test_client()

    def post(token: str, stage: str = "prod") -> Any:
        sent = {"Authorization": f"Bearer {token}", "X-Model-Registry-Actor": "someone else"}
        return client.post("/models/1.0.0/approvals", json={"stage": stage}, headers=sent)

    for token, why in (("t-job", "needs role promoter"), ("t-stager", "for stage 'prod'")):
        refused = post(token)
        assert refused.status_code == 403 and why in refused.get_json()["error"]["message"]
    assert post("t-stager", "staging").status_code == 201
    assert post("t-release").status_code == 201  # the release manager's own approval...
    promote = {"Authorization": "Bearer t-release"}
    refused = client.patch("/models/1.0.0", json={"stage": "prod"}, headers=promote)
    assert (
        refused.status_code == 409 and "has 0" in refused.get_json()["error"]["unmet"][0]
    )  # ...not for itself
    approved = post("t-reviewer")
    assert approved.status_code == 201
    assert [a["actor"] for a in approved.get_json()["approvals"]] == ["stager", "release-manager", "reviewer"]
    assert client.patch("/models/1.0.0", json={"stage": "prod"}, headers=promote).status_code == 200
    assert app.registry.history("1.0.0")[-1]["actor"] == "release-manager"
