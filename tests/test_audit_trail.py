"""Reading the audit trail (``trail``): replay, versions it cannot explain, rollback plans; and the
``flask models audit`` export and ``--check``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_model_registry import FlaskModelRegistry, ModelRegistry
from flask_model_registry.audit import LOG, key_of
from flask_model_registry.audit_cli import parse_since
from flask_model_registry.trail import Rollback, replay, rollback_plan, unexplained

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: What a spreadsheet reads as the start of a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def cli(app: Flask, published: ModelRegistry) -> Callable[..., Result]:
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["models", "audit", *args])


def test_replay_follows_publish_and_patches(published: ModelRegistry) -> None:
    published.update_metadata("1.1.0", {"canary": None, "stage": "prod"}, actor="x")
    states = replay(published.history())
    assert states["1.1.0"]["stage"] == "prod" and "canary" not in states["1.1.0"]
    assert states["1.0.0"]["stage"] == "prod" and states["1.0.0"]["artifact"]["size"] > 0
    assert unexplained(published.snapshot(), published.history()) == []


def test_unexplained_names_hand_edits_and_hand_made_versions(
    published: ModelRegistry, registry_root: Path, by_hand: Callable[..., Path]
) -> None:
    path = registry_root / "versions" / "1.1.0" / "metadata.json"
    edited = {**json.loads(path.read_text()), "stage": "prod", "shadow": True}
    path.write_text(json.dumps(edited))
    by_hand("0.1.0", {"stage": "archived"})
    by_hand("0.2.0", {"owner": "someone"})  # no stage, no flag: nothing to explain
    found = dict(unexplained(published.snapshot(), published.history()))
    assert set(found) == {"0.1.0", "1.1.0"}
    assert found["1.1.0"] == [
        "shadow is True but the trail says unset",
        "stage is 'prod' but the trail says 'staging'",
    ]
    assert found["0.1.0"] == ["stage is 'archived' but the trail says unset"]


def test_rollback_plan_gives_the_stage_back(published: ModelRegistry) -> None:
    assert rollback_plan(published.snapshot(), published.history(), "prod") is None  # only one holder yet
    published.set_stage("1.1.0", "prod")
    published.save_model("1.2.0", None, {"stage": "prod"})  # published straight into prod
    plan = rollback_plan(published.snapshot(), published.history(), "prod")
    assert plan == Rollback("prod", "1.2.0", "1.1.0", {"1.2.0": None})
    published.set_stage("1.1.0", "staging")
    published.set_stage("1.2.0", "staging")
    plan = rollback_plan(published.snapshot(), published.history(), "prod")
    assert plan == Rollback("prod", "1.0.0", "1.2.0", {})  # the one before, literally: an undo
    published.set_stage("1.2.0", "prod")
    plan = rollback_plan(published.snapshot(), published.history(), "prod")
    assert plan == Rollback("prod", "1.2.0", "1.0.0", {"1.2.0": "staging"})
    assert rollback_plan(published.snapshot(), published.history(), "nothing") is None


def test_rollback_skips_earlier_holders_that_are_gone_or_broken(
    published: ModelRegistry, registry_root: Path
) -> None:
    published.set_stage("1.0.0", None)
    published.save_model("0.9.0", None, {"stage": "prod"})
    published.set_stage("1.0.0", "prod")
    published.set_stage("1.1.0", "prod")
    (registry_root / "versions" / "1.0.0" / "metadata.json").write_text("{broken")
    plan = rollback_plan(published.snapshot(), published.history(), "prod")
    assert plan is not None and plan.target == "0.9.0"
    assert plan.demote == {"1.1.0": "staging"}  # broken 1.0.0 is nobody's holder


def test_audit_exports_json_lines(cli: Callable[..., Result], published: ModelRegistry) -> None:
    published.set_stage("1.1.0", "prod", actor="alice")
    result = cli()
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert events == published.history()
    assert [e["action"] for e in events[-1:]] == ["set_stage"]
    only = [json.loads(line) for line in cli("--version", "1.1.0").output.splitlines()]
    assert {e["version"] for e in only} == {"1.1.0"} and len(only) == 2


def test_audit_exports_csv(cli: Callable[..., Result], published: ModelRegistry) -> None:
    published.set_stage("1.1.0", "prod", actor="alice, the reviewer")
    rows = list(csv.DictReader(io.StringIO(cli("--format", "csv").output)))
    assert len(rows) == 4 and rows[-1]["actor"] == "alice, the reviewer"
    assert json.loads(rows[-1]["before"]) == {"stage": "staging"}
    assert list(rows[0]) == ["id", "time", "action", "version", "actor", "before", "after"]


def test_audit_since(cli: Callable[..., Result], published: ModelRegistry) -> None:
    assert len(cli("--since", "1h").output.splitlines()) == 3
    assert cli("--since", "2999-01-01").output == ""
    hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert len(cli("--since", hour_ago).output.splitlines()) == 3
    bad = cli("--since", "yesterday-ish")
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


@pytest.mark.parametrize("args", [("--version", "not-a-version"), ("--version", "9.9.9")])
def test_audit_bad_version(cli: Callable[..., Result], args: Any) -> None:
    result = cli(*args)
    assert result.exit_code == 1 and result.output.startswith("Error: ")


def test_audit_check(cli: Callable[..., Result], registry_root: Path) -> None:
    ok = cli("--check")
    assert ok.exit_code == 0 and "explains" in ok.output
    path = registry_root / "versions" / "1.0.0" / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "stage": "archived"}))
    bad = cli("--check")
    assert bad.exit_code == 1
    assert "1.0.0: stage is 'archived' but the trail says 'prod'" in bad.output
    assert "1.1.0" not in bad.output
    assert cli("--check", "--version", "1.1.0").exit_code == 0


@pytest.mark.parametrize("copy", ["own", "registry-wide"])
def test_audit_check_compares_both_copies_of_every_event(
    cli: Callable[..., Result], published: ModelRegistry, registry_root: Path, copy: str
) -> None:
    """An event deleted from the version's own trail or from the registry-wide one is named by
    ``--check``, with or without ``--version``, though the other copy still explains the stage."""
    published.set_stage("1.1.0", "prod", actor="alice")
    event = published.history("1.1.0")[-1]
    folder = "1.1.0" if copy == "own" else LOG
    (registry_root / "audit" / folder / f"{key_of(event['id'])}.json").unlink()
    for args in [("--check",), ("--check", "--version", "1.1.0")]:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        missing = "the version's own trail" if copy == "own" else "the registry-wide trail"
        assert f"1.1.0: event {event['id']} (set_stage by alice) is missing from {missing}" in result.output
        assert "1.0.0" not in result.output
    assert cli("--check", "--version", "1.0.0").exit_code == 0


@pytest.mark.parametrize("since", ["99999999999d", "9999999d", "99999999999999999999999w", "1" * 5000 + "s"])
def test_audit_since_too_far_back_is_a_usage_error(cli: Callable[..., Result], since: str) -> None:
    result = cli("--since", since)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "--since" in result.output and "too far back" in result.output


#: What ``--since`` may be given: any text, ages of any size, times in any time zone or none.
SINCE = st.one_of(
    st.text(),
    st.builds("{}{}".format, st.integers(0, 10**30), st.sampled_from("smhdw")),
    st.datetimes(timezones=st.none() | st.timezones()).map(datetime.isoformat),
)


@fuzz
@given(SINCE)
def test_parse_since_answers_a_time_or_a_usage_error(text: str) -> None:
    """Any ``--since``: an aware time that compares with any event's, or ``click.BadParameter``."""
    try:
        when = parse_since(text)
    except click.BadParameter:
        return
    assert when.utcoffset() == timedelta(0), "not in UTC"


