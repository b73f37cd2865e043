"""The JSON shapes of registry things, one for every adapter: the HTTP API and ``--json`` in the CLI."""

from __future__ import annotations

from typing import Any

from .registry import Entry

#: A version's signature status, ``{"status", "key"}`` (see :mod:`.signing`).
Signature = dict[str, Any]


def version_item(version: str, metadata: dict[str, Any], signature: Signature) -> dict[str, Any]:
    """One version: ``{"version", "metadata", "signature"}``."""
    return {"version": version, "metadata": metadata, "signature": signature}


def entry_item(entry: Entry, signature: Signature) -> dict[str, Any]:
    """A listed version: ``{"version", "metadata", "signature"}``, or ``{"version", "error",
    "signature"}`` when its metadata cannot be read (never both, never ``"error": null``)."""
    if entry.metadata is None:
        return {"version": entry.version, "error": entry.error, "signature": signature}
    return version_item(entry.version, entry.metadata, signature)
