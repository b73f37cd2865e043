"""Where a webhook stands in a registry's audit trail: its cursor, kept in the registry's storage
(``state/webhooks/<sha256 of the URL>.json``) and only ever replaced by compare-and-swap.

The document records the last event handled (``cursor``), the ids handled within a look-back window
behind it (``seen``: an event whose writer stalled, or a host whose clock lags, may land in the trail
below events already sent; it is still sent, once), the event being retried and when next, the
events given up on (``failed``), and a lease: the worker that holds it is the only one sending for
this webhook until it expires, so two workers do not both send an event in the normal case.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import ConflictError, CorruptStateError
from ..registry import ModelRegistry
from ..storage import Stamp
from .message import Webhook
from .send import DONE, FAILED, Attempt

#: The id below every event id: a webhook whose trail was empty when first seen starts there.
ZERO_ID = "0" * 20 + "-" + "0" * 12
#: Seconds behind the cursor within which an event that lands late is still sent.
LOOKBACK_SECONDS = 300
#: The longest wait between two attempts, whatever the retry base.
MAX_BACKOFF_SECONDS = 3600.0
#: How many failed events a cursor remembers (the newest).
MAX_FAILED = 1000


def _ns(event_id: str) -> int:
    return int(event_id[:20])


def _id_at(ns: int, tail: str = "0" * 12) -> str:
    return f"{max(ns, 0):020d}-{tail}"


def iso(seconds: float) -> str:
    """A time as ISO 8601 UTC, as the audit trail writes it."""
    when = datetime.fromtimestamp(seconds, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backoff(attempts: int, base: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base, doubling, capped at an hour."""
    return min(base * 2 ** min(attempts - 1, 64), MAX_BACKOFF_SECONDS)


@dataclass
class Cursor:
    """A webhook's place in one registry's trail (the JSON document), and the stamp it was read at."""

    doc: dict[str, Any]
    stamp: Stamp | None = None

    @classmethod
    def new(cls, webhook: Webhook, start: str) -> Cursor:
        doc = {"format": 1, "url": webhook.url, "start": start, "cursor": start if start != ZERO_ID else None}
        doc.update(seen=[], failed=[], retry=None, lease=None, delivered=0)
        return cls(doc)

    @property
    def position(self) -> str:
        return self.doc.get("cursor") or self.doc.get("start") or ZERO_ID

    def floor(self, oldest_pending: str | None) -> str:
        """Events with an id above this are looked at: the look-back window behind the cursor, and
        back to the oldest event still pending; never before the webhook's start."""
        floor = _id_at(_ns(self.position) - int(LOOKBACK_SECONDS * 1e9))
        if oldest_pending is not None:
            floor = min(floor, _id_at(_ns(oldest_pending) - 1, "f" * 12))
        return max(floor, self.doc.get("start") or ZERO_ID)

    def due(self, events: list[dict[str, Any]], oldest_pending: str | None) -> list[dict[str, Any]]:
        """Of ``events`` (oldest first), those not handled yet."""
        floor, seen = self.floor(oldest_pending), set(self.doc.get("seen") or ())
        return [e for e in events if e["id"] > floor and e["id"] not in seen]

    @property
    def retry(self) -> dict[str, Any] | None:
        return self.doc.get("retry")

    def failed_ids(self) -> list[str]:
        return [item["id"] for item in self.doc.get("failed") or ()]

    # changes ---------------------------------------------------------------------------------------

    def handled(self, event_id: str, oldest_pending: str | None) -> None:
        """``event_id`` needs nothing more (sent, given up on, or not for this webhook)."""
        self.doc["cursor"] = max(self.doc.get("cursor") or ZERO_ID, event_id)
        floor = self.floor(oldest_pending)
        self.doc["seen"] = sorted({*(i for i in self.doc.get("seen") or () if i > floor), event_id})
        if (self.retry or {}).get("id") == event_id:
            self.doc["retry"] = None

    def record(self, event_id: str, attempt: Attempt, started: float, base: float, hours: float) -> str:
        """Note what an attempt at ``event_id`` (begun at ``started``) gave; returns the outcome for
        the event: done, failed (now, or because retrying would outlast ``hours``), or retry."""
        if attempt.outcome == DONE:
            self.doc["delivered"] = int(self.doc.get("delivered") or 0) + 1
            return DONE
        retry = self.retry if (self.retry or {}).get("id") == event_id else None
        retry = dict(retry) if retry else {"id": event_id, "since": started, "attempts": 0}
        retry["attempts"] += 1
        retry["reason"] = attempt.reason
        retry["next"] = started + backoff(retry["attempts"], base)
        if attempt.outcome == FAILED or retry["next"] - retry["since"] > hours * 3600:
            why = attempt.reason if attempt.outcome == FAILED else f"{attempt.reason}, gave up retrying"
            entry = {"id": event_id, "at": iso(time.time()), "reason": why}
            self.doc["failed"] = [*(self.doc.get("failed") or ()), entry][-MAX_FAILED:]
            return FAILED
        self.doc["retry"] = retry
        return "retry"

    def forget_failed(self, ids: set[str]) -> None:
        self.doc["failed"] = [item for item in self.doc.get("failed") or () if item["id"] not in ids]

    def lease_holder(self, now: float) -> str | None:
        lease = self.doc.get("lease")
        return lease["owner"] if lease and lease.get("until", 0) > now else None


class CursorStore:
    """The cursor of one webhook in one registry's storage."""

    def __init__(self, registry: ModelRegistry, webhook: Webhook) -> None:
        self.registry, self.webhook = registry, webhook
        self.name = f"webhooks/{webhook.key}.json"

    def load(self) -> Cursor | None:
        """The stored cursor, or None for a webhook this registry has not seen yet."""
        try:
            data, stamp = self.registry.storage.read_state(self.name)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(data)
            valid = isinstance(doc, dict) and all(
                isinstance(doc.get(key), kind)
                for key, kind in (("start", str), ("seen", list), ("failed", list), ("delivered", int))
            )
        except ValueError:
            valid = False
        if not valid:
            raise CorruptStateError(
                f"the cursor of webhook {self.webhook.url} (state/{self.name}) is damaged; remove it"
                " to start again at the trail's end, then replay what was missed"
            )
        return Cursor(doc, stamp)

    def start(self) -> Cursor:
        """A cursor at the trail's end (not stored yet)."""
        newest = self.registry.history(limit=1)
        return Cursor.new(self.webhook, newest[-1]["id"] if newest else ZERO_ID)

    def save(self, cursor: Cursor) -> None:
        """Store ``cursor`` if nobody changed it since it was read; else :class:`ConflictError`."""
        cursor.doc["updated"] = iso(time.time())
        data = json.dumps(cursor.doc, separators=(",", ":"), sort_keys=True).encode()
        cursor.stamp = self.registry.storage.write_state(self.name, data, cursor.stamp)

    def update(self, change: Any) -> Cursor | None:
        """Apply ``change`` (a function of the cursor) to the stored cursor, compare-and-swap,
        retried until it lands; None when there is no stored cursor."""
        while True:
            cursor = self.load()
            if cursor is None:
                return None
            change(cursor)
            try:
                self.save(cursor)
            except ConflictError:
                continue
            return cursor
