"""The JSON shapes of registry things, one for every adapter: the HTTP API and ``--json`` in the CLI."""

from __future__ import annotations

from typing import Any

from .registry import Entry


def version_item(
    version: str, metadata: dict[str, Any], approvals: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One version: ``{"version", "metadata"}``, and its ``approvals`` beside them when given."""
    item = {"version": version, "metadata": metadata}
    return item if approvals is None else {**item, "approvals": approvals}


def entry_item(entry: Entry) -> dict[str, Any]:
    """A listed version: ``{"version", "metadata"}``, or ``{"version", "error"}`` when its metadata
    cannot be read (never both keys, never ``"error": null``)."""
    if entry.metadata is None:
        return {"version": entry.version, "error": entry.error}
    return version_item(entry.version, entry.metadata)
