"""What was live when: ``get_latest_version(stage, as_of=)``, ``GET <prefix>/latest?as_of=``,
``timeline(stage)`` and ``rollback(stage)``, from the audit trail and ``created_at``."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers_procs import Children, promote_as, with_clock_off
from servers import RegistryTarget

from flask_model_registry import (
    InvalidArgumentError,
    ModelRegistry,
    RegistryError,
    VersionNotFoundError,
)
from flask_model_registry.cli import models_cli
from flask_model_registry.timeline import parse_as_of

UTC = timezone.utc


def now() -> datetime:
    """This moment, as a caller would pass it to ``as_of``."""
    return datetime.now(UTC)


def holders(registry: ModelRegistry, stage: str) -> list[tuple[str, str | None]]:
    """Each period of ``stage``'s timeline as (version, actor)."""
    return [(p["version"], p["actor"]) for p in registry.timeline(stage)]


@pytest.fixture
def moments(registry: ModelRegistry) -> dict[str, datetime]:
    """A registry with a real history, and a moment between each two of its events:
    1.0.0 to prod, 1.1.0 to staging, 1.1.0 to prod, 1.1.0 demoted, 2.0.0-rc.1 to prod."""
    seen = {"before": now()}
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    seen["1.0.0 in prod"] = now()
    registry.save_model("1.1.0", "b", {"stage": "staging"}, actor="ci")
    seen["1.1.0 in staging"] = now()
    registry.set_stage("1.1.0", "prod", actor="alice")
    seen["1.1.0 in prod"] = now()
    registry.set_stage("1.1.0", None, actor="bob")
    seen["1.1.0 demoted"] = now()
    registry.save_model("2.0.0-rc.1", "c", {"stage": "prod"}, actor="ci")
    seen["rc in prod"] = now()
    return seen


def test_as_of_between_real_events(registry: ModelRegistry, moments: dict[str, datetime]) -> None:
    """Each moment between two events answers what get_latest_version answered then."""
    prod = {
        name: registry.get_latest_version("prod", as_of=when)
        for name, when in moments.items()
        if name != "before"
    }
    assert prod == {
        "1.0.0 in prod": "1.0.0",
        "1.1.0 in staging": "1.0.0",
        "1.1.0 in prod": "1.1.0",
        "1.1.0 demoted": "1.0.0",
        "rc in prod": "1.0.0",  # a prerelease serves only when asked for
    }
    assert (
        registry.get_latest_version("prod", include_prerelease=True, as_of=moments["rc in prod"])
        == "2.0.0-rc.1"
    )
    assert registry.get_latest_version("staging", as_of=moments["1.0.0 in prod"]) is None
    assert registry.get_latest_version("staging", as_of=moments["1.1.0 in staging"]) == "1.1.0"
    assert registry.get_latest_version(as_of=moments["1.0.0 in prod"]) == "1.0.0"
    assert registry.get_latest_version(as_of=moments["1.1.0 demoted"]) == "1.1.0"
    an_hour_on = moments["1.1.0 in prod"].astimezone(timezone(timedelta(hours=1)))
    assert registry.get_latest_version("prod", as_of=an_hour_on) == "1.1.0"  # any offset: the same moment
    with pytest.raises(VersionNotFoundError, match="nothing is known"):
        registry.get_latest_version("prod", as_of=moments["before"])


def test_a_stage_that_is_not_a_string_held_nothing(
    registry: ModelRegistry, moments: dict[str, datetime]
) -> None:
    assert registry.get_latest_version(["prod"], as_of=moments["1.0.0 in prod"]) is None  # type: ignore[arg-type]
    with pytest.raises(VersionNotFoundError):
        registry.get_latest_version(["prod"], as_of=moments["before"])  # type: ignore[arg-type]


def test_as_of_must_be_an_aware_datetime(registry: ModelRegistry, moments: dict[str, datetime]) -> None:
    with pytest.raises(InvalidArgumentError, match="naive"):
        registry.get_latest_version("prod", as_of=datetime.now())
    with pytest.raises(InvalidArgumentError, match="datetime"):
        registry.get_latest_version("prod", as_of="2026-01-01T00:00:00Z")  # type: ignore[arg-type]


def test_timeline_lists_each_holder_with_who_began_it(
    registry: ModelRegistry, moments: dict[str, datetime]
) -> None:
    assert holders(registry, "prod") == [("1.0.0", "ci"), ("1.1.0", "alice"), ("1.0.0", "bob")]
    periods = registry.timeline("prod")
    assert periods[-1]["until"] is None
    for earlier, later in itertools.pairwise(periods):
        assert earlier["until"] == later["from"] and earlier["from"] < earlier["until"]
    assert moments["1.1.0 in staging"] < periods[1]["from"] < moments["1.1.0 in prod"]
    assert all(set(p) == {"version", "from", "until", "actor"} for p in periods)
    assert all(p["from"].tzinfo is not None and (p["until"] is None or p["until"].tzinfo) for p in periods)
    staging = registry.timeline("staging")
    assert [(s["version"], s["until"] is not None) for s in staging] == [("1.1.0", True)]
    assert registry.timeline("nowhere") == []


