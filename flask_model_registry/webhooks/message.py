"""What a webhook is (``MODEL_REGISTRY_WEBHOOKS``), which kinds of change an audit event is, and the
signed Standard Webhooks message that announces it.

A message is one ``POST`` of a JSON body with the headers ``webhook-id`` (the audit event's id, the
same on every attempt and replay: receivers deduplicate on it), ``webhook-timestamp`` (fresh for each
attempt) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` by the ``standardwebhooks``
library), so any Standard Webhooks receiver verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from standardwebhooks import Webhook as Signer

from ..errors import ConfigError

KEY = "MODEL_REGISTRY_WEBHOOKS"
#: Every kind of change, in the order that picks an event's ``type`` (its first kind).
KINDS = ("publish", "stage", "flags", "metadata", "delete", "approve", "sign")
ALL = "*"
#: Audit actions that are a kind of their own; any other action is a metadata change.
ACTION_KINDS = frozenset({"publish", "delete", "approve", "sign"})
#: The flag whose value may be a weight rather than a boolean.
CANARY = "canary"
_FIELDS = ("url", "secret", "events")


@dataclass(frozen=True)
class Webhook:
    """One receiver: its URL, its ``whsec_`` secret (never shown) and the kinds it wants."""

    url: str
    secret: str = field(repr=False)
    events: tuple[str, ...] = (ALL,)

    @property
    def key(self) -> str:
        """The name of its cursor: the same for the same URL, whatever else changes."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:32]

    def wants(self, kinds: list[str]) -> bool:
        """Whether an event of ``kinds`` is sent to this webhook."""
        return ALL in self.events or any(kind in self.events for kind in kinds)

    def headers(self, event_id: str, body: bytes, now: datetime | None = None) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt: signed now, with ``event_id`` as the id."""
        now = now or datetime.now(timezone.utc)
        signature = Signer(self.secret).sign(event_id, now, body.decode())
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
        }


def event_kinds(event: Mapping[str, Any]) -> list[str]:
    """The kinds of an audit event: its action's own kind (publish, delete, approve, sign), else
    ``stage``, ``flags`` (``canary`` or a boolean value before or after) and ``metadata`` (any other
    key), those its changed keys show, in that order (``metadata`` when none shows)."""
    action = event.get("action")
    if isinstance(action, str) and action in ACTION_KINDS:
        return [action]
    before = event.get("before") if isinstance(event.get("before"), dict) else {}
    after = event.get("after") if isinstance(event.get("after"), dict) else {}
    found = set()
    for key in {*before, *after}:
        if key == "stage":
            found.add("stage")
        elif key == CANARY or isinstance(before.get(key), bool) or isinstance(after.get(key), bool):
            found.add("flags")
        else:
            found.add("metadata")
    return [kind for kind in KINDS if kind in found] or ["metadata"]


def body(event: Mapping[str, Any], model: str | None) -> bytes:
    """The JSON body announcing ``event`` of the registry ``model`` (None: the default one); an
    approval's also names the ``stage`` approved (its ``before`` and ``after`` are empty)."""
    kinds = event_kinds(event)
    message = {
        "type": f"model.{kinds[0]}",
        "timestamp": event.get("time"),
        "data": {
            "model": model,
            "version": event.get("version"),
            "actor": event.get("actor"),
            "kinds": kinds,
            "before": event.get("before"),
            "after": event.get("after"),
            **({"stage": event["stage"]} if "stage" in event else {}),
        },
    }
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")


# MODEL_REGISTRY_WEBHOOKS ---------------------------------------------------------------------------


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(KEY, f"{where} needs a 'url' (an http:// or https:// URL)")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(KEY, f"{where}: url {value[:80]!r} must be an http:// or https:// URL with a host")
    return value


def _secret(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(KEY, f"{where} needs a 'secret': whsec_ and the base64 of random bytes")
    raw = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigError(
            KEY,
            f"{where}: the secret must be whsec_ and the base64 of random bytes, such as"
            " python -c \"import base64,secrets; print('whsec_' + base64.b64encode(secrets.token_bytes(32))"
            '.decode())"',
        )
    return value


def _events(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return (ALL,)
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(KEY, f'{where}: events must be a non-empty list of kinds, or ["*"] for all')
    for kind in value:
        if kind != ALL and kind not in KINDS:
            raise ConfigError(
                KEY, f'{where}: unknown event kind {kind!r} (known: {", ".join(KINDS)}, or "*" for all)'
            )
    return tuple(dict.fromkeys(value))


def _webhook(item: Any, at: int) -> Webhook:
    where = f"{KEY}[{at}]"
    if isinstance(item, Webhook):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(KEY, f"{where} must be an object with 'url', 'secret' and 'events'")
    unknown = sorted(map(repr, set(item) - set(_FIELDS)))
    if unknown:
        raise ConfigError(KEY, f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
    return Webhook(
        _url(item.get("url"), where), _secret(item.get("secret"), where), _events(item.get("events"), where)
    )


def parse_webhooks(value: Any) -> list[Webhook]:
    """``MODEL_REGISTRY_WEBHOOKS``: a list (or its JSON text) of ``{"url", "secret", "events"}``;
    :class:`ConfigError` naming what is wrong (never showing a secret)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(KEY, f"{KEY} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(KEY, f"{KEY} must be a list of webhooks, not {type(value).__name__}")
    webhooks = [_webhook(item, at) for at, item in enumerate(value)]
    urls = [webhook.url for webhook in webhooks]
    for url in urls:
        if urls.count(url) > 1:
            raise ConfigError(KEY, f"{KEY}: the url {url[:80]!r} is listed twice; list it once")
    return webhooks
