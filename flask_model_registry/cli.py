"""The ``flask models`` command group: a thin terminal adapter over the app's registry.

Registry errors print as one ``Error: …`` line with exit status 1, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from .audit_cli import audit_command
from .context import get_registry
from .errors import RegistryError

models_cli = AppGroup("models", help="List, inspect, promote and verify registry versions.")

F = TypeVar("F", bound=Callable[..., Any])


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
    """List every version in ascending order, with its stage and flags."""
    entries = [e for e in get_registry().snapshot().entries if stage is None or e.stage == stage]
    if as_json:
        _echo_json([{"version": e.version, "metadata": e.metadata, "error": e.error} for e in entries])
        return
    if not entries:
        click.echo("no versions" + (f" in stage {stage!r}" if stage else ""))
        return
    rows = [("VERSION", "STAGE", "CREATED", "FLAGS")]
    rows += [_row(e.version, e.metadata, e.error) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        click.echo("  ".join([*cells, row[3]]).rstrip())


@models_cli.command("latest")
@click.option("--stage", help="The highest version in this stage.")
@click.option("--prerelease", is_flag=True, help="Consider prereleases too.")
@_clean_errors
def latest_command(stage: str | None, prerelease: bool) -> None:
    """Print the latest version (exit status 1 when there is none)."""
    version = get_registry().get_latest_version(stage, include_prerelease=prerelease)
    if version is None:
        raise click.ClickException("no version" + (f" in stage {stage!r}" if stage else "") + " yet")
    click.echo(version)


@models_cli.command("show")
@click.argument("version")
@_clean_errors
def show_command(version: str) -> None:
    """Print a version's metadata as JSON."""
    _echo_json(get_registry().get_metadata(version))


@models_cli.command("promote")
@click.argument("version")
@click.argument("stage")
@_clean_errors
def promote_command(version: str, stage: str) -> None:
    """Move VERSION to STAGE (recorded in the audit trail)."""
    get_registry().set_stage(version, stage)
    click.echo(f"{version} is now in stage {stage!r}")


@models_cli.command("history")
@click.argument("version", required=False)
@_clean_errors
def history_command(version: str | None) -> None:
    """Print the audit trail (of one version, or all) as JSON, oldest first."""
    _echo_json(get_registry().history(version))


@models_cli.command("verify")
@_clean_errors
def verify_command() -> None:
    """Re-hash every artefact against its recorded sha256; exit status 1 on any failure."""
    registry = get_registry()
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


models_cli.add_command(audit_command)
