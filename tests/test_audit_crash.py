"""An audited write killed (``kill -9``, real processes) at each step of its event, and at random:
afterwards the version's own trail and the registry-wide trail hold the same events, each change
that landed has its event in both, and the next read or write settles what the dead writer left
(the missing copy linked again, a finished pending file removed). On a local disk and on S3 (moto).

Steps, in order (:data:`helpers_procs.AUDIT_STEPS`): the event written as pending; the change
committed; the version's own copy of the event written; both copies written, the pending file not
yet removed. Run with ``-s`` to see the figures of the random test.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers_procs import (
    AUDIT_STEPS,
    Children,
    change_killed_at,
    kill_at_random,
    publish_and_promote_until_killed,
    reaching,
)
from servers import RegistryTarget

from flask_model_registry import ModelRegistry
from flask_model_registry.trail import unexplained

on_disk_and_s3 = pytest.mark.parametrize("registry_target", ["local", "s3"], indirect=True)
SEED = int(os.environ.get("FAULT_SEED", "6"))
#: How many writers the random test kills, per backend.
KILLS = {"local": 40, "s3": 15}


def pending_files(target: RegistryTarget) -> list[str]:
    """The pending events in storage (hidden temporaries left out)."""
    return [name for name in target.stored_names("audit", ".pending") if not name.startswith(".")]


def check_trails_agree(target: RegistryTarget) -> list[dict[str, Any]]:
    """What a fresh reader sees: each version's own trail is the registry-wide trail's events of that
    version, the trail explains every version's stage, and no pending file is left of an event that
    is final. Returns the registry-wide trail."""
    reader = target.open(refresh_interval=0, full_refresh=0)
    everything = reader.history()
    versions = reader.list_versions()
    assert {e["version"] for e in everything} <= set(versions), "events of versions never published"
    for version in versions:
        own = reader.history(version)
        assert own == [e for e in everything if e["version"] == version], f"the trails of {version} differ"
    assert unexplained(reader.snapshot(), everything) == []
    final = {e["id"] for e in everything}
    assert not [name for name in pending_files(target) if name.partition("@")[0] in final], (
        "finished pending files left"
    )
    return everything


def run_killed(children: Children, target: RegistryTarget, *args: Any) -> None:
    """Run :func:`helpers_procs.change_killed_at` in a child and check it was killed."""
    child = children.start(reaching(target, change_killed_at), target.root, *args)
    child.join(Children.TIMEOUT)
    assert child.exitcode == -signal.SIGKILL, f"the writer ended with {child.exitcode}, not killed"


@on_disk_and_s3
@pytest.mark.parametrize("step", AUDIT_STEPS)
def test_a_writer_killed_at_each_step_leaves_both_trails_whole(
    registry_target: RegistryTarget, clean_children: Children, step: str
) -> None:
    registry = registry_target.open(refresh_interval=0, full_refresh=0)
    registry.save_model("1.0.0", "model", {"stage": "staging"}, actor="ci")
    landed = step != "pending written"
    for change, version in [("publish", "2.0.0"), ("promote", "1.0.0")]:
        run_killed(clean_children, registry_target, step, change, version)
        everything = check_trails_agree(registry_target)
        recorded = [(e["action"], e["actor"]) for e in everything if e["version"] == version]
        killed_event = ("publish" if change == "publish" else "set_stage", "killed")
        assert (killed_event in recorded) == landed, recorded
        if landed:
            assert pending_files(registry_target) == [], "a pending file of a change that landed is left"
    stages = {v: registry.get_metadata(v)["stage"] for v in registry.list_versions()}
    assert stages == ({"1.0.0": "prod", "2.0.0": "staging"} if landed else {"1.0.0": "staging"})
    if not landed:
        registry.save_model("2.0.0", "model", {"stage": "staging"}, actor="retry")  # the retry succeeds
    registry.set_stage("1.0.0", "archived", actor="next")
    everything = check_trails_agree(registry_target)
    assert pending_files(registry_target) == [], "a dead writer's pending file outlived the next write"
    assert everything[-1]["actor"] == "next"


@contextmanager
def naming_the_kill(i: int, delay: float) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        where = f"kill {i}, {delay * 1000:.1f} ms into the writes (FAULT_SEED={SEED})"
        raise AssertionError(f"{where}: {exc}") from exc


@on_disk_and_s3
def test_writers_killed_at_random_leave_both_trails_whole(
    registry_target: RegistryTarget, clean_children: Children, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(f"{SEED}-{request.node.name}")
    registry: ModelRegistry = registry_target.open(refresh_interval=0, full_refresh=0)
    registry.save_model("1.0.0", "model", {"stage": "prod"}, actor="ci")
    write = reaching(registry_target, publish_and_promote_until_killed)
    window, first, events = 0.05, 0, 0
    for i in range(KILLS[registry_target.backend]):
        delay = rng.uniform(0, window)
        finished = kill_at_random(clean_children, delay, write, registry_target.root, first)
        window *= 0.85 if finished else 1.07
        with naming_the_kill(i, delay):
            everything = check_trails_agree(registry_target)
            events = len(everything)
            first = 1 + max(int(v.split(".")[1]) for v in registry.list_versions())
            registry.save_model(f"0.{first}.0", "model", {"stage": "prod"}, actor="parent")
            first += 1
    check_trails_agree(registry_target)
    left = len(pending_files(registry_target))
    print(
        f"\n{registry_target.backend}: {KILLS[registry_target.backend]} writers killed at random; both"
        f" trails agreed after each kill ({events} events at the end); {left} pending files left at the end,"
        " each of a change that never landed (dropped an hour on), none of a change that did"
    )
