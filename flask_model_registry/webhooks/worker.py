"""The delivery worker: a thread per webhook and registry follows that registry's audit trail and
sends each event, in trail order, at least once.

Each thread takes its webhook's lease in the cursor (:mod:`.cursor`), then loops: read the events
past the cursor, send the first, record the outcome in the cursor (compare-and-swap, which renews
the lease), and so on; an event being retried holds back the later ones of its webhook, never those
of another. A worker killed at any point loses nothing: the cursor moves only after an answer, so
the event in flight is sent again by whoever takes the lease next (at least once, not exactly once).
:meth:`WebhookWorker.stop` (SIGTERM) lets each thread finish the attempt it is making, releases the
leases and returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConflictError, RegistryError
from ..registry import ModelRegistry
from .cursor import Cursor, CursorStore
from .message import Webhook, body, event_kinds
from .send import DONE, RETRY, Attempt, post

log = logging.getLogger("flask_model_registry.webhooks")

#: Events read from the trail per request when catching up.
PAGE = 200
#: Seconds between two looks at the trail's marker while idle, where the storage has one: on local
#: disk a change is sent within this (one ``stat``), not within the poll interval.
MARKER_STEP = 0.02


@dataclass(frozen=True)
class Settings:
    """The delivery knobs (``MODEL_REGISTRY_WEBHOOK_*``): seconds before the first retry (doubling,
    capped at an hour), hours of retrying before an event is failed, seconds an attempt may take,
    and seconds between two looks at an idle trail."""

    retry_base: float = 10.0
    retry_hours: float = 24.0
    timeout: float = 10.0
    poll_interval: float = 1.0

    @property
    def lease_seconds(self) -> float:
        """How long a worker's claim on a webhook lasts unless renewed: longer than any attempt."""
        return 2 * self.timeout + 15.0


