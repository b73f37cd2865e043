"""The ``flask models`` command group: a thin terminal adapter over the app's registry.

Every failure (a registry error, any ``OSError`` such as a read-only registry) prints as one
``Error: …`` line with exit status 1, never a traceback; the CLI, unlike the HTTP API, may name the
path at fault. Every reading command takes ``--json``, in the HTTP API's shapes. Every subcommand
takes ``--model NAME``: a named model (``MODEL_REGISTRY_MODELS``) instead of the default registry; a
subcommand reaches the registry it is about through :func:`.cli_group.selected_registry`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from . import approvals
from .answers import entry_item, version_item
from .audit_cli import audit_command
from .cli_group import ModelsGroup, clean_errors, describe_error, selected_model, selected_registry
from .context import get_registries
from .errors import InvalidMetadataError, RegistryError
from .lifecycle_cli import delete_command, gc_command
from .metadata import check_stage
from .registry import Entry
from .rollout import canary_label, promote
from .signing_cli import sign_command
from .timeline_cli import rollback_command, timeline_command
from .token_cli import token_cli
from .webhooks.cli import webhooks_cli

models_cli = ModelsGroup("models", help="List, inspect, promote and verify registry versions.")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _valid_stage(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--stage`` checked as the API checks ``?stage=`` (a bad name is a usage error, exit 2)."""
    if value is None:
        return None
    try:
        return check_stage(value, None)
    except InvalidMetadataError as exc:
        raise click.BadParameter(str(exc)) from None


STAGE_OPTION = click.option("--stage", callback=_valid_stage, help="Only versions in this stage.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON, as the HTTP API answers.")
ACTOR_OPTION = click.option("--actor", help="Who makes the change, for the audit trail (default: user@host).")


def _row(entry: Entry, signature: str) -> tuple[str, ...]:
    metadata = entry.metadata
    if metadata is None:
        return entry.version, "-", "-", signature, f"ERROR: {entry.error}"
    flags = [k for k, v in metadata.items() if v is True and k != "canary"]
    canary = canary_label(metadata)  # "canary 0.3" for a weight, not only for true
    flags = sorted([*flags, canary] if canary else flags)
    created = str(metadata.get("created_at") or "-")
    return entry.version, str(metadata.get("stage") or "-"), created, signature, ", ".join(flags)


@models_cli.command("list")
@STAGE_OPTION
@JSON_OPTION
@clean_errors
def list_command(stage: str | None, as_json: bool) -> None:
    """List every version in ascending order, with its stage, signature status and flags (and, for
    the default registry, which named models there are)."""
    registry = selected_registry()
    entries = [e for e in registry.snapshot().entries if stage is None or e.stage == stage]
    if as_json:
        _echo_json([entry_item(e, registry.signatures.status) for e in entries])
        return
    if not entries:
        click.echo("no versions" + (f" in stage {stage!r}" if stage else ""))
    else:
        rows = [("VERSION", "STAGE", "CREATED", "SIGNATURE", "FLAGS")]
        rows += [_row(e, registry.signatures.status(e)["status"]) for e in entries]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(4)]
            click.echo("  ".join([*cells, row[4]]).rstrip())
    if selected_model() is None and get_registries():
        click.echo(f"named models (list one with --model NAME): {', '.join(sorted(get_registries()))}")


@models_cli.command("latest")
@click.option("--stage", callback=_valid_stage, help="The highest version in this stage.")
@click.option("--prerelease", is_flag=True, help="Consider prereleases too.")
@JSON_OPTION
@clean_errors
def latest_command(stage: str | None, prerelease: bool, as_json: bool) -> None:
    """Print the latest version; exit status 1 when there is none, or when its metadata is broken
    (a deploy script must not pick a broken version)."""
    registry = selected_registry()
    entry = registry.snapshot().latest(stage, prerelease)
    if entry is None:
        raise click.ClickException("no version" + (f" in stage {stage!r}" if stage else "") + " yet")
    metadata = entry.require_metadata()
    if as_json:
        _echo_json(version_item(entry.version, metadata, registry.signatures.status(entry)))
    else:
        click.echo(entry.version)


@models_cli.command("show")
@click.argument("version")
@JSON_OPTION
@clean_errors
def show_command(version: str, as_json: bool) -> None:
    """Print a version's metadata as JSON (with --json: {"version", "metadata", "signature",
    "approvals"}, as the API answers)."""
    registry = selected_registry()
    metadata = registry.get_metadata(version)
    item = version_item(version, metadata, registry.signature(version), approvals.of(registry, version))
    _echo_json(item if as_json else metadata)


