"""``flask models …``: through Flask's CLI runner, and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from flask_model_registry import FlaskModelRegistry, ModelRegistry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(app: Flask, published: ModelRegistry):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["models", *args])


def test_list_prints_a_table(cli):
    result = cli("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["VERSION", "STAGE", "CREATED", "SIGNATURE", "FLAGS"]
    assert [line.split()[0] for line in lines[1:]] == ["1.0.0", "1.1.0", "2.0.0-rc.1"]
    assert "canary" in lines[2] and "prod" in lines[1]


def test_list_json_and_stage(cli):
    rows = json.loads(cli("list", "--json", "--stage", "staging").output)
    assert [r["version"] for r in rows] == ["1.1.0"] and rows[0]["metadata"]["canary"] is True


def test_list_shows_broken_versions(cli, registry_root: Path):
    (registry_root / "versions" / "1.0.0" / "metadata.json").write_text("{oops")
    result = cli("list")
    assert result.exit_code == 0
    assert "ERROR: metadata.json is not valid JSON" in result.output


def test_latest(cli):
    assert cli("latest").output.strip() == "1.1.0"
    assert cli("latest", "--prerelease").output.strip() == "2.0.0-rc.1"
    assert cli("latest", "--stage", "prod").output.strip() == "1.0.0"
    missing = cli("latest", "--stage", "archived")
    assert missing.exit_code == 1 and "no version in stage 'archived'" in missing.output


def test_show(cli):
    assert json.loads(cli("show", "1.0.0").output)["auc"] == 0.81
    bad = cli("show", "../etc")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.output.startswith("Error: '../etc' is not a valid version")


def test_promote_records_history(cli, published: ModelRegistry):
    result = cli("promote", "1.1.0", "prod")
    assert result.exit_code == 0, result.output
    assert published.get_latest_version("prod") == "1.1.0"
    events = json.loads(cli("history", "1.1.0", "--json").output)
    assert events[-1]["after"] == {"stage": "prod"}  # and 1.1.0's canary flag ended with it
    assert events[-1]["before"] == {"stage": "staging", "canary": True}
    assert cli("promote", "1.1.0", "no spaces").exit_code == 1
    assert cli("promote", "1.0.0", "staging").exit_code == 0
    assert published.history("1.0.0")[-1]["action"] == "set_stage"


def test_verify_fails_on_a_tampered_artefact(cli, registry_root: Path):
    assert cli("verify").exit_code == 0
    with open(registry_root / "versions" / "1.1.0" / "model.pkl", "ab") as f:
        f.write(b"tampered")
    result = cli("verify")
    assert result.exit_code == 1
    assert "FAIL  1.1.0" in result.output and "ok    1.0.0" in result.output


def test_cli_as_a_real_subprocess(published: ModelRegistry, registry_root: Path):
    env = {**os.environ, "MODEL_REGISTRY_ROOT": str(registry_root), "FLASK_APP": "example_app:create_app"}

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flask", *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    latest = flask("models", "latest", "--stage", "staging")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.strip() == "1.1.0"
    missing = flask("models", "show", "7.7.7")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: version 7.7.7 not found"


# robustness and the commands of issue 11 ----------------------------------------------------------


def test_verify_checks_every_version_and_reports_each(cli, registry_root: Path, by_hand):
    versions = registry_root / "versions"
    (versions / "1.0.0" / "model.pkl").unlink()
    (versions / "1.0.0" / "model.pkl").mkdir()  # a folder where the artefact should be
    metadata = json.loads((versions / "2.0.0-rc.1" / "metadata.json").read_text())
    metadata["artifact"]["sha256"] = "\u00e9" * 64  # recorded sha256 not ASCII
    (versions / "2.0.0-rc.1" / "metadata.json").write_text(json.dumps(metadata))
    by_hand("3.0.0", {"owner": "ml"}, "model")  # fine: no sha256 recorded
    (versions / "4.0.0").mkdir()
    (versions / "4.0.0" / "metadata.json").write_text("{broken")
    result = cli("verify")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = {
        line.split()[1].rstrip(":"): line
        for line in result.output.splitlines()
        if line.startswith(("FAIL", "ok"))
    }
    assert set(lines) == {"1.0.0", "1.1.0", "2.0.0-rc.1", "3.0.0", "4.0.0"}
    assert lines["1.0.0"].startswith("FAIL") and "not a regular file" in lines["1.0.0"]
    assert lines["1.1.0"].startswith("ok")
    assert "FAIL  2.0.0-rc.1: version 2.0.0-rc.1: recorded sha256 is not 64 hex digits" in result.output
    assert lines["4.0.0"].startswith("FAIL") and "corrupt" in lines["4.0.0"]
    assert "not checked" in lines["3.0.0"]
    report = json.loads(cli("verify", "--json").output.split("\nError:")[0])
    assert [(r["version"], r["ok"]) for r in report][2:] == [
        ("2.0.0-rc.1", False),
        ("3.0.0", True),
        ("4.0.0", False),
    ]


def test_verify_reports_an_unreadable_artefact(cli, registry_root: Path, monkeypatch):
    """As an artefact without read permission answers (the tests may run as root, who reads anyway)."""
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith("1.1.0/model.pkl"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("os.open", refusing_open)
    result = cli("verify")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "ok    1.0.0" in result.output and "FAIL  1.1.0: " in result.output
    assert "Permission denied" in result.output or "cannot be read" in result.output


def test_a_read_only_registry_is_one_line_naming_the_path(cli, registry_root: Path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(registry_root / ".locks" / "1.1.0.lock"))

    monkeypatch.setattr("os.makedirs", refuse)
    for args in (("promote", "1.1.0", "prod"), ("demote", "1.1.0"), ("set", "1.1.0", "a=1")):
        result = cli(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.strip().splitlines() == [
            f"Error: Permission denied: {registry_root}/.locks/1.1.0.lock"
        ]


def test_stage_options_are_validated(cli):
    for args in (("list", "--stage", "bad stage"), ("latest", "--stage", "x" * 100)):
        result = cli(*args)
        assert result.exit_code == 2 and "stage" in result.output and "Traceback" not in result.output


def test_writes_take_an_actor(cli, published: ModelRegistry):
    assert cli("promote", "1.1.0", "prod", "--actor", "ana").exit_code == 0
    assert published.history("1.1.0")[-1]["actor"] == "ana"


def test_demote_takes_a_version_out_of_its_stage(cli, published: ModelRegistry):
    result = cli("demote", "1.0.0", "--actor", "bo")
    assert result.exit_code == 0, result.output
    assert "stage" not in published.get_metadata("1.0.0")
    assert published.get_latest_version("prod") is None
    assert published.history("1.0.0")[-1]["before"] == {"stage": "prod"}


def test_set_takes_json_values_and_removes_empty_ones(cli, published: ModelRegistry):
    result = cli(
        "set", "1.1.0", "auc=0.93", "notes=looks good", 'tags=["a", "b"]', "canary=", "--actor", "ana"
    )
    assert result.exit_code == 0, result.output
    metadata = published.get_metadata("1.1.0")
    assert metadata["auc"] == 0.93 and metadata["notes"] == "looks good" and metadata["tags"] == ["a", "b"]
    assert "canary" not in metadata
    assert json.loads(result.output) == metadata
    assert published.history("1.1.0")[-1]["actor"] == "ana"
    assert cli("set", "1.1.0", "no-equals-sign").exit_code == 2
    reserved = cli("set", "1.1.0", "version=9.9.9")
    assert reserved.exit_code == 1 and "written by the registry" in reserved.output


def test_every_reading_command_takes_json_in_the_apis_shapes(app, cli, registry_root: Path):
    (registry_root / "versions" / "1.0.0" / "metadata.json").write_text("{oops")
    client = app.test_client()
    assert json.loads(cli("list", "--json").output) == client.get("/models").get_json()
    assert json.loads(cli("latest", "--json").output) == client.get("/models/latest").get_json()
    assert json.loads(cli("show", "1.1.0", "--json").output) == client.get("/models/1.1.0").get_json()
    assert (
        json.loads(cli("history", "1.1.0", "--json").output) == client.get("/models/1.1.0/history").get_json()
    )
    assert "error" not in json.loads(cli("list", "--json").output)[1]
    assert "metadata" not in json.loads(cli("list", "--json").output)[0]
    assert "publish" in cli("history", "1.1.0").output


def test_latest_on_a_broken_version_exits_1_with_the_reason(cli, registry_root: Path):
    (registry_root / "versions" / "1.1.0" / "metadata.json").write_text("{oops")
    result = cli("latest")
    assert result.exit_code == 1
    assert "1.1.0" in result.output and "not valid JSON" in result.output


def test_a_missing_root_is_exit_1_naming_the_path(tmp_path: Path):
    missing = tmp_path / "typo"
    app = Flask("typo")
    app.config["MODEL_REGISTRY_ROOT"] = str(missing)
    FlaskModelRegistry(app)
    runner = app.test_cli_runner()
    for args in (["list"], ["latest"], ["verify"], ["list", "--json"]):
        result = runner.invoke(args=["models", *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("Error: the registry root folder does not exist")
        assert str(missing) in result.output
    ModelRegistry(missing).save_model("1.0.0", "model")  # save_model creates it
    assert runner.invoke(args=["models", "latest"]).output.strip() == "1.0.0"


def test_list_shows_the_canary_weight(cli, published: ModelRegistry):
    published.update_metadata("1.0.0", {"canary": 0.3, "shadow": True})
    published.update_metadata("2.0.0-rc.1", {"canary": "yes"})
    lines = {line.split()[0]: line for line in cli("list").output.splitlines()[1:]}
    assert lines["1.0.0"].endswith("canary 0.3, shadow")
    assert lines["1.1.0"].endswith("canary")  # true: the default weight
    assert lines["2.0.0-rc.1"].endswith('canary "yes" (invalid: not routed)')


def test_promoting_a_canary_ends_its_split_in_one_event(cli, published: ModelRegistry):
    published.update_metadata("1.1.0", {"canary": 0.3})
    events = len(published.history("1.1.0"))
    result = cli("promote", "1.1.0", "prod", "--actor", "ana")
    assert result.exit_code == 0, result.output
    assert "its canary value 0.3 was removed" in result.output
    assert "canary" not in published.get_metadata("1.1.0")
    history = published.history("1.1.0")
    assert len(history) == events + 1 and history[-1]["actor"] == "ana"
    assert history[-1]["before"] == {"stage": "staging", "canary": 0.3}


def test_no_help_shows_restructuredtext_markup(app: Flask, cli):
    """Docstrings that click shows as help must read as plain text: no ``literal`` backtick pairs, no
    Sphinx roles, on ``flask models --help`` and every subcommand's ``--help``."""
    for argv in [[], *([name] for name in app.cli.commands["models"].commands)]:
        result = cli(*argv, "--help")
        assert result.exit_code == 0, result.output
        markup = [mark for mark in ("``", ":func:", ":meth:", ":class:") if mark in result.output]
        assert not markup, (argv, result.output)
