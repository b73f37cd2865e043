"""``flask models delete`` and ``flask models gc``: asking on a terminal, refusing off one without
``--yes``, one ``Error:`` line for a version in use, and what ``gc`` prints."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from test_example_app import compose_config

from flask_model_registry import ModelRegistry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def app_config(named_models: dict[str, Any]) -> dict[str, Any]:
    return named_models


@pytest.fixture
def shelf(app: Flask) -> ModelRegistry:
    """1.0.0 and 1.1.0 (no stage) below 2.0.0 (prod): 1.0.0 and 1.1.0 serve nothing."""
    for version, metadata in (("1.0.0", {}), ("1.1.0", {}), ("2.0.0", {"stage": "prod"})):
        app.registry.save_model(version, version, metadata, actor="trainer")
    return app.registry


@pytest.fixture
def cli(app: Flask, shelf: ModelRegistry):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["models", *args])


def test_delete_with_yes(cli, shelf: ModelRegistry) -> None:
    result = cli("delete", "1.0.0", "--yes", "--actor", "ana")
    assert result.exit_code == 0 and result.output.strip() == "1.0.0 deleted"
    assert shelf.list_versions() == ["1.1.0", "2.0.0"]
    assert shelf.history("1.0.0")[-1]["actor"] == "ana"


def test_delete_off_a_terminal_without_yes_refuses(cli, shelf: ModelRegistry) -> None:
    result = cli("delete", "1.0.0")
    assert result.exit_code == 1 and "add --yes" in result.output
    assert "1.0.0" in shelf.list_versions()


def test_delete_of_a_version_in_use_or_missing_is_one_error_line(cli, shelf: ModelRegistry) -> None:
    in_use = cli("delete", "2.0.0", "--yes")
    assert in_use.exit_code == 1 and in_use.output.startswith("Error: version 2.0.0 is in use")
    assert len(in_use.output.strip().splitlines()) == 1
    missing = cli("delete", "7.7.7")  # not asked, not told to add --yes: it is not there
    assert missing.exit_code == 1 and missing.output.strip() == "Error: version 7.7.7 not found"


def test_delete_of_a_named_model(app: Flask, cli) -> None:
    fraud = app.registries["fraud"]
    fraud.save_model("1.0.0", "old")
    fraud.save_model("1.1.0", "new")
    assert cli("delete", "1.0.0", "--model", "fraud", "--yes").exit_code == 0
    assert fraud.list_versions() == ["1.1.0"] and "1.0.0" in app.registry.list_versions()


def _on_a_terminal(registry_root: Path, answer: bytes) -> tuple[int, str]:
    """``flask models delete 1.0.0`` run on a pseudo-terminal, answering its question with ``answer``."""
    env = {**os.environ, "MODEL_REGISTRY_ROOT": str(registry_root), "FLASK_APP": "example_app:create_app"}
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "flask", "models", "delete", "1.0.0"]
    child = subprocess.Popen(command, cwd=REPO, env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen, answered = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"cannot be undone" in seen:
                os.write(controller, answer)
                answered = True
            if child.poll() is not None and not ready:
                break
        return child.wait(timeout=60), seen.decode(errors="replace")
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)


def test_delete_asks_on_a_terminal(shelf: ModelRegistry, registry_root: Path) -> None:
    status, output = _on_a_terminal(registry_root, b"n\n")
    assert status == 1 and "Delete version 1.0.0?" in output and "Aborted" in output
    assert "1.0.0" in shelf.list_versions()
    status, output = _on_a_terminal(registry_root, b"y\n")
    assert status == 0 and "1.0.0 deleted" in output, output
    assert "1.0.0" not in shelf.list_versions()


def test_gc_prints_what_goes(cli, shelf: ModelRegistry, registry_root: Path) -> None:
    (registry_root / ".deleted" / "0.1.0@dead").mkdir(parents=True)
    dry = cli("gc", "--keep-last", "1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.strip().splitlines()
    assert lines[:2] == ["would delete version 1.0.0", "would delete leftover 0.1.0@dead"]
    assert lines[2].startswith("1 version(s), 1 leftover(s); would free ")
    assert shelf.list_versions() == ["1.0.0", "1.1.0", "2.0.0"]
    done = cli("gc", "--keep-last", "1", "--json")
    assert json.loads(done.output) == {
        "deleted": ["1.0.0"],
        "leftovers": ["0.1.0@dead"],
        "bytes_freed": json.loads(done.output)["bytes_freed"],
        "dry_run": False,
    }
    assert json.loads(done.output)["bytes_freed"] > 0
    assert shelf.list_versions() == ["1.1.0", "2.0.0"]


def test_gc_ages_and_bad_options(cli, shelf: ModelRegistry) -> None:
    for age in ("30d", "12h", "90m"):
        result = cli("gc", "--older-than", age, "--dry-run", "--json")
        assert result.exit_code == 0 and json.loads(result.output)["deleted"] == [], "all made just now"
    assert cli("gc", "--older-than", "0m", "--dry-run", "--json").exit_code == 0
    for bad in (["--older-than", "soon"], ["--older-than", "99999999999999d"], ["--keep-last", "-1"]):
        result = cli("gc", *bad)
        assert result.exit_code == 2 and "Error" in result.output


def test_the_compose_gc_job_is_a_dry_run_unless_told(
    tmp_path: Path, shelf: ModelRegistry, registry_root: Path
) -> None:
    """``docker-compose --profile maintenance run --rm gc [options]``: the CLI in a one-off container
    over ./registry, as unprivileged as the service; without options a dry run."""
    (tmp_path / ".env").write_text("")
    service = compose_config(tmp_path / ".env", "gc")
    assert service["profiles"] == ["maintenance"] and service["restart"] == "no"
    assert service["volumes"] == [f"{REPO / 'registry'}:/app/registry:rw"]
    assert (
        service["user"] == "10001:10001" and service["read_only"] is True and service["cap_drop"] == ["ALL"]
    )
    assert service["command"] == ["--dry-run"]
    env = {**os.environ, **service["environment"], "MODEL_REGISTRY_ROOT": str(registry_root)}
    for options in (service["command"], ["--keep-last", "1", "--older-than", "0m"]):
        argv = [sys.executable, "-m", *service["entrypoint"], *options]  # flask --app … models gc …
        run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "deleted version 1.0.0"
    assert shelf.list_versions() == ["1.1.0", "2.0.0"]
