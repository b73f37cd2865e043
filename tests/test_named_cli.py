"""``flask models … --model NAME``: every subcommand on a named model, as on the default registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result
from flask import Flask

from flask_model_registry import FlaskModelRegistry, ModelRegistry
from flask_model_registry.cli import models_cli, selected_registry

REPO = Path(__file__).resolve().parent.parent
NOTE = "named models (list one with --model NAME): churn, fraud\n"


@pytest.fixture
def app_config(named_models: dict[str, Any]) -> dict[str, Any]:
    return named_models


@pytest.fixture
def cli(app: Flask, published: ModelRegistry, registry_root: Path, model_roots: dict[str, Path]):
    """``cli(*args)`` runs ``flask models *args``; the named model ``fraud`` starts as a byte-for-byte
    copy of the default registry (``published``), ``churn`` empty."""
    shutil.copytree(registry_root, model_roots["fraud"], dirs_exist_ok=True)
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["models", *args])


def test_every_subcommand_takes_model(cli: Callable[..., Result]):
    assert models_cli.commands  # every subcommand, also those added later
    for name, command in models_cli.commands.items():
        assert "--model" in {opt for param in command.params for opt in param.opts}, name
        assert "--model NAME" in cli(name, "--help").output, name


@pytest.fixture
def added_later() -> Iterator[str]:
    """A subcommand defined elsewhere (as an add-on would) and added with ``add_command``."""

    @click.command("count")
    def count() -> None:
        click.echo(len(selected_registry().list_versions()))

    models_cli.add_command(count)
    yield "count"
    models_cli.commands.pop("count")


def test_a_subcommand_added_later_takes_model_too(cli: Callable[..., Result], app: Flask, added_later: str):
    app.registries["churn"].save_model("1.0.0", "m")
    assert cli(added_later).output == "3\n"
    assert cli(added_later, "--model", "churn").output == "1\n"
    assert cli(added_later, "--model", "nope").exit_code == 1


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--json"],
        ["list", "--stage", "staging"],
        ["latest"],
        ["latest", "--stage", "prod"],
        ["latest", "--stage", "archived"],
        ["latest", "--prerelease"],
        ["show", "1.0.0"],
        ["show", "9.9.9"],
        ["show", "../etc"],
        ["history"],
        ["history", "1.1.0"],
        ["verify"],
    ],
)
def test_a_named_model_answers_as_the_default_registry(cli: Callable[..., Result], args: list[str]):
    default, named = cli(*args), cli(*args, "--model", "fraud")
    table = default.output.removesuffix(NOTE)  # only the default's list names the named models
    assert (named.exit_code, named.output) == (default.exit_code, table)


def test_commands_act_on_the_named_model_only(cli: Callable[..., Result], app: Flask):
    assert cli("list", "--model", "churn").output.strip() == "no versions"
    assert cli("latest", "--model", "churn").exit_code == 1
    result = cli("promote", "1.1.0", "prod", "--model", "fraud")
    assert result.exit_code == 0, result.output
    assert app.registries["fraud"].get_latest_version("prod") == "1.1.0"
    assert app.registry.get_latest_version("prod") == "1.0.0"
    events = json.loads(cli("history", "1.1.0", "--json", "--model", "fraud").output)
    assert events[-1]["after"] == {"stage": "prod"}
    assert cli("promote", "1.0.0", "pord", "--model", "churn").exit_code == 1  # no such version there


def test_verify_checks_the_named_models_artefacts(cli: Callable[..., Result], model_roots: dict[str, Path]):
    with open(model_roots["fraud"] / "versions" / "1.1.0" / "model.pkl", "ab") as f:
        f.write(b"tampered")
    assert cli("verify").exit_code == 0
    result = cli("verify", "--model", "fraud")
    assert result.exit_code == 1 and "FAIL  1.1.0" in result.output


def test_an_unknown_model_is_one_error_line_naming_it(cli: Callable[..., Result]):
    for name in models_cli.commands:
        args = {  # a subcommand added with required arguments needs a row here
            "show": ["1.0.0"],
            "promote": ["1.0.0", "prod"],
            "approve": ["1.0.0", "prod"],
            "demote": ["1.0.0"],
            "set": ["1.0.0", "note=1"],
            "history": ["1.0.0"],
            "sign": ["1.0.0", "--key", "key.priv"],
            "delete": ["1.0.0"],
            "timeline": ["prod"],
            "rollback": ["prod"],
        }.get(name, [])
        result = cli(name, *args, "--model", "nope")
        assert result.exit_code == 1, name
        assert result.output == "Error: no model named 'nope' (named models: churn, fraud)\n", name


def test_list_without_model_says_which_named_models_exist(cli: Callable[..., Result]):
    lines = cli("list").output.splitlines()
    assert lines[0].split() == ["VERSION", "STAGE", "CREATED", "SIGNATURE", "FLAGS"]
    assert lines[-1] + "\n" == NOTE
    assert "named models" not in cli("list", "--model", "fraud").output
    json.loads(cli("list", "--json").output)  # JSON stays JSON


def test_an_empty_default_registry_still_names_the_named_models(app: Flask):
    result = app.test_cli_runner().invoke(args=["models", "list"])
    assert result.output == "no versions\n" + NOTE


def test_a_named_model_whose_root_is_missing_is_one_error_line(tmp_path: Path, registry_root: Path):
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    app.config["MODEL_REGISTRY_MODELS"] = {"gone": str(tmp_path / "x")}
    FlaskModelRegistry(app)
    result = app.test_cli_runner().invoke(args=["models", "list", "--model", "gone"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert str(tmp_path / "x") in result.output  # the CLI, unlike the API, names the path
    assert app.test_cli_runner().invoke(args=["models", "list"]).exit_code == 0


def test_list_without_named_models_says_nothing_of_them(registry_root: Path, published: ModelRegistry):
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    FlaskModelRegistry(app)
    assert "named models" not in app.test_cli_runner().invoke(args=["models", "list"]).output


def test_model_as_a_real_subprocess(tmp_path: Path, model_roots: dict[str, Path]):
    ModelRegistry(model_roots["fraud"]).save_model("3.1.0", "fraud model", {"stage": "prod"})
    env = {
        **os.environ,
        "MODEL_REGISTRY_ROOT": str(tmp_path / "default"),
        "FLASK_MODEL_REGISTRY_MODELS": json.dumps({"fraud": str(model_roots["fraud"])}),
        "FLASK_APP": "example_app:create_app",
    }
    command = [sys.executable, "-m", "flask", "models", "latest", "--stage", "prod", "--model", "fraud"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "3.1.0"), done.stderr
