"""Deletes killed (``kill -9``, real processes) at random points of a loop: after each kill every
version is listed whole (its model loads) or not at all, each version that is gone has exactly one
``delete`` event and each listed one none, and ``gc`` removes what the dead deleter left; a delete
retried after a killed one (the next deleter goes over every version again) adds no second event.
On a local disk and on S3 (moto). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from helpers_procs import Children, kill_at_random, reaching, seconds_in_child
from servers import RegistryTarget

from flask_model_registry import ModelRegistry, VersionNotFoundError

SEED = int(os.environ.get("FAULT_SEED", "6"))
#: Kills per backend, and how many versions the deleters work through.
KILLS = {"local": 40, "s3": 20}
VERSIONS = {"local": 60, "s3": 30}


def delete_each(root: str, versions: list[str], started: Any) -> None:
    """Delete every one of ``versions`` in turn (those already gone are skipped): the loop killed."""
    registry = ModelRegistry(root)
    registry.list_versions()
    started.set()
    for version in versions:
        try:
            registry.delete_version(version, actor="deleter")
        except VersionNotFoundError:
            continue


def leftovers(target: RegistryTarget) -> list[str]:
    """What a dead deleter may leave: folders in ``.deleted/``, prefixes without ``metadata.json``."""
    found = [f".deleted/{name}" for name in target.stored_names(".deleted")]
    for version in target.stored_names("versions"):
        if "metadata.json" not in target.stored_names("versions", version):
            found.append(version)
    return found


def check_whole_or_gone(target: RegistryTarget, versions: list[str]) -> list[str]:
    """The checks after a kill, by a fresh reader; the versions still listed."""
    reader = target.open(refresh_interval=0, full_refresh=0)
    listed = [v for v in reader.list_versions() if v in versions]
    for version in listed:
        assert reader.get_model(version) == {"version": version}, f"{version} is listed but not whole"
    everything = reader.history()
    for version in versions:
        deletes = [e for e in reader.history(version) if e["action"] == "delete"]
        assert len(deletes) == (0 if version in listed else 1), f"{version}: {len(deletes)} delete events"
        assert [e for e in everything if e["version"] == version and e["action"] == "delete"] == deletes
    return listed


@pytest.mark.parametrize("registry_target", ["local", "s3"], indirect=True)
def test_deletes_killed_at_random_leave_whole_versions_or_none(
    registry_target: RegistryTarget, clean_children: Children, request: pytest.FixtureRequest
) -> None:
    backend = registry_target.backend
    rng = random.Random(f"{SEED}-{request.node.name}")
    registry: ModelRegistry = registry_target.open(refresh_interval=0, full_refresh=0)
    versions = [f"1.{n}.0" for n in range(VERSIONS[backend])]
    for version in versions:
        registry.save_model(version, {"version": version}, actor="trainer")
    registry.save_model("9.0.0", {"version": "9.0.0"}, {"stage": "prod"}, actor="trainer")
    deleter = reaching(registry_target, delete_each)
    window, kills, mid_delete, collected = 0.02, 0, 0, 0
    listed = versions
    while kills < KILLS[backend] and listed:
        delay = rng.uniform(0, window)
        kill_at_random(clean_children, delay, deleter, registry_target.root, versions)
        kills += 1
        where = f"kill {kills}, {delay * 1000:.1f} ms into the deletes (FAULT_SEED={SEED})"
        left = leftovers(registry_target)
        mid_delete += bool(left)
        before, listed = len(listed), check_whole_or_gone(registry_target, versions)
        window *= 0.7 if before - len(listed) > 2 else 1.3  # a kill within the first few deletes
        assert not [name for name in left if name in listed], where
        if left and rng.random() < 0.5:  # the next gc removes them (else the next deleter's retry)
            result = registry.gc()
            collected += len(result["leftovers"])
            assert leftovers(registry_target) == [], f"{where}: gc left {leftovers(registry_target)}"
    seconds_in_child(clean_children, deleter, registry_target.root, versions)  # the last one finishes
    assert check_whole_or_gone(registry_target, versions) == []
    registry.gc()
    assert leftovers(registry_target) == [] and registry.list_versions() == ["9.0.0"]
    print(
        f"\n{backend}: {kills} deleters killed at random ({mid_delete} of them mid-delete, leaving"
        f" leftovers; gc removed {collected}, retried deletes the rest); every version whole or gone,"
        " one delete event each"
    )
