"""The JSON shapes of registry things, one for every adapter: the HTTP API and ``--json`` in the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .registry import Entry

#: A version's signature status, ``{"status", "key"}`` (see :mod:`.signing`).
Signature = dict[str, Any]


def version_item(
    version: str,
    metadata: dict[str, Any],
    signature: Signature | None = None,
    approvals: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One version: ``{"version", "metadata", "signature"}``; without ``signature`` (a version as it
    was at a past moment, perhaps deleted since), ``{"version", "metadata"}``; with ``approvals``
    (the answers about one version), those too."""
    item = {"version": version, "metadata": metadata}
    if signature is not None:
        item["signature"] = signature
    return item if approvals is None else {**item, "approvals": approvals}


def entry_item(entry: Entry, signature: Callable[[Entry], Signature]) -> dict[str, Any]:
    """A listed version: ``{"version", "metadata", "signature"}`` (``signature`` gives its status),
    or ``{"version", "error"}`` when its metadata cannot be read (never both keys, never
    ``"error": null``; a version that cannot be loaded has no signature status to show)."""
    if entry.metadata is None:
        return {"version": entry.version, "error": entry.error}
    return version_item(entry.version, entry.metadata, signature(entry))
