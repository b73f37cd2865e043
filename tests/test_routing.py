"""Canary traffic through ``registry.route``: the split, stickiness per key, fallbacks, the flag's end."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_model_registry import FlaskModelRegistry, LoadedModel, ModelRegistry, VersionNotFoundError
from flask_model_registry.routing import share

KEYS = [f"user-{n}" for n in range(5000)]
TOLERANCE = 0.03


def split(registry: ModelRegistry, keys: list[str] = KEYS, **kwargs: object) -> Counter[str]:
    """How many of ``keys`` each version answered."""
    return Counter(registry.route(key, **kwargs).version for key in keys)


@pytest.fixture
def rollout(registry: ModelRegistry) -> ModelRegistry:
    """1.0.0 in prod, and 1.1.0 published to staging as a 20% canary."""
    registry.save_model("1.0.0", "model 1.0.0", {"stage": "prod"})
    registry.save_model("1.1.0", "model 1.1.0", {"stage": "staging", "canary": 0.2})
    return registry


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5])
def test_a_canary_takes_its_share_of_keys(registry: ModelRegistry, weight: float):
    registry.save_model("1.0.0", "stable", {"stage": "prod"})
    registry.save_model("1.1.0", "canary", {"canary": weight})
    counts = split(registry, stage="prod")
    assert set(counts) == {"1.0.0", "1.1.0"}
    assert abs(counts["1.1.0"] / len(KEYS) - weight) <= TOLERANCE, counts


def test_without_a_key_the_split_is_random(rollout: ModelRegistry):
    counts = Counter(rollout.route(stage="prod").version for _ in range(5000))
    assert abs(counts["1.1.0"] / 5000 - 0.2) <= TOLERANCE, counts


def test_the_same_key_always_gets_the_same_version(rollout: ModelRegistry):
    first = {key: rollout.route(key, "prod").version for key in KEYS[:500]}
    for _ in range(3):
        assert {key: rollout.route(key, "prod").version for key in KEYS[:500]} == first
    fresh = ModelRegistry(rollout.root)  # another registry object, as another worker holds one
    assert {key: fresh.route(key, "prod").version for key in KEYS[:500]} == first


def test_the_split_is_the_same_in_another_process(rollout: ModelRegistry):
    mine = {key: rollout.route(key, "prod").version for key in KEYS[:1000]}
    script = (
        "import json, sys; from flask_model_registry import ModelRegistry;"
        "r = ModelRegistry(sys.argv[1]); keys = json.loads(sys.stdin.read());"
        "print(json.dumps({k: r.route(k, 'prod').version for k in keys}))"
    )
    for seed in ("0", "12345"):  # Python's own str hash differs between these processes
        run = subprocess.run(
            [sys.executable, "-c", script, rollout.root],
            input=json.dumps(KEYS[:1000]),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        assert json.loads(run.stdout) == mine


def test_the_hash_is_the_documented_one():
    # blake2b(f"{canary}\0{key}", digest_size=8) as a big-endian fraction of 2**64: another
    # service (in any language) can tell which version a key gets.
    import hashlib

    digest = hashlib.blake2b(b"1.1.0\0user-7", digest_size=8).digest()
    assert share("user-7", "1.1.0") == int.from_bytes(digest, "big") / 2**64
    assert share(b"user-7", "1.1.0") == share("user-7", "1.1.0")
    assert share(42, "1.1.0") == share("42", "1.1.0")
    with pytest.raises(TypeError):
        share(4.2, "1.1.0")  # type: ignore[arg-type]


def test_raising_the_weight_keeps_the_keys_already_on_the_canary(rollout: ModelRegistry):
    before = {key for key in KEYS if rollout.route(key, "prod").version == "1.1.0"}
    rollout.update_metadata("1.1.0", {"canary": 0.5})
    after = {key for key in KEYS if rollout.route(key, "prod").version == "1.1.0"}
    assert before < after
    assert abs(len(after) / len(KEYS) - 0.5) <= TOLERANCE


def test_route_answers_the_model_and_its_version_together(rollout: ModelRegistry):
    answers = {rollout.route(key, "prod") for key in KEYS[:200]}
    assert answers == {LoadedModel("1.0.0", "model 1.0.0"), LoadedModel("1.1.0", "model 1.1.0")}


def test_removing_the_flag_ends_the_split_at_the_next_refresh(rollout: ModelRegistry):
    other_process = ModelRegistry(rollout.root)
    assert set(split(other_process, stage="prod")) == {"1.0.0", "1.1.0"}
    rollout.update_metadata("1.1.0", {"canary": None})  # roll back
    assert split(other_process, stage="prod") == {"1.0.0": len(KEYS)}


def test_promoting_is_set_stage_and_removing_the_flag(rollout: ModelRegistry):
    rollout.set_stage("1.1.0", "prod")
    # Still flagged: 1.1.0 is in prod but weighted, so 1.0.0 stays the stable version.
    assert set(split(rollout, stage="prod")) == {"1.0.0", "1.1.0"}
    rollout.update_metadata("1.1.0", {"canary": None})
    assert split(rollout, stage="prod") == {"1.1.0": len(KEYS)}


def test_get_latest_ignores_canaries(rollout: ModelRegistry):
    assert rollout.get_latest("prod").version == "1.0.0"
    assert rollout.get_latest().version == "1.1.0"
    assert rollout.get_latest_version() == "1.1.0"


def test_the_canary_is_the_highest_weighted_version_above_the_stable_one(registry: ModelRegistry):
    registry.save_model("1.0.0", "old canary", {"canary": 0.5})  # below the stable one: ignored
    registry.save_model("1.1.0", "stable", {"stage": "prod"})
    registry.save_model("1.2.0", "lower canary", {"stage": "staging", "canary": 0.5})
    registry.save_model("1.3.0", "canary", {"stage": "experiments", "canary": 0.5})
    assert set(split(registry, stage="prod")) == {"1.1.0", "1.3.0"}
    # stage=None: the stable version is the highest of all versions without a weight
    assert set(split(registry)) == {"1.1.0", "1.3.0"}


def test_a_higher_stable_version_ends_the_split(rollout: ModelRegistry):
    rollout.save_model("1.2.0", "model 1.2.0", {"stage": "prod"})
    assert split(rollout, stage="prod") == {"1.2.0": len(KEYS)}


def test_prereleases_count_only_when_asked(rollout: ModelRegistry):
    rollout.save_model("2.0.0-rc.1", "rc", {"canary": 0.5})
    rollout.save_model("1.0.1-rc.1", "stable rc", {"stage": "prod"})
    assert set(split(rollout, stage="prod")) == {"1.0.0", "1.1.0"}
    assert set(split(rollout, stage="prod", include_prerelease=True)) == {"1.0.1-rc.1", "2.0.0-rc.1"}


def test_true_means_the_default_weight(registry: ModelRegistry):
    registry.save_model("1.0.0", "stable")
    registry.save_model("1.1.0", "canary", {"canary": True})
    assert abs(split(registry)["1.1.0"] / len(KEYS) - 0.1) <= TOLERANCE
    assert abs(split(ModelRegistry(registry.root, canary_weight=0.4))["1.1.0"] / len(KEYS) - 0.4) <= TOLERANCE
    registry.update_metadata("1.1.0", {"canary": False})  # false: not a canary, the stable version
    assert split(registry) == {"1.1.0": len(KEYS)}


def test_a_weight_of_one_takes_all_traffic(rollout: ModelRegistry):
    rollout.update_metadata("1.1.0", {"canary": 1})
    assert split(rollout, stage="prod") == {"1.1.0": len(KEYS)}


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, 5, "0.05", "yes", [0.1], {"w": 0.1}])
def test_an_invalid_weight_leaves_the_version_out_with_one_warning(
    rollout: ModelRegistry, caplog: pytest.LogCaptureFixture, bad: object
):
    rollout.update_metadata("1.1.0", {"canary": bad})
    with caplog.at_level(logging.WARNING, "flask_model_registry"):
        assert split(rollout, stage="prod") == {"1.0.0": len(KEYS)}
        with pytest.raises(VersionNotFoundError):  # staging holds only the refused version
            rollout.route("k", "staging")
    warnings = [r for r in caplog.records if "'canary' must be" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "1.1.0" in warnings[0].getMessage()


def test_nan_is_an_invalid_weight(rollout: ModelRegistry, registry_root: Path):
    path = registry_root / "versions/1.1.0/metadata.json"
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, "canary": math.nan}))  # NaN, as a hand edit may write
    assert split(rollout, stage="prod") == {"1.0.0": len(KEYS)}


def test_a_canary_that_fails_to_load_sends_its_traffic_to_the_stable_version(
    rollout: ModelRegistry, registry_root: Path, caplog: pytest.LogCaptureFixture
):
    (registry_root / "versions/1.1.0/model.pkl").write_bytes(b"not the recorded bytes")
    with caplog.at_level(logging.WARNING, "flask_model_registry"):
        assert split(rollout, stage="prod") == {"1.0.0": len(KEYS)}
        assert Counter(rollout.route(stage="prod").version for _ in range(500)) == {"1.0.0": 500}
        rollout.save_model("0.9.0", "unrelated", {"stage": "old"})  # a new state: decided again
        assert split(rollout, stage="prod") == {"1.0.0": len(KEYS)}
    warnings = [r for r in caplog.records if "canary 1.1.0 failed to load" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].levelno == logging.WARNING
    assert "1.0.0" in warnings[0].getMessage()


def test_a_stable_version_that_fails_keeps_the_last_good_one(rollout: ModelRegistry, registry_root: Path):
    assert rollout.route("k", "prod").version in {"1.0.0", "1.1.0"}
    rollout.save_model("1.0.5", "broken", {"stage": "prod"})
    (registry_root / "versions/1.0.5/model.pkl").write_bytes(b"broken")
    assert split(rollout, stage="prod")["1.0.0"] > 0
    fresh = ModelRegistry(rollout.root)  # nothing served before: nothing to fall back on
    with pytest.raises(Exception, match="sha256"):
        fresh.route("k", "prod")


def test_a_stage_with_only_a_canary_is_served_by_it(registry: ModelRegistry):
    registry.save_model("1.0.0", "first", {"stage": "prod", "canary": 0.05})
    assert split(registry, stage="prod") == {"1.0.0": len(KEYS)}
    registry.save_model("1.1.0", "second", {"stage": "prod", "canary": 0.05})
    assert split(registry, stage="prod") == {"1.1.0": len(KEYS)}


def test_a_stage_without_versions_has_nothing_to_route_to(rollout: ModelRegistry):
    with pytest.raises(VersionNotFoundError):
        rollout.route("k", "pord")  # not the staging canary: another stage's model is not a fallback
    rollout.set_stage("1.0.0", "archived")
    with pytest.raises(VersionNotFoundError):
        rollout.route("k", "prod")


def test_an_empty_registry_has_nothing_to_route_to(registry: ModelRegistry):
    with pytest.raises(VersionNotFoundError):
        registry.route()


@pytest.mark.parametrize("bad", [0, -1, 1.01, "x", math.nan, True, None])
def test_the_default_weight_is_validated(registry_root: Path, bad: object):
    with pytest.raises(ValueError, match="canary_weight"):
        ModelRegistry(registry_root, canary_weight=bad)  # type: ignore[arg-type]


def test_the_flask_config_sets_the_default_weight(registry_root: Path, registry: ModelRegistry):
    registry.save_model("1.0.0", "stable")
    registry.save_model("1.1.0", "canary", {"canary": True})
    app = Flask("service")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_CANARY_WEIGHT="0.5")  # from env
    FlaskModelRegistry(app)
    assert abs(split(app.registry)["1.1.0"] / len(KEYS) - 0.5) <= TOLERANCE  # type: ignore[attr-defined]
    bad = Flask("service")
    bad.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_CANARY_WEIGHT=2)
    with pytest.raises(ValueError, match="MODEL_REGISTRY_CANARY_WEIGHT"):
        FlaskModelRegistry(bad)


def test_made_up_stage_names_leave_no_state_behind(rollout: ModelRegistry):
    rollout.route("k", "prod")
    for n in range(100):
        with pytest.raises(VersionNotFoundError):
            rollout.route("k", f"typo-{n}")
    assert set(rollout._router._decisions) == {("prod", False)}
    assert not any(key[0] == "route" and key[1].startswith("typo") for key in rollout.snapshot()._memo)


@given(key=st.text() | st.binary() | st.integers())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_key_gets_one_version_and_keeps_it(rollout: ModelRegistry, key: str | bytes | int):
    first = rollout.route(key, "prod").version
    assert first in {"1.0.0", "1.1.0"}
    assert rollout.route(key, "prod").version == first
    assert first == ("1.1.0" if share(key, "1.1.0") < 0.2 else "1.0.0")