@fuzz
@given(SINCE)
def test_audit_since_with_any_time_never_fails(
    cli: Callable[..., Result], published: ModelRegistry, since: str
) -> None:
    result = cli("--since", since)
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@pytest.mark.parametrize(
    "time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "yesterday", 12, None, "2026-13-40"]
)
def test_audit_since_skips_events_whose_time_cannot_be_compared(
    cli: Callable[..., Result], published: ModelRegistry, registry_root: Path, time: Any
) -> None:
    """An event written by hand or by an earlier release with any ``time`` costs only itself."""
    hand_made = {"time": time, "action": "set_stage", "version": "1.0.0", "before": {}, "after": {}}
    old_event = registry_root / "audit" / "1.0.0" / "01700000000000000000-000000000000.json"
    old_event.write_text(json.dumps(hand_made))
    for since in ("1h", "0001-01-02", "9999-12-31"):
        result = cli("--since", since, "--format", "csv")
        assert result.exit_code == 0, (since, result.output)
    kept = [e["time"] for e in map(json.loads, cli("--since", "0001-01-02").output.splitlines())]
    assert kept.count(time) == (time == "9999-12-31T23:59:59-14:00")


def test_audit_csv_escapes_formulas_in_every_column(
    cli: Callable[..., Result], published: ModelRegistry, registry_root: Path
) -> None:
    """Cells that a spreadsheet would run as a formula start with a single quote (OWASP), in every
    column; an event of an earlier release, read as it is, carries one in each field."""
    published.set_stage("1.1.0", "prod", actor='=HYPERLINK("http://evil.example","x")')
    old_id = "01700000000000000000-000000000000"
    hand_made = {
        "time": "-2+3",
        "action": "@SUM(1)",
        "version": "+1",
        "actor": "\tx",
        "before": -1,
        "after": "\r=1",
    }
    (registry_root / "audit" / "1.0.0" / f"{old_id}.json").write_text(json.dumps(hand_made))
    rows = list(csv.DictReader(io.StringIO(cli("--format", "csv").output)))
    assert rows[0] == {"id": old_id, **{k: "'" + str(v) for k, v in hand_made.items()}}
    assert rows[-1]["actor"] == '\'=HYPERLINK("http://evil.example","x")'
    cells = [cell for row in rows for cell in row.values()]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert json.loads(cli().output.splitlines()[0])["actor"] == "\tx"  # JSON lines: as it is