def test_answers_are_cached_per_trail_state(registry: ModelRegistry, moments: dict[str, datetime]) -> None:
    past = registry._past.past()
    assert registry._past.past() is past
    registry.set_stage("1.0.0", "archived", actor="ci")
    assert registry._past.past() is not past
    assert registry.get_latest_version("prod", as_of=now()) is None  # a known time, the stage empty


def test_a_clock_skewed_hosts_change_counts_in_the_trails_order(
    registry: ModelRegistry, registry_root: Path, clean_children: Children
) -> None:
    """A host whose clock is an hour slow promotes 1.1.0 after 2.0.0 left prod: its event says an
    hour ago, but it counts where the trail orders it, right after the event it follows (its id),
    never before the changes that happened earlier."""
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "staging"}, actor="ci")
    before_2 = now()
    registry.save_model("2.0.0", "c", {"stage": "prod"}, actor="ci")
    while_2 = now()
    registry.set_stage("2.0.0", "staging", actor="ci")
    promote_slowly = functools.partial(with_clock_off, -3600.0, promote_as)
    clean_children.run(promote_slowly, registry_root, "1.1.0", "prod", "slow")
    after = now()
    events = registry.history()
    assert events[-1]["actor"] == "slow" and events[-1]["time"] < events[0]["time"], "the clock was not slow"
    assert registry.get_latest_version("prod", as_of=before_2) == "1.0.0"
    assert registry.get_latest_version("prod", as_of=while_2) == "2.0.0"
    assert registry.get_latest_version("prod", as_of=after) == "1.1.0"
    assert holders(registry, "prod") == [("1.0.0", "ci"), ("2.0.0", "ci"), ("1.0.0", "ci"), ("1.1.0", "slow")]
    periods = registry.timeline("prod")
    demoted, slow = periods[2]["from"], periods[3]["from"]
    assert while_2 < demoted <= slow < after  # not an hour back, where its own clock put it


def test_a_deleted_version_leaves_every_stage_when_it_goes(registry: ModelRegistry) -> None:
    """Its delete event (before: the last metadata, after: {}) ends its period in the stage it
    was in (a retired one, once prod has a newer holder: nothing protects it), and what held a
    stage then still answers."""
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "prod", "auc": 0.9}, actor="ci")
    while_held = now()
    registry.set_stage("1.1.0", "archived", actor="ops")
    registry.save_model("1.2.0", "c", {"stage": "prod"}, actor="ci")
    archived = now()
    registry.delete_version("1.1.0", actor="ops")
    gone = now()
    assert registry.list_versions() == ["1.0.0", "1.2.0"]
    assert registry.history("1.1.0")[-1]["action"] == "delete"
    assert registry.get_latest_version("prod", as_of=while_held) == "1.1.0"
    assert registry.get_latest_version("prod", as_of=gone) == "1.2.0"
    assert holders(registry, "prod") == [("1.0.0", "ci"), ("1.1.0", "ci"), ("1.0.0", "ops"), ("1.2.0", "ci")]
    assert registry.get_latest_version("archived", as_of=archived) == "1.1.0"
    assert registry.get_latest_version("archived", as_of=gone) is None
    [period] = registry.timeline("archived")
    assert period["version"] == "1.1.0" and archived < period["until"] < gone


def test_hand_made_versions_count_from_created_at_or_their_file_time(
    registry: ModelRegistry, by_hand: Callable[..., Path]
) -> None:
    """A version no event brought in is there from its created_at (else its metadata.json's time),
    in the stage its first recorded change started from."""
    by_hand("1.0.0", {"stage": "prod", "created_at": "2026-01-01T00:00:00Z"})
    folder = by_hand("0.9.0", {"stage": "prod"})
    os.utime(folder / "metadata.json", (1_750_000_000, 1_750_000_000))  # 2025-06-15
    registry.set_stage("1.0.0", "staging", actor="alice")
    assert registry.get_latest_version("prod", as_of=datetime(2025, 12, 1, tzinfo=UTC)) == "0.9.0"
    assert registry.get_latest_version("prod", as_of=datetime(2026, 6, 1, tzinfo=UTC)) == "1.0.0"
    assert registry.get_latest_version("prod", as_of=now()) == "0.9.0"
    with pytest.raises(VersionNotFoundError):
        registry.get_latest_version("prod", as_of=datetime(2025, 1, 1, tzinfo=UTC))
    periods = registry.timeline("prod")
    assert [(p["version"], p["from"], p["actor"]) for p in periods[:2]] == [
        ("0.9.0", datetime.fromtimestamp(1_750_000_000, UTC), None),
        ("1.0.0", datetime(2026, 1, 1, tzinfo=UTC), None),
    ]
    assert [(p["version"], p["actor"]) for p in periods[2:]] == [("0.9.0", "alice")]


