"""The console's pages (all ``GET``, none changes anything): the registry, a version, a diff of two
versions, and the audit trail."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from flask import request, url_for
from werkzeug.exceptions import BadRequest

from .. import approvals
from ..context import get_registries
from ..errors import InvalidMetadataError, VersionNotFoundError
from ..metadata import check_stage
from ..registry import ModelRegistry
from ..rollout import roles, serving
from ..snapshot import Entry, Snapshot
from ..versioning import check_version
from .auth import visitor
from .blueprint import bp, page, registry_of, route
from .cells import human_time, json_text
from .charts import span
from .pictures import registry_charts
from .present import (
    artifact_facts,
    boolean_keys,
    diff,
    in_stage,
    metadata_etag,
    metric_columns,
    row,
    stage_names,
)

#: Versions per page of the registry table, and events per page of the audit trail.
PAGE_SIZE = 100
AUDIT_PAGE_SIZE = 50
#: Events read per ``history`` call while an actor filter looks for matches.
AUDIT_SCAN_BATCH = 500
#: The newest events of a version shown on its page (the audit page has the rest).
TIMELINE_SIZE = 50


class _Formats:
    """Formatting helpers the templates call as ``fmt.*``."""

    human_time = staticmethod(human_time)
    span = staticmethod(span)
    boolean_keys = staticmethod(boolean_keys)
    json = staticmethod(json_text)

    @staticmethod
    def share(weight: float) -> str:
        """A canary weight and the share of traffic it means: ``0.3 (30% of traffic)``."""
        return f"weight {weight:g} ({weight * 100:.3g}% of traffic)"


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    model = (request.view_args or {}).get("model")
    title = "Model registry" if model is None else f"Model registry · {model}"
    return {"ui": visitor(), "fmt": _Formats, "model": model, "registry_title": title, "models": _named()}


def _named() -> list[str]:
    """The named models (``MODEL_REGISTRY_MODELS``), for the console's navigation."""
    return sorted(get_registries())


def arg(name: str) -> str:
    """A query parameter ("" when absent); raw non-UTF-8 bytes are a 400, not a 500."""
    try:
        return request.args.get(name, "").strip()
    except UnicodeDecodeError:
        raise BadRequest("the query string is not valid UTF-8") from None


def page_number() -> int:
    """``?page=`` (1 when absent); anything but a positive integer is a 400."""
    text = arg("page") or "1"
    if not text.isdigit() or not 0 < int(text) < 10**9:
        raise BadRequest(f"page must be a positive whole number, not {text[:20]!r}")
    return int(text)


