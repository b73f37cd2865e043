"""Stage rules (SPEC "Who may change what"): ``from``, ``signed``, ``approvals`` and ``require``,
enforced inside the registry; a refused promotion lists every unmet rule and changes nothing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from test_signing import make_key

from flask_model_registry import (
    ConfigError,
    FlaskModelRegistry,
    ModelRegistry,
    PromotionRefusedError,
    StageRuleError,
)

PROD_RULES = {"prod": {"from": ["staging"], "approvals": 1, "require": {"metrics.auc": ">= 0.8"}}}


@pytest.fixture
def ruled(registry_root: Path) -> ModelRegistry:
    """A registry whose ``prod`` takes versions from ``staging``, approved once, with an auc of 0.8."""
    return ModelRegistry(registry_root, stage_rules=PROD_RULES)


def refusal(call: Any, *args: Any, **kwargs: Any) -> list[str]:
    """The unmet rules of a call that must be refused."""
    with pytest.raises(PromotionRefusedError) as caught:
        call(*args, **kwargs)
    assert caught.value.http_status == 409
    return caught.value.unmet


def test_every_unmet_rule_is_listed_and_nothing_changes(ruled: ModelRegistry) -> None:
    ruled.save_model("1.0.0", {"w": 1}, {"metrics": {"auc": 0.7}}, actor="trainer")
    before = ruled.get_metadata("1.0.0")
    events = len(ruled.history("1.0.0"))
    unmet = refusal(ruled.set_stage, "1.0.0", "prod", actor="ana")
    assert [u.split(":")[0] for u in unmet] == ["from", "approvals", "require"]
    assert "1.0.0 is in no stage" in unmet[0]
    assert "has 0" in unmet[1]
    assert "metrics.auc >= 0.8" in unmet[2] and "0.7" in unmet[2]
    assert ruled.get_metadata("1.0.0") == before
    assert len(ruled.history("1.0.0")) == events


def test_a_refusal_survives_pickling(ruled: ModelRegistry) -> None:
    ruled.save_model("1.0.0", {"w": 1}, actor="trainer")
    with pytest.raises(PromotionRefusedError) as caught:
        ruled.set_stage("1.0.0", "prod", actor="ana")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.unmet, copy.http_status) == (str(caught.value), caught.value.unmet, 409)


def test_a_promotion_meeting_every_rule_goes_ahead(ruled: ModelRegistry) -> None:
    ruled.save_model("1.0.0", {"w": 1}, {"stage": "staging", "metrics": {"auc": 0.85}}, actor="trainer")
    ruled.approve("1.0.0", "prod", actor="reviewer")
    assert ruled.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"
    assert ruled.get_latest_version("prod") == "1.0.0"


def test_from_lists_the_stages_a_version_may_come_from(registry_root: Path) -> None:
    registry = ModelRegistry(
        registry_root, stage_rules={"prod": {"from": ["staging"]}, "staging": {"from": [None]}}
    )
    registry.save_model("1.0.0", {"w": 1}, {"stage": "dev"}, actor="trainer")
    unmet = refusal(registry.set_stage, "1.0.0", "prod", actor="ana")
    assert unmet == ["from: prod takes versions from staging; 1.0.0 is in 'dev'"]
    assert refusal(registry.set_stage, "1.0.0", "staging", actor="ana")[0].startswith("from: staging")
    registry.set_stage("1.0.0", None, actor="ana")
    registry.set_stage("1.0.0", "staging", actor="ana")  # null in "from": no stage
    assert registry.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"


def test_leaving_a_stage_or_staying_in_it_is_not_a_promotion(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, stage_rules={"prod": {"approvals": 2}})
    registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    refusal(registry.set_stage, "1.0.0", "prod", actor="ana")
    registry.set_stage("1.0.0", "staging", actor="ana")  # no rule for staging
    assert registry.update_metadata("1.0.0", {"notes": "x"}, actor="ana")["notes"] == "x"
    assert registry.set_stage("1.0.0", None, actor="ana").get("stage") is None


def test_publishing_with_a_stage_is_a_promotion_from_no_stage(ruled: ModelRegistry) -> None:
    unmet = refusal(
        ruled.save_model, "1.0.0", {"w": 1}, {"stage": "prod", "metrics": {"auc": 0.9}}, actor="t"
    )
    assert [u.split(":")[0] for u in unmet] == ["from", "approvals"]
    assert "1.0.0 is in no stage" in unmet[0]
    assert ruled.list_versions() == [] and ruled.history() == []
    ruled.save_model("1.0.0", {"w": 1}, {"stage": "staging"}, actor="t")  # no rule: published


@pytest.mark.parametrize(
    ("condition", "value", "holds"),
    [
        (">= 0.8", 0.8, True),
        (">= 0.8", 0.79, False),
        ("> 0.8", 0.8, False),
        ("<= 5", 5, True),
        ("< 5", 5, False),
        ("== 3", 3.0, True),
        ("!= 3", 4, True),
        ("== ok", "ok", True),
        ("== ok", "no", False),
        ("!= two words", "two words", False),
        (">= 0.8", "0.9", False),  # a string is not a number
        ("== ok", 1, False),  # nor a number a string
        (">= 1", True, False),  # a boolean is neither
    ],
)
def test_require_compares_numbers_with_numbers_and_text_with_text(
    registry_root: Path, condition: str, value: Any, holds: bool
) -> None:
    registry = ModelRegistry(registry_root, stage_rules={"prod": {"require": {"eval.score": condition}}})
    registry.save_model("1.0.0", {"w": 1}, {"eval": {"score": value}}, actor="trainer")
    if holds:
        assert registry.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"
    else:
        [unmet] = refusal(registry.set_stage, "1.0.0", "prod", actor="ana")
        assert unmet.startswith(f"require: eval.score {condition.split()[0]} ")


def test_require_fails_a_missing_key(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, stage_rules={"prod": {"require": {"metrics.auc": ">=0.8"}}})
    registry.save_model("1.0.0", {"w": 1}, {"metrics": 0.9}, actor="trainer")
    assert refusal(registry.set_stage, "1.0.0", "prod", actor="ana") == [
        "require: metrics.auc >= 0.8, but metrics.auc is missing"
    ]


def test_require_reads_the_metadata_the_change_leaves(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, stage_rules={"prod": {"require": {"auc": "> 0.5"}}})
    registry.save_model("1.0.0", {"w": 1}, {"auc": 0.1}, actor="trainer")
    assert registry.update_metadata("1.0.0", {"stage": "prod", "auc": 0.6}, actor="ana")["stage"] == "prod"


class StatusRegistry(ModelRegistry):
    """A registry whose :meth:`signature` answers from a dict (the signing module's own tests check
    real signatures): the ``signed`` rule asks only for the status."""

    statuses: dict[str, str]

    def signature(self, version: str) -> dict[str, Any]:
        return {"status": self.statuses.get(version, "unsigned"), "key": None}


@pytest.mark.parametrize("status", ["unsigned", "invalid", "untrusted"])
def test_signed_needs_a_verified_signature(registry_root: Path, status: str) -> None:
    registry = StatusRegistry(registry_root, stage_rules={"prod": {"signed": True}})
    registry.statuses = {"1.0.0": status, "1.1.0": "verified"}
    registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    registry.save_model("1.1.0", {"w": 1}, actor="trainer")
    [unmet] = refusal(registry.set_stage, "1.0.0", "prod", actor="ana")
    assert unmet == f"signed: the signature of 1.0.0 must verify against a trusted key: {status}"
    assert registry.set_stage("1.1.0", "prod", actor="ana")["stage"] == "prod"


def test_approvals_count_distinct_actors_other_than_publisher_and_promoter(registry_root: Path) -> None:
    registry = ModelRegistry(registry_root, stage_rules={"prod": {"approvals": 2}})
    registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    registry.approve("1.0.0", "prod", actor="trainer")  # the publisher: recorded, not counted
    registry.approve("1.0.0", "prod", actor="bo")
    registry.approve("1.0.0", "prod", actor="bo")  # the same actor again: counted once
    registry.approve("1.0.0", "staging", actor="cy")  # another stage
    registry.approve("1.0.0", "prod", actor="ana")  # the promoter's own
    assert "has 1" in refusal(registry.set_stage, "1.0.0", "prod", actor="ana")[0]
    assert registry.set_stage("1.0.0", "prod", actor="cy")["stage"] == "prod"  # bo and ana count


def test_signed_with_real_signatures(registry_root: Path, tmp_path: Path) -> None:
    trusted, other = make_key(tmp_path, "trusted"), make_key(tmp_path, "other")
    rules = {"prod": {"signed": True}}
    registry = ModelRegistry(registry_root, stage_rules=rules, trusted_keys=[trusted.public])
    registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    registry.save_model("1.1.0", {"w": 1}, actor="trainer", signing_key=other.private)
    registry.save_model("1.2.0", {"w": 1}, actor="trainer", signing_key=trusted.private)
    for version, status in (("1.0.0", "unsigned"), ("1.1.0", "untrusted")):
        assert refusal(registry.set_stage, version, "prod", actor="ana") == [
            f"signed: the signature of {version} must verify against a trusted key: {status}"
        ]
    assert registry.set_stage("1.2.0", "prod", actor="ana")["stage"] == "prod"
    registry.sign("1.0.0", trusted.private, actor="ana")  # signed afterwards: now it may enter
    assert registry.set_stage("1.0.0", "prod", actor="ana")["stage"] == "prod"


def test_signed_when_publishing_into_the_stage(registry_root: Path, tmp_path: Path) -> None:
    trusted, other = make_key(tmp_path, "trusted"), make_key(tmp_path, "other")
    registry = ModelRegistry(
        registry_root, stage_rules={"prod": {"signed": True}}, trusted_keys=[trusted.public]
    )
    prod = {"stage": "prod"}
    assert refusal(registry.save_model, "1.0.0", {"w": 1}, prod, actor="t") == [
        "signed: the signature of 1.0.0 must verify against a trusted key: unsigned"
    ]
    assert refusal(registry.save_model, "1.0.0", {"w": 1}, prod, actor="t", signing_key=other.private) == [
        "signed: the signature of 1.0.0 must verify against a trusted key: untrusted"
    ]
    assert registry.list_versions() == []
    registry.save_model("1.0.0", {"w": 1}, prod, actor="t", signing_key=trusted.private)
    assert registry.signature("1.0.0")["status"] == "verified"
    assert registry.get_latest_version("prod") == "1.0.0"


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        ({"prod": {"form": ["staging"]}}, "unknown key 'form'"),
        ({"prod": {"from": "staging"}}, "'from' must be a list"),
        ({"prod": {"from": ["no such"]}}, "'from'"),
        ({"prod": {"signed": "yes"}}, "'signed' must be true or false"),
        ({"prod": {"approvals": -1}}, "'approvals' must be a whole number"),
        ({"prod": {"approvals": True}}, "'approvals' must be a whole number"),
        ({"prod": {"require": ["auc"]}}, "'require' must map"),
        ({"prod": {"require": {"auc": "about 0.8"}}}, "'about 0.8' must be '<op> <operand>'"),
        ({"prod": {"require": {"auc": ">="}}}, "'>=' must be '<op> <operand>'"),
        ({"prod": {"require": {"metrics..auc": "> 1"}}}, "not a dotted path"),
        ({"prod": {"require": {"auc": 0.8}}}, "must be '<op> <operand>'"),
        ({"pr od": {}}, "stage rule 'pr od'"),
        ({"prod": "staging"}, "stage rule 'prod' must be an object"),
    ],
)
def test_a_malformed_rule_is_a_value_error_naming_it(registry_root: Path, rules: Any, named: str) -> None:
    with pytest.raises(StageRuleError, match="stage rule") as caught:
        ModelRegistry(registry_root, stage_rules=rules)
    assert isinstance(caught.value, ValueError)
    assert named in str(caught.value)


def test_a_rule_for_a_stage_not_allowed_is_refused(registry_root: Path) -> None:
    with pytest.raises(StageRuleError, match="pord"):
        ModelRegistry(
            registry_root, allowed_stages=["staging", "prod"], stage_rules={"pord": {"approvals": 1}}
        )


@pytest.fixture
def app_config() -> dict[str, Any]:
    """The ``app`` fixture with :data:`PROD_RULES`."""
    return {"MODEL_REGISTRY_STAGE_RULES": PROD_RULES}


def test_python_cli_and_http_refuse_alike(app: Flask, auth_headers: dict[str, str]) -> None:
    registry = app.registry
    registry.save_model("1.0.0", {"w": 1}, {"stage": "dev", "metrics": {"auc": 0.5}}, actor="trainer")
    unmet = refusal(registry.set_stage, "1.0.0", "prod", actor="ana")
    assert len(unmet) == 3
    result = app.test_cli_runner().invoke(args=["models", "promote", "1.0.0", "prod", "--actor", "ana"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: version 1.0.0 may not enter stage 'prod': " + "; ".join(unmet)
    headers = {**auth_headers, "X-Model-Registry-Actor": "ana"}
    response = app.test_client().patch("/models/1.0.0", json={"stage": "prod"}, headers=headers)
    assert response.status_code == 409
    assert response.get_json()["error"] == {
        "code": 409,
        "message": "version 1.0.0 may not enter stage 'prod': " + "; ".join(unmet),
        "unmet": unmet,
    }
    assert registry.get_metadata("1.0.0")["stage"] == "dev"
    assert [event["action"] for event in registry.history("1.0.0")] == ["publish"]


# Flask config ------------------------------------------------------------------------------------


def make_app(registry_root: Path, **config: Any) -> Flask:
    app = Flask("rules")
    app.config.update(TESTING=True, MODEL_REGISTRY_ROOT=str(registry_root), **config)
    FlaskModelRegistry(app)
    return app


def test_rules_from_app_config(registry_root: Path) -> None:
    app = make_app(registry_root, MODEL_REGISTRY_STAGE_RULES=PROD_RULES)
    assert app.config["MODEL_REGISTRY_STAGE_RULES"] == PROD_RULES
    app.registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    assert len(refusal(app.registry.set_stage, "1.0.0", "prod", actor="ana")) == 3


def test_rules_from_the_environment(registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_STAGE_RULES", json.dumps(PROD_RULES))
    app = make_app(registry_root)
    assert app.config["MODEL_REGISTRY_STAGE_RULES"] == PROD_RULES
    app.registry.save_model("1.0.0", {"w": 1}, actor="trainer")
    assert len(refusal(app.registry.set_stage, "1.0.0", "prod", actor="ana")) == 3


def test_rules_per_named_model(registry_root: Path, tmp_path: Path) -> None:
    (tmp_path / "fraud").mkdir()
    (tmp_path / "churn").mkdir()
    app = make_app(
        registry_root,
        MODEL_REGISTRY_STAGE_RULES={"prod": {"approvals": 1}},
        MODEL_REGISTRY_MODELS={
            "fraud": {"root": str(tmp_path / "fraud"), "stage_rules": {"prod": {"from": ["staging"]}}},
            "churn": str(tmp_path / "churn"),
        },
    )
    fraud, churn = app.registries["fraud"], app.registries["churn"]
    fraud.save_model("1.0.0", {"w": 1}, actor="trainer")
    churn.save_model("1.0.0", {"w": 1}, actor="trainer")
    assert refusal(fraud.set_stage, "1.0.0", "prod", actor="ana")[0].startswith("from:")
    assert refusal(churn.set_stage, "1.0.0", "prod", actor="ana")[0].startswith("approvals:")  # app-wide


@pytest.mark.parametrize(
    "config",
    [
        {"MODEL_REGISTRY_STAGE_RULES": '{"prod": {"approvals": "one"}}'},
        {"MODEL_REGISTRY_STAGE_RULES": "not json"},
        {"MODEL_REGISTRY_STAGES": ["staging", "prod"], "MODEL_REGISTRY_STAGE_RULES": {"pord": {}}},
    ],
)
def test_a_malformed_rule_is_a_config_error_at_init_app(registry_root: Path, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(registry_root, **config)
    assert caught.value.key == "MODEL_REGISTRY_STAGE_RULES"
    assert "MODEL_REGISTRY_STAGE_RULES" in str(caught.value)


def test_a_malformed_rule_of_a_named_model_is_a_config_error(registry_root: Path, tmp_path: Path) -> None:
    (tmp_path / "fraud").mkdir()
    models = {"fraud": {"root": str(tmp_path / "fraud"), "stage_rules": {"prod": {"approvals": -2}}}}
    with pytest.raises(ConfigError, match="'approvals' must be a whole number"):
        make_app(registry_root, MODEL_REGISTRY_MODELS=models)