def test_object_storage_follows(registry_target: RegistryTarget) -> None:
    """On every storage as on disk: a hand-made version without created_at counts from its object's
    time, a deleted one leaves the stage when its delete event says."""
    fs = registry_target.filesystem
    fs.pipe(registry_target.path("versions", "0.9.0", "model.pkl"), b"hand-made")
    fs.pipe(registry_target.path("versions", "0.9.0", "metadata.json"), b'{"stage": "prod"}')
    made = now()
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    while_1 = now()
    registry.set_stage("1.0.0", "archived", actor="ops")
    for version in ("1.1.0", "1.2.0"):  # prod's rollback target is no longer 1.0.0
        registry.save_model(version, "b", {"stage": "prod"}, actor="ci")
    registry.delete_version("1.0.0", actor="ops")
    reader = registry_target.open()
    assert reader.list_versions() == ["0.9.0", "1.1.0", "1.2.0"]
    assert reader.get_latest_version("prod", as_of=while_1) == "1.0.0"
    assert reader.get_latest_version("prod", as_of=now()) == "1.2.0"
    with pytest.raises(VersionNotFoundError):
        reader.get_latest_version("prod", as_of=made - timedelta(minutes=5))
    assert holders(reader, "prod") == [
        ("0.9.0", None),
        ("1.0.0", "ci"),
        ("0.9.0", "ops"),
        ("1.1.0", "ci"),
        ("1.2.0", "ci"),
    ]
    assert abs(reader.timeline("prod")[0]["from"] - made) < timedelta(seconds=5)
    assert [p["until"] is not None for p in reader.timeline("archived")] == [True]  # the delete ended it


# rollback -----------------------------------------------------------------------------------------


def test_rollback_twice_undoes_it(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "staging"}, actor="ci")
    registry.set_stage("1.1.0", "prod", actor="ci")
    events = len(registry.history())
    done = registry.rollback("prod", actor="oncall")
    assert done == {"stage": "prod", "from": "1.1.0", "to": "1.0.0", "demoted": {"1.1.0": "staging"}}
    assert registry.get_latest_version("prod") == "1.0.0"
    changed = registry.history()[events:]
    assert [(e["version"], e["actor"]) for e in changed] == [("1.1.0", "oncall")]  # 1.0.0 was in prod already
    registry.rollback("prod", actor="oncall")
    assert registry.get_latest_version("prod") == "1.1.0"
    assert {v: registry.get_metadata(v)["stage"] for v in registry.list_versions()} == {
        "1.0.0": "prod",
        "1.1.0": "prod",
    }


def test_rollback_takes_the_actor_by_position(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "prod"}, actor="ci")
    registry.rollback("prod", "oncall")  # rollback(stage, actor=None)
    assert registry.get_latest_version("prod") == "1.0.0"
    assert registry.history("1.1.0")[-1]["actor"] == "oncall"


def test_rollback_with_nothing_to_go_back_to_is_an_error(registry: ModelRegistry) -> None:
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    with pytest.raises(RegistryError, match="no earlier holder"):
        registry.rollback("prod")
    with pytest.raises(RegistryError):
        registry.rollback("staging")


# HTTP ---------------------------------------------------------------------------------------------


def test_http_latest_as_of(app: Flask, client: Any, moments: dict[str, datetime], json_error: Any) -> None:
    when = moments["1.1.0 in prod"]
    answer = client.get("/models/latest", query_string={"stage": "prod", "as_of": when.isoformat()})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body == {**client.get("/models/1.1.0").get_json(), "as_of": when.isoformat()}
    assert answer.headers["ETag"]
    spaced = when.isoformat().replace("+", " ")  # a "+" a client forgot to encode
    assert client.get(f"/models/latest?stage=prod&as_of={spaced}").get_json()["version"] == "1.1.0"
    zulu = moments["1.1.0 in staging"].isoformat().replace("+00:00", "Z")
    assert client.get(f"/models/latest?stage=staging&as_of={zulu}").get_json()["version"] == "1.1.0"


@pytest.mark.parametrize(
    "as_of",
    [
        "2026-01-01T00:00:00",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-01",
        "",
        "2026-01-01T25:00:00+00:00",
    ],
)
def test_http_as_of_that_is_naive_or_malformed_is_400(client: Any, json_error: Any, as_of: str) -> None:
    response = client.get("/models/latest", query_string={"stage": "prod", "as_of": as_of})
    assert response.status_code == 400
    assert "as_of" in json_error(response)["message"]


