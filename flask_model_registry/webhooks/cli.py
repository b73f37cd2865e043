"""``flask models webhooks``: run the delivery worker, show where each webhook stands, replay."""

from __future__ import annotations

import json
import logging
import signal
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from ..audit_cli import parse_since
from ..cli_group import describe_error, selected_model
from ..context import get_registries, get_registry
from ..errors import RegistryError
from ..registry import ModelRegistry
from .message import Webhook, body
from .ops import replay, status
from .send import Attempt
from .worker import Settings, WebhookWorker, label


@click.group("webhooks", cls=AppGroup, invoke_without_command=True)
@click.pass_context
def webhooks_cli(ctx: click.Context) -> None:
    """Signed change notifications: run the delivery worker, see each webhook's state, replay.
    With --model NAME (here or after the subcommand): one named model only."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def settings() -> Settings:
    """The delivery knobs from the app's (parsed) config."""
    config = current_app.config
    return Settings(
        retry_base=config["MODEL_REGISTRY_WEBHOOK_RETRY_BASE"],
        retry_hours=config["MODEL_REGISTRY_WEBHOOK_RETRY_HOURS"],
        timeout=config["MODEL_REGISTRY_WEBHOOK_TIMEOUT"],
        poll_interval=config["MODEL_REGISTRY_WEBHOOK_POLL_INTERVAL"],
    )


def configured(url: str | None = None) -> list[Webhook]:
    """The configured webhooks (only ``url``'s if given); a clear error when there are none."""
    webhooks: list[Webhook] = current_app.config["MODEL_REGISTRY_WEBHOOKS"] or []
    if not webhooks:
        raise click.ClickException(
            "no webhooks are configured: set MODEL_REGISTRY_WEBHOOKS (see docs/webhooks.md)"
        )
    if url is None:
        return webhooks
    chosen = [webhook for webhook in webhooks if webhook.url == url]
    if not chosen:
        known = ", ".join(webhook.url for webhook in webhooks)
        raise click.BadParameter(f"{url!r} is not a configured webhook (configured: {known})")
    return chosen


def registries(model: str | None = None) -> dict[str | None, ModelRegistry]:
    """The registries to follow: only ``model``'s (``--model``, after the subcommand or before it),
    else the default one and every named model."""
    if model is None and click.get_current_context(silent=True) is not None:
        model = selected_model()
    if model is not None:
        try:
            return {model: get_registry(model)}
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    return {None: get_registry(), **get_registries()}


def app_worker(model: str | None = None) -> WebhookWorker:
    """The worker the current app's config describes: every webhook, for every registry (or for
    ``model``'s only)."""
    return WebhookWorker(configured(), registries(model), settings())


MODEL_OPTION = click.option(
    "--model", "model", metavar="NAME", help="Only this named model (default: every registry)."
)


@webhooks_cli.command("run")
@MODEL_OPTION
def run_command(model: str | None) -> None:
    """Deliver every change to the configured webhooks until SIGTERM or Ctrl-C (then the attempts
    in flight finish, and the worker exits)."""
    worker = app_worker(model)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("flask_model_registry.webhooks").setLevel(logging.INFO)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    click.echo(f"webhooks: delivering as worker {worker.owner}", err=True)
    worker.run()
    click.echo("webhooks: stopped", err=True)


@webhooks_cli.command("status")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(model: str | None, as_json: bool) -> None:
    """Each webhook's cursor, backlog, event being retried and failed events, per registry."""
    try:
        items = [
            status(webhook, registry, name)
            for name, registry in registries(model).items()
            for webhook in configured()
        ]
    except (RegistryError, OSError) as exc:
        raise click.ClickException(describe_error(exc)) from None
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo(f"{item['url']}  ({label(item['model'])}; events: {', '.join(item['events'])})")
        if not item["started"]:
            click.echo("  not started: the worker begins at the trail's end")
            continue
        click.echo(f"  cursor:    {item['cursor'] or '(the trail was empty)'}")
        click.echo(f"  backlog:   {item['backlog']} event(s)   delivered: {item['delivered']}")
        retrying = item["retrying"]
        if retrying:
            click.echo(
                f"  retrying:  {retrying['id']} (attempt {retrying['attempts']}, {retrying['reason']};"
                f" next at {retrying['next_attempt']})"
            )
        click.echo(f"  failed:    {', '.join(item['failed']) or 'none'}")
        click.echo(f"  worker:    {item['worker'] or 'none holds it now'}")


def _report(event: dict[str, Any], attempt: Attempt, model: str | None) -> None:
    kind = json.loads(body(event, model))["type"]
    click.echo(f"{attempt.outcome:6}  {event['id']}  {kind}  {event.get('version')}  ({attempt.reason})")


@webhooks_cli.command("replay")
@click.option(
    "--since",
    "since",
    metavar="TIME",
    required=True,
    help="Events at or after TIME (ISO 8601, or an age: 30m, 12h, 7d).",
)
@click.option("--webhook", "url", metavar="URL", help="Only this configured webhook (default: all).")
@MODEL_OPTION
def replay_command(since: str, url: str | None, model: str | None) -> None:
    """Send again, from this process, every event since TIME (failed ones included) with the same
    ids, in trail order; exit 1 if any failed or the replay had to stop."""
    start = parse_since(since)
    problems = 0
    for webhook in configured(url):
        for name, registry in registries(model).items():
            click.echo(f"{webhook.url}  ({label(name)})")
            try:
                sent, failed, stopped = replay(
                    webhook,
                    registry,
                    name,
                    start,
                    settings().timeout,
                    lambda event, attempt, name=name: _report(event, attempt, name),
                )
            except (RegistryError, OSError) as exc:
                raise click.ClickException(describe_error(exc)) from None
            click.echo(f"  {len(sent)} sent, {len(failed)} failed")
            if stopped:
                click.echo(f"  stopped at {stopped}: the receiver asked for a retry; run the replay again")
            problems += len(failed) + bool(stopped)
    if problems:
        raise click.ClickException(f"{problems} event(s) were not delivered")