def pages(total: int, size: int, number: int) -> dict[str, int]:
    """The slice of one page, and the page count (a page past the end shows the last one)."""
    count = max(1, -(-total // size))
    number = min(number, count)
    return {"number": number, "count": count, "start": (number - 1) * size, "stop": number * size}


@route("/")
def registry_page(model: str | None) -> Any:
    """Every version, newest first, with stage, flags, created time, size, sha256 and metrics."""
    registry = registry_of(model)
    stage = arg("stage")
    if stage:
        try:
            check_stage(stage, None)
        except InvalidMetadataError as exc:
            raise BadRequest(f"stage filter: {exc}") from None
    snapshot = registry.snapshot()
    entries = in_stage(snapshot, stage) if stage else snapshot.entries
    paging = pages(len(entries), PAGE_SIZE, page_number())
    stop = len(entries) - paging["start"]
    shown = entries[max(0, len(entries) - paging["stop"]) : stop][::-1]
    stages = stage_names(snapshot)
    latest = {
        "any": snapshot.latest(),
        "prerelease": snapshot.latest(include_prerelease=True),
        "stages": [serving(registry, snapshot, name) for name in stages],
    }
    now = datetime.now(timezone.utc)
    played = roles(registry, snapshot)
    columns = metric_columns(snapshot)
    return page(
        "registry.html",
        model=model,
        rows=[row(e, now, played, registry.signatures.status(e)) for e in shown],
        total=len(entries),
        all_count=len(snapshot.entries),
        columns=columns,
        charts=registry_charts(registry, model, shown, columns),
        stages=stages,
        stage=stage,
        latest=latest,
        paging=paging,
        now=now,
        version_base=url_for(".version_page", model=model, version="0.0.0").removesuffix("0.0.0"),
        stage_base=url_for(".stage_page", model=model, stage="x").removesuffix("x"),
    )


def find_version(model: str | None, version: str) -> tuple[ModelRegistry, Snapshot, Entry]:
    """The registry a console URL names, its current state and the version's entry in it (a bad
    version name is a 400, a missing one a 404)."""
    registry = registry_of(model)
    check_version(version)
    snapshot = registry.snapshot()
    entry = snapshot.by_version.get(version)
    if entry is None:
        raise VersionNotFoundError(f"version {version} not found")
    return registry, snapshot, entry


def version_context(model: str | None, version: str) -> dict[str, Any]:
    """What the version page shows: metadata, artefact facts, its audit timeline (newest first)."""
    registry, snapshot, entry = find_version(model, version)
    metadata = entry.metadata
    now = datetime.now(timezone.utc)
    signature = registry.signatures.status(entry)
    shown = row(entry, now, roles(registry, snapshot), signature)
    holds = [stage for stage, role in shown.roles if role == "serving"]
    return {
        "model": model,
        "row": shown,
        "metadata": metadata,
        "pretty": _pretty(metadata) if metadata else None,
        "facts": artifact_facts(metadata, now) if metadata is not None else {},
        "canary_of": [(s, serving(registry, snapshot, s)) for s, role in shown.roles if role == "canary"],
        "load_failure": registry.load_failure(version),
        "signature": signature,
        "canary_value": metadata.get("canary") if metadata is not None else None,
        "etag": metadata_etag(metadata) if metadata is not None else None,
        "events": registry.history(version, limit=TIMELINE_SIZE + 1)[::-1],
        "approvals": approvals.of(registry, version)[::-1],
        "timeline_size": TIMELINE_SIZE,
        "stages": stage_names(snapshot),
        "allowed_stages": sorted(registry.allowed_stages) if registry.allowed_stages else None,
        "holds": holds,
        "now": now,
        "error": None,
    }


def _pretty(metadata: dict[str, Any]) -> str:
    """The metadata as indented JSON (its compact JSON, should indenting fail)."""
    try:
        return json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return json_text(metadata)


@route("/v/<version>")
def version_page(model: str | None, version: str) -> Any:
    """One version: its metadata, artefact, audit timeline and (signed in) the changes it allows."""
    return page("version.html", **version_context(model, version))


@route("/diff")
def diff_page(model: str | None) -> Any:
    """The metadata of two versions side by side, changed paths marked (default: the two newest)."""
    registry = registry_of(model)
    snapshot = registry.snapshot()
    versions = [e.version for e in snapshot.entries][::-1]
    left, right = arg("a"), arg("b")
    if not left and not right and len(versions) >= 2:
        left, right = versions[1], versions[0]
    sides = []
    for version in (left, right):
        if not version:
            sides.append(None)
            continue
        check_version(version)
        entry = snapshot.by_version.get(version)
        if entry is None:
            raise VersionNotFoundError(f"version {version} not found")
        sides.append(entry)
    lines = []
    if sides[0] is not None and sides[1] is not None:
        lines = diff(sides[0].metadata or {}, sides[1].metadata or {})
    return page("diff.html", model=model, versions=versions, left=sides[0], right=sides[1], lines=lines)


def newest_events(
    registry: ModelRegistry, version: str | None, actor: str, before: str | None, size: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``size`` events, newest first, older than event ``before`` and (case-insensitively)
    by ``actor``; and the id to page on from, None when no older one matches. Read a page of the
    trail at a time: without an actor filter a page costs one ``history`` call, whatever the trail's
    length."""
    needle = actor.casefold()
    batch = size + 1 if not needle else max(AUDIT_SCAN_BATCH, size + 1)
    found: list[dict[str, Any]] = []
    while True:
        page = registry.history(version, limit=batch, before=before)
        for event in reversed(page):
            if not needle or needle in str(event.get("actor", "")).casefold():
                found.append(event)
                if len(found) > size:
                    return found[:size], found[size - 1]["id"]
        if len(page) < batch:
            return found, None
        before = page[0]["id"]


@route("/audit")
def audit_page(model: str | None) -> Any:
    """The whole audit trail, newest first, a page at a time; filter by version and by actor."""
    registry = registry_of(model)
    version, actor, before = arg("version"), arg("actor"), arg("before")
    if version:
        check_version(version)
    events, older = newest_events(registry, version or None, actor, before or None, AUDIT_PAGE_SIZE)
    filters = {k: v for k, v in (("version", version), ("actor", actor)) if v}
    return page(
        "audit.html",
        model=model,
        events=events,
        version=version,
        actor=actor,
        first_page=not before,
        older=older,
        filters=filters,
        now=datetime.now(timezone.utc),
    )
