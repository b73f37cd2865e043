"""What an operator asks of the webhooks: where each stands (:func:`status`), and sending again every
event since a time (:func:`replay`), by the caller itself, with the events' own ids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..audit import event_time
from ..registry import ModelRegistry
from .cursor import CursorStore, iso
from .message import Webhook, event_kinds
from .send import DONE, FAILED, Attempt
from .worker import PAGE, events_after, send_event


def status(webhook: Webhook, registry: ModelRegistry, model: str | None) -> dict[str, Any]:
    """Where ``webhook`` stands in ``registry``'s trail: its cursor, how many events it still has to
    send (backlog), the event being retried, and the events it gave up on (failed)."""
    item: dict[str, Any] = {"url": webhook.url, "model": model, "events": list(webhook.events)}
    cursor = CursorStore(registry, webhook).load()
    if cursor is None:  # a worker will start it at the trail's end
        item.update(started=False, cursor=None, backlog=0, delivered=0, failed=[], failures=[], retrying=None)
        item.update(worker=None, updated=None)
        return item
    pending = registry.audit.oldest_pending()
    due = cursor.due(events_after(registry, cursor.floor(pending)), pending)
    retry = cursor.retry
    item.update(
        started=True,
        cursor=cursor.doc.get("cursor"),
        backlog=sum(webhook.wants(event_kinds(event)) for event in due),
        delivered=int(cursor.doc.get("delivered") or 0),
        failed=cursor.failed_ids(),
        failures=list(cursor.doc.get("failed") or ()),
        retrying=None
        if retry is None
        else {
            "id": retry["id"],
            "attempts": retry["attempts"],
            "next_attempt": iso(retry["next"]),
            "reason": retry.get("reason"),
        },
        worker=cursor.lease_holder(datetime.now(timezone.utc).timestamp()),
        updated=cursor.doc.get("updated"),
    )
    return item


def events_since(registry: ModelRegistry, since: datetime) -> list[dict[str, Any]]:
    """The trail's events at or after ``since`` (an aware time), oldest first."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        page = registry.history(limit=PAGE, before=before)
        found[:0] = [e for e in page if (when := event_time(e)) is not None and when >= since]
        oldest = event_time(page[0]) if page else None
        if len(page) < PAGE or (oldest is not None and oldest < since):
            return found
        before = page[0]["id"]


def replay(
    webhook: Webhook,
    registry: ModelRegistry,
    model: str | None,
    since: datetime,
    timeout: float,
    report: Callable[[dict[str, Any], Attempt], None],
) -> tuple[list[str], list[str], str | None]:
    """Send ``webhook`` again every event of ``registry`` since ``since`` that it wants, in trail
    order, one attempt each, with the events' own ids. An answer that asks for a retry (down, 5xx,
    408, 429, 3xx) stops the replay there, so order holds; another 4xx fails that event and goes on.
    Returns the ids sent, the ids failed, and the id it stopped at (None: it went through). Events
    sent are no longer listed as failed in the webhook's status."""
    sent: list[str] = []
    failed: list[str] = []
    stopped = None
    for event in events_since(registry, since):
        if not webhook.wants(event_kinds(event)):
            continue
        attempt = send_event(webhook, event, model, timeout)
        report(event, attempt)
        if attempt.outcome == DONE:
            sent.append(event["id"])
        elif attempt.outcome == FAILED:
            failed.append(event["id"])
        else:
            stopped = event["id"]
            break
    if sent:
        CursorStore(registry, webhook).update(lambda cursor: cursor.forget_failed(set(sent)))
    return sent, failed, stopped