def test_http_as_of_404s(client: Any, moments: dict[str, datetime], json_error: Any) -> None:
    early = client.get("/models/latest", query_string={"stage": "prod", "as_of": "2000-01-01T00:00:00Z"})
    assert early.status_code == 404 and "nothing is known" in json_error(early)["message"]
    when = moments["1.0.0 in prod"].isoformat()
    empty = client.get("/models/latest", query_string={"stage": "staging", "as_of": when})
    assert empty.status_code == 404 and "no version in stage 'staging'" in json_error(empty)["message"]


def test_http_as_of_answers_a_deleted_version_with_its_last_metadata(
    registry: ModelRegistry, client: Any
) -> None:
    registry.save_model("1.0.0", "a", {"stage": "prod", "auc": 0.8}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "prod", "auc": 0.9}, actor="ci")
    when = now()
    registry.set_stage("1.1.0", "archived", actor="ops")
    registry.save_model("1.2.0", "c", {"stage": "prod"}, actor="ci")
    metadata = registry.get_metadata("1.1.0")
    registry.delete_version("1.1.0", actor="ops")
    assert client.get("/models/1.1.0").status_code == 404
    body = client.get("/models/latest", query_string={"stage": "prod", "as_of": when.isoformat()}).get_json()
    assert body == {"version": "1.1.0", "metadata": metadata, "as_of": when.isoformat()}


def test_http_as_of_answers_a_version_removed_by_hand_with_what_its_events_left(
    registry: ModelRegistry, registry_root: Path, client: Any
) -> None:
    registry.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    registry.update_metadata("1.0.0", {"owner": "ml"}, actor="ci")
    when = now()
    metadata = registry.get_metadata("1.0.0")
    shutil.rmtree(registry_root / "versions" / "1.0.0")  # no delete event: the trail still says prod
    body = client.get("/models/latest", query_string={"stage": "prod", "as_of": when.isoformat()}).get_json()
    assert body == {"version": "1.0.0", "metadata": metadata, "as_of": when.isoformat()}


@pytest.fixture
def app_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Named models for the tests that ask for them (``named_models`` among their fixtures)."""
    return request.getfixturevalue("named_models") if "named_models" in request.fixturenames else {}


def test_named_models_answer_as_of_too(app: Flask, client: Any, named_models: dict[str, Any]) -> None:
    fraud = app.registries["fraud"]  # type: ignore[attr-defined]
    fraud.save_model("1.0.0", "a", {"stage": "prod"}, actor="ci")
    when = now()
    fraud.save_model("2.0.0", "b", {"stage": "prod"}, actor="ci")
    answer = client.get("/models/fraud/latest", query_string={"stage": "prod", "as_of": when.isoformat()})
    assert answer.status_code == 200 and answer.get_json()["version"] == "1.0.0"
    assert client.get("/models/latest", query_string={"as_of": when.isoformat()}).status_code == 404
    runner = app.test_cli_runner()
    result = runner.invoke(models_cli, ["timeline", "prod", "--model", "fraud", "--json"])
    assert result.exit_code == 0, result.output
    assert [p["version"] for p in json.loads(result.output)] == ["1.0.0", "2.0.0"]


# CLI ----------------------------------------------------------------------------------------------


def test_cli_timeline_and_rollback(app: Flask, registry: ModelRegistry, moments: dict[str, datetime]) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(models_cli, ["timeline", "prod"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["VERSION", "FROM", "UNTIL", "BY"]
    assert [line.split()[0] for line in lines[1:]] == ["1.0.0", "1.1.0", "1.0.0"]
    assert lines[-1].split()[2:] == ["now", "bob"]
    as_json = json.loads(runner.invoke(models_cli, ["timeline", "prod", "--json"]).output)
    assert as_json[-1]["until"] is None and parse_as_of(as_json[0]["from"]) < parse_as_of(as_json[0]["until"])
    assert (
        runner.invoke(models_cli, ["timeline", "nowhere"]).output == "stage 'nowhere' has held no version\n"
    )
    result = runner.invoke(models_cli, ["rollback", "prod", "--actor", "oncall"])
    assert result.exit_code == 0, result.output
    assert result.output == "stage 'prod' rolled back from 1.0.0 to 1.1.0\n"
    assert registry.get_latest_version("prod") == "1.1.0"
    assert registry.history()[-1]["actor"] == "oncall"
    failed = runner.invoke(models_cli, ["rollback", "staging"])
    assert failed.exit_code == 1 and failed.output.count("\n") == 1 and failed.output.startswith("Error: ")