@models_cli.command("promote")
@click.argument("version")
@click.argument("stage")
@ACTOR_OPTION
@clean_errors
def promote_command(version: str, stage: str, actor: str | None) -> None:
    """Move VERSION to STAGE (recorded in the audit trail); a canary's weight is removed in the
    same change: promoting ends the split."""
    done = promote(selected_registry(), version, stage, actor=actor)
    ended = done.ended_canary
    note = (
        "" if ended is None else f" (its canary value {json.dumps(ended)} was removed: the split has ended)"
    )
    click.echo(f"{version} is now in stage {stage!r}{note}")


@models_cli.command("demote")
@click.argument("version")
@ACTOR_OPTION
@clean_errors
def demote_command(version: str, actor: str | None) -> None:
    """Take VERSION out of its stage (recorded in the audit trail)."""
    selected_registry().set_stage(version, None, actor=actor)
    click.echo(f"{version} is now in no stage")


@models_cli.command("approve")
@click.argument("version")
@click.argument("stage")
@click.option("--actor", help="Who approves, for the audit trail (default: user@host).")
@clean_errors
def approve_command(version: str, stage: str, actor: str | None) -> None:
    """Approve VERSION for STAGE (an audited event). A stage rule "approvals" counts distinct
    actors, never the version's publisher nor the one who promotes it."""
    approval = selected_registry().approve(version, stage, actor=actor)
    click.echo(f"{version} approved for stage {stage!r} by {approval['actor']}")


def _assignment(text: str) -> tuple[str, Any]:
    """``key=value``: the value as JSON if it parses (``0.9``, ``true``, ``{"a": 1}``), else the
    plain string; ``key=`` removes the key (as ``null`` does in a merge patch)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not key=value")
    if value == "":
        return key, None
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


@models_cli.command("set")
@click.argument("version")
@click.argument("assignments", nargs=-1, required=True)
@ACTOR_OPTION
@clean_errors
def set_command(version: str, assignments: tuple[str, ...], actor: str | None) -> None:
    """Set metadata keys of VERSION: key=value (a JSON value, else a string); key= removes the key."""
    changes: dict[str, Any] = {}
    for text in assignments:
        key, value = _assignment(text)
        if key in changes:
            raise click.BadParameter(f"{key!r} is given twice")
        changes[key] = value
    metadata = selected_registry().update_metadata(version, changes, actor=actor)
    _echo_json(metadata)


@models_cli.command("history")
@click.argument("version", required=False)
@JSON_OPTION
@clean_errors
def history_command(version: str | None, as_json: bool) -> None:
    """Print the audit trail (of one version, or all), oldest first."""
    events = selected_registry().history(version)
    if as_json:
        _echo_json(events)
        return
    for event in events:
        before, after = json.dumps(event.get("before")), json.dumps(event.get("after"))
        action = f"{event.get('action')} {event['stage']}" if "stage" in event else event.get("action")
        click.echo(
            f"{event.get('time')}  {event.get('version')}  {action}"
            f"  by {event.get('actor')}: {before} -> {after}"
        )


@models_cli.command("verify")
@click.argument("version", required=False)
@JSON_OPTION
@clean_errors
def verify_command(version: str | None, as_json: bool) -> None:
    """Re-hash every artefact against its recorded sha256 and check its signature (never
    unpickling), reporting each version (or only VERSION); exit status 1 if any fails (missing,
    unreadable, not a file, mismatch, broken metadata, an invalid signature, or any but a verified
    one while signatures are required)."""
    registry = selected_registry()
    results = []
    names = registry.list_versions()
    if version is not None:
        if version not in names:
            registry.get_metadata(version)  # an invalid or unknown version: its own error
        names = [version]
    for name in names:
        try:
            sha = registry.verify(name)
            checked = registry.signatures.check_verified(name, registry.get_metadata(name))
        except (RegistryError, OSError) as exc:
            results.append({"version": name, "ok": False, "error": describe_error(exc)})
            continue
        result = {"version": name, "ok": True, "sha256": sha, "signature": checked.answer()}
        if registry.signatures.failed(checked):
            result.update(ok=False, error=f"signature {checked.status}: {checked.reason}")
        results.append(result)
    if as_json:
        _echo_json(results)
    else:
        for result in results:
            if not result["ok"]:
                click.echo(f"FAIL  {result['version']}: {result['error']}")
            else:
                note = "" if result["sha256"] else " (no sha256 recorded; not checked)"
                signature = result["signature"]
                key = f" (key {signature['key'][:16]}…)" if signature["key"] else ""
                click.echo(f"ok    {result['version']}{note}  signature {signature['status']}{key}")
    failures = sum(not result["ok"] for result in results)
    if failures:
        raise click.ClickException(f"{failures} version(s) failed verification")


# Subcommands kept in modules of their own (each gets --model from the group).
models_cli.add_command(audit_command)
models_cli.add_command(sign_command)
models_cli.add_command(delete_command)
models_cli.add_command(gc_command)
models_cli.add_command(webhooks_cli)
models_cli.add_command(timeline_command)
models_cli.add_command(rollback_command)
models_cli.add_command(token_cli)