def events_after(registry: ModelRegistry, floor: str) -> list[dict[str, Any]]:
    """The trail's events whose id is above ``floor``, oldest first, a page at a time from the end."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        page = registry.history(limit=PAGE, before=before)
        newer = [event for event in page if event["id"] > floor]
        found[:0] = newer
        if len(newer) < len(page) or len(page) < PAGE:
            return found
        before = page[0]["id"]


def send_event(webhook: Webhook, event: Mapping[str, Any], model: str | None, timeout: float) -> Attempt:
    """One signed attempt at delivering ``event`` to ``webhook``."""
    data = body(event, model)
    return post(webhook.url, data, webhook.headers(event["id"], data), timeout)


def label(model: str | None) -> str:
    return f"model {model!r}" if model is not None else "the default registry"


class Delivery:
    """Sends one registry's events to one webhook, holding the webhook's lease while it does."""

    def __init__(
        self,
        webhook: Webhook,
        registry: ModelRegistry,
        model: str | None,
        settings: Settings,
        owner: str,
        stopping: threading.Event,
    ) -> None:
        self.webhook, self.registry, self.model, self.settings = webhook, registry, model, settings
        self.store = CursorStore(registry, webhook)
        self.owner, self.stopping = owner, stopping
        self.cursor: Cursor | None = None  # while we hold the lease

    def run(self) -> None:
        """Deliver until told to stop; a store that fails is retried after a poll interval."""
        while not self.stopping.is_set():
            try:
                if self.holding() or self.acquire():
                    self.step()
                else:
                    self.stopping.wait(min(self.settings.lease_seconds / 4, 5.0))
            except ConflictError:
                log.info("webhook %s (%s): another worker took over", self.webhook.url, label(self.model))
            except (RegistryError, OSError) as exc:  # the store did not answer: it may later
                log.warning("webhook %s (%s): %s; trying again", self.webhook.url, label(self.model), exc)
                self.cursor = None
                self.stopping.wait(self.settings.poll_interval)
            except Exception:  # a bug or a damaged cursor: logged, and this webhook keeps trying
                log.exception(
                    "webhook %s (%s): delivery failed; trying again", self.webhook.url, label(self.model)
                )
                self.cursor = None
                self.stopping.wait(min(self.settings.lease_seconds / 4, 5.0))
        self.release()

    # the lease -------------------------------------------------------------------------------------

    def holding(self) -> bool:
        return self.cursor is not None and self.cursor.lease_holder(time.time()) == self.owner

    def acquire(self) -> bool:
        """Take the lease if nobody else holds it; True when we now hold it."""
        cursor = self.store.load() or self.store.start()
        holder = cursor.lease_holder(time.time())
        if holder is not None and holder != self.owner:
            return False
        try:
            self.save(cursor)
        except ConflictError:
            return False
        log.info("webhook %s (%s): delivering from %s", self.webhook.url, label(self.model), cursor.position)
        return True

    def save(self, cursor: Cursor) -> None:
        """Store the cursor with the lease renewed; ConflictError (and the lease lost) if another
        worker changed it meanwhile."""
        cursor.doc["lease"] = {"owner": self.owner, "until": time.time() + self.settings.lease_seconds}
        try:
            self.store.save(cursor)
        except ConflictError:
            self.cursor = None
            raise
        self.cursor = cursor

    def release(self) -> None:
        """Give the lease back (on stop), so another worker takes over at once."""
        cursor = self.cursor
        if cursor is None:
            return
        cursor.doc["lease"] = None
        with contextlib.suppress(RegistryError, OSError):  # else it expires by itself
            self.store.save(cursor)
        self.cursor = None

    def wait(self, seconds: float) -> None:
        """Wait (renewing the lease as it goes) until ``seconds`` passed or we are told to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and self.cursor is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.cursor.doc["lease"]["until"] - time.time() < self.settings.lease_seconds / 2:
                self.save(self.cursor)
            self.stopping.wait(min(left, self.settings.lease_seconds / 4))

    # delivering ------------------------------------------------------------------------------------

    def step(self) -> None:
        """Send what is due, oldest first, until the trail is done, an event waits for its retry, or
        we are told to stop."""
        cursor = self.cursor
        assert cursor is not None
        marker = self.registry.audit.marker()  # first: an event added meanwhile changes it
        pending = self.registry.audit.oldest_pending()  # first: one that lands meanwhile is listed
        events = events_after(self.registry, cursor.floor(pending))
        due = cursor.due(events, pending)
        dirty = False
        for event in due:
            if self.stopping.is_set():
                break
            if not self.webhook.wants(event_kinds(event)):
                cursor.handled(event["id"], pending)
                dirty = True
                continue
            retry = cursor.retry
            if retry and retry["id"] == event["id"] and retry["next"] > time.time():
                if dirty:
                    self.save(cursor)
                self.wait(retry["next"] - time.time())
                return
            if dirty or cursor.doc["lease"]["until"] - time.time() < self.settings.timeout + 10:
                self.save(cursor)
                dirty = False
            if self.deliver(cursor, event, pending) == RETRY:
                return
        if dirty:
            self.save(cursor)
        if not due:
            self.idle(marker)

    def idle(self, marker: Any) -> None:
        """Wait a poll interval for the trail to grow; where the storage has a cheap marker of the
        trail, return as soon as it changes."""
        if marker is None:
            self.wait(self.settings.poll_interval)
            return
        deadline = time.monotonic() + self.settings.poll_interval
        while self.cursor is not None and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self.registry.audit.marker() != marker:
                return
            self.wait(min(left, MARKER_STEP))

    def deliver(self, cursor: Cursor, event: dict[str, Any], pending: str | None) -> str:
        """One attempt at ``event``, recorded in the cursor (stored); the event's outcome."""
        started = time.time()
        attempt = send_event(self.webhook, event, self.model, self.settings.timeout)
        outcome = cursor.record(
            event["id"], attempt, started, self.settings.retry_base, self.settings.retry_hours
        )
        if outcome != RETRY:
            cursor.handled(event["id"], pending)
        self.save(cursor)
        level = logging.INFO if outcome == DONE else logging.WARNING
        log.log(
            level,
            "webhook %s (%s): event %s %s: %s",
            self.webhook.url,
            label(self.model),
            event["id"],
            outcome,
            attempt.reason,
        )
        return outcome


class WebhookWorker:
    """Delivers every registry's events to every webhook: a thread per pair, so a slow receiver
    holds up nobody else. :meth:`run` blocks until :meth:`stop`."""

    def __init__(
        self,
        webhooks: list[Webhook],
        registries: Mapping[str | None, ModelRegistry],
        settings: Settings,
    ) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stopping = threading.Event()
        self.deliveries = [
            Delivery(webhook, registry, model, settings, self.owner, self.stopping)
            for model, registry in registries.items()
            for webhook in webhooks
        ]

    def run(self) -> None:
        """Start a thread per webhook and registry; return once :meth:`stop` was called and each
        thread has finished its current attempt."""
        threads = [
            threading.Thread(target=delivery.run, name=f"webhook-{delivery.webhook.key[:8]}", daemon=True)
            for delivery in self.deliveries
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.2)

    def stop(self) -> None:
        """Finish the attempts in flight, release the leases and let :meth:`run` return."""
        self.stopping.set()
