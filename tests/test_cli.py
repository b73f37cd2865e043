"""``flask models …``: through Flask's CLI runner, and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from flask_model_registry import ModelRegistry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(app: Flask, published: ModelRegistry):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["models", *args])


def test_list_prints_a_table(cli):
    result = cli("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["VERSION", "STAGE", "CREATED", "FLAGS"]
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
    events = json.loads(cli("history", "1.1.0").output)
    assert events[-1]["action"] == "set_stage" and events[-1]["after"] == {"stage": "prod"}
    assert cli("promote", "1.1.0", "no spaces").exit_code == 1


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