@fuzz
@given(actor=st.text(min_size=1, max_size=30))
def test_no_csv_cell_starts_a_formula(
    cli: Callable[..., Result], published: ModelRegistry, actor: str
) -> None:
    published.update_metadata("1.0.0", {"n": len(published.history("1.0.0"))}, actor=actor)
    rows = list(csv.reader(io.StringIO(cli("--format", "csv", "--version", "1.0.0").output, newline="")))
    assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]
    shown = rows[-1][4]
    assert shown == ("'" + actor if actor.startswith(FORMULA_STARTS) else actor)


def test_audit_of_a_named_model(published: ModelRegistry, registry_root: Path, tmp_path: Path) -> None:
    named = Flask("named_audit")  # not the `app` fixture: pytest-flask pushes its context
    named.config.update(
        MODEL_REGISTRY_ROOT=str(registry_root),
        MODEL_REGISTRY_MODELS={"fraud": str(tmp_path / "f")},
    )
    FlaskModelRegistry(named)
    named.registries["fraud"].save_model("3.0.0", None, {"stage": "prod"}, actor="fraud-job")
    runner = named.test_cli_runner()
    result = runner.invoke(args=["models", "audit", "--model", "fraud"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["actor"] == "fraud-job"
    assert runner.invoke(args=["models", "audit", "--model", "fraud", "--check"]).exit_code == 0
    unknown = runner.invoke(args=["models", "audit", "--model", "nope"])
    assert unknown.exit_code == 1 and "nope" in unknown.output
