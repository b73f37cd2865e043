"""Change notifications: signed webhooks (Standard Webhooks), delivered at least once from the
audit trail by a worker (``flask models webhooks run``) that keeps a cursor per webhook in the
registry's own storage. See ``docs/webhooks.md``."""

from __future__ import annotations

from .message import KINDS, Webhook, body, event_kinds, parse_webhooks
from .ops import replay, status
from .worker import Settings, WebhookWorker

__all__ = [
    "KINDS",
    "Settings",
    "Webhook",
    "WebhookWorker",
    "body",
    "event_kinds",
    "parse_webhooks",
    "replay",
    "status",
]
