"""The ``flask models`` command group: a thin terminal adapter over the app's registry.

Registry errors print as one ``Error: …`` line with exit status 1, never a traceback. Every
subcommand takes ``--model NAME``: a named model (``MODEL_REGISTRY_MODELS``) instead of the default
registry; a subcommand reaches the registry it is about through :func:`selected_registry`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from .context import get_registries, get_registry
from .errors import RegistryError, UnknownModelError
from .registry import ModelRegistry

F = TypeVar("F", bound=Callable[..., Any])
_MODEL = "model_registry.model"  # where the chosen --model is kept in the click context


def _model_option(command: F) -> F:
    """Add ``--model NAME`` to ``command``; an unknown name is one ``Error:`` line naming it."""

    @click.option(
        "--model",
        "model_name",
        metavar="NAME",
        help="A named model (MODEL_REGISTRY_MODELS) instead of the default registry.",
    )
    @wraps(command)
    def run(*args: Any, model_name: str | None, **kwargs: Any) -> Any:
        try:
            get_registry(model_name)
        except UnknownModelError as exc:
            raise click.ClickException(str(exc)) from None
        click.get_current_context().meta[_MODEL] = model_name
        return command(*args, **kwargs)

    return run  # type: ignore[return-value]


class _ModelsGroup(AppGroup):
    """A command group whose every subcommand takes ``--model NAME``."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
        decorate = super().command(*args, **kwargs)
        return lambda command: decorate(_model_option(command))


def selected_registry() -> ModelRegistry:
    """The registry the running subcommand is about: ``--model NAME``'s, else the default one."""
    return get_registry(click.get_current_context().meta.get(_MODEL))


models_cli = _ModelsGroup("models", help="List, inspect, promote and verify registry versions.")


def _clean_errors(command: F) -> F:
    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None

    return run  # type: ignore[return-value]


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _row(version: str, metadata: dict[str, Any] | None, error: str | None) -> tuple[str, ...]:
    if metadata is None:
        return version, "-", "-", f"ERROR: {error}"
    flags = sorted(k for k, v in metadata.items() if v is True)
    created = metadata.get("created_at")
    return version, str(metadata.get("stage") or "-"), str(created or "-"), ", ".join(flags)


@models_cli.command("list")
@click.option("--stage", help="Only versions in this stage.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_clean_errors
def list_command(stage: str | None, as_json: bool) -> None:
    """List every version in ascending order, with its stage and flags (and, for the default
    registry, which named models there are)."""
    entries = [e for e in selected_registry().snapshot().entries if stage is None or e.stage == stage]
    if as_json:
        _echo_json([{"version": e.version, "metadata": e.metadata, "error": e.error} for e in entries])
        return
    if not entries:
        click.echo("no versions" + (f" in stage {stage!r}" if stage else ""))
    else:
        rows = [("VERSION", "STAGE", "CREATED", "FLAGS")]
        rows += [_row(e.version, e.metadata, e.error) for e in entries]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(3)]
            click.echo("  ".join([*cells, row[3]]).rstrip())
    if click.get_current_context().meta.get(_MODEL) is None and get_registries():
        click.echo(f"named models (list one with --model NAME): {', '.join(sorted(get_registries()))}")


@models_cli.command("latest")
@click.option("--stage", help="The highest version in this stage.")
@click.option("--prerelease", is_flag=True, help="Consider prereleases too.")
@_clean_errors
def latest_command(stage: str | None, prerelease: bool) -> None:
    """Print the latest version (exit status 1 when there is none)."""
    version = selected_registry().get_latest_version(stage, include_prerelease=prerelease)
    if version is None:
        raise click.ClickException("no version" + (f" in stage {stage!r}" if stage else "") + " yet")
    click.echo(version)


@models_cli.command("show")
@click.argument("version")
@_clean_errors
def show_command(version: str) -> None:
    """Print a version's metadata as JSON."""
    _echo_json(selected_registry().get_metadata(version))


@models_cli.command("promote")
@click.argument("version")
@click.argument("stage")
@_clean_errors
def promote_command(version: str, stage: str) -> None:
    """Move VERSION to STAGE (recorded in the audit trail)."""
    selected_registry().set_stage(version, stage)
    click.echo(f"{version} is now in stage {stage!r}")


@models_cli.command("history")
@click.argument("version", required=False)
@_clean_errors
def history_command(version: str | None) -> None:
    """Print the audit trail (of one version, or all) as JSON, oldest first."""
    _echo_json(selected_registry().history(version))


@models_cli.command("verify")
@_clean_errors
def verify_command() -> None:
    """Re-hash every artefact against its recorded sha256; exit status 1 on any failure."""
    registry = selected_registry()
    failures = 0
    for version in registry.list_versions():
        try:
            sha = registry.verify(version)
        except RegistryError as exc:
            failures += 1
            click.echo(f"FAIL  {version}: {exc}")
            continue
        click.echo(f"ok    {version}" + ("" if sha else " (no sha256 recorded; not checked)"))
    if failures:
        raise click.ClickException(f"{failures} version(s) failed verification")
