"""``flask_model_registry.rollout``: what each stage serves, and a promotion that ends a canary."""

from __future__ import annotations

from typing import Any

import pytest

from flask_model_registry import InvalidMetadataError, ModelRegistry, PreconditionFailedError
from flask_model_registry.errors import RollbackIncompleteError
from flask_model_registry.rollout import canary_label, promote, roles, serving


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (True, "canary"),
        (0.3, "canary 0.3"),
        (1, "canary 1"),
        (False, None),
        (None, None),
        (0, "canary 0 (invalid: not routed)"),
    ],
)
def test_canary_label(value: Any, label: str | None) -> None:
    assert canary_label({"canary": value}) == label


def test_promote_ends_a_canary_and_leaves_other_versions_alone(published: ModelRegistry) -> None:
    done = promote(published, "1.1.0", "prod", actor="ana")
    assert done.ended_canary is True and "canary" not in done.metadata
    assert [e["action"] for e in published.history("1.1.0")] == ["publish", "update_metadata"]
    plain = promote(published, "1.0.0", "archived", actor="ana")
    assert plain.ended_canary is None and published.history("1.0.0")[-1]["action"] == "set_stage"


def test_promote_decides_on_the_metadata_it_replaces(published: ModelRegistry) -> None:
    """A canary weight set between promote's read and its write is removed too: the decision is
    checked inside the compare-and-swap, and made again when the canary value changed."""
    calls = []

    def expected(current: dict[str, Any]) -> bool:
        calls.append(current.get("canary"))
        if len(calls) == 1:  # another writer sets a weight on 1.0.0 right after promote read it
            published.update_metadata("1.0.0", {"canary": 0.5}, actor="elsewhere")
        return True

    done = promote(published, "1.0.0", "staging", expected=expected)
    assert done.ended_canary == 0.5 and "canary" not in published.get_metadata("1.0.0")
    with pytest.raises(PreconditionFailedError):
        promote(published, "1.0.0", "prod", expected=lambda current: False)
    assert published.get_metadata("1.0.0")["stage"] == "staging"


def test_serving_follows_routing_not_the_newest_version(published: ModelRegistry) -> None:
    published.update_metadata("1.1.0", {"canary": 0.25})
    published.save_model("1.2.0", None, {"stage": "prod", "canary": "0.05"})
    snapshot = published.snapshot()
    prod = serving(published, snapshot, "prod")
    assert prod.stable.version == "1.0.0" and prod.canary.version == "1.1.0" and prod.weight == 0.25
    assert [e.version for e in prod.invalid] == ["1.2.0"] and prod.failed == ()
    assert roles(published, snapshot)["1.2.0"] == [("prod", "not serving")]
    assert ("prod", "canary") in roles(published, snapshot)["1.1.0"]
    assert serving(published, snapshot, "nope").stable is None


@pytest.fixture
def rolled_forward(registry: ModelRegistry) -> ModelRegistry:
    """prod went 1.0.0 → 1.1.0, then 1.0.0 was archived: a rollback moves two versions."""
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "staging"}, actor="ci")
    registry.set_stage("1.1.0", "prod", actor="ci")
    registry.set_stage("1.0.0", "archived", actor="ci")
    return registry


def _edit_after_first_change(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, edit: Any) -> None:
    """Run ``edit`` (a concurrent writer) right after the rollback's first change lands."""
    real = registry.set_stage
    calls: list[str] = []

    def set_stage(version: str, stage: str | None, **kwargs: Any) -> dict[str, Any]:
        written = real(version, stage, **kwargs)
        calls.append(version)
        if len(calls) == 1:
            edit()
        return written

    monkeypatch.setattr(registry, "set_stage", set_stage)


def stages(registry: ModelRegistry) -> dict[str, Any]:
    return {v: registry.get_metadata(v).get("stage") for v in registry.list_versions()}


def test_a_rollback_that_fails_part_way_is_undone(
    rolled_forward: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = rolled_forward
    before, events = stages(registry), len(registry.history())
    _edit_after_first_change(
        registry,
        monkeypatch,
        lambda: registry.update_metadata("1.1.0", {"note": "edited"}, actor="elsewhere"),
    )
    with pytest.raises(PreconditionFailedError, match=r"1\.1\.0"):
        registry.rollback("prod", actor="oncall")
    assert stages(registry) == before  # all or nothing: 1.0.0 went back to archived
    done = [(e["version"], e["actor"], e["after"].get("stage")) for e in registry.history()[events:]]
    assert done == [
        ("1.0.0", "oncall", "prod"),
        ("1.1.0", "elsewhere", None),
        ("1.0.0", "oncall", "archived"),
    ]


def test_a_rollback_that_cannot_be_undone_says_what_stays_changed(
    rolled_forward: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = rolled_forward

    def both_edited() -> None:
        registry.update_metadata("1.1.0", {"note": "edited"}, actor="elsewhere")
        registry.update_metadata("1.0.0", {"note": "edited"}, actor="elsewhere")

    _edit_after_first_change(registry, monkeypatch, both_edited)
    with pytest.raises(RollbackIncompleteError, match=r"1\.0\.0 stays in stage prod") as raised:
        registry.rollback("prod", actor="oncall")
    assert isinstance(raised.value.__cause__, PreconditionFailedError)
    assert stages(registry) == {"1.0.0": "prod", "1.1.0": "prod"}


def test_a_rollback_into_a_stage_no_longer_allowed_changes_nothing(rolled_forward: ModelRegistry) -> None:
    narrowed = ModelRegistry(rolled_forward.root, allowed_stages=["prod", "archived"])
    before, events = stages(narrowed), len(narrowed.history())
    with pytest.raises(InvalidMetadataError, match="staging"):
        narrowed.rollback("prod", actor="oncall")
    assert stages(narrowed) == before and len(narrowed.history()) == events
