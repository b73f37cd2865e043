"""``flask_model_registry.rollout``: what each stage serves, and a promotion that ends a canary."""

from __future__ import annotations

from typing import Any

import pytest

from flask_model_registry import ModelRegistry, PreconditionFailedError
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
