"""The console's stage page (``<prefix>/ui/stage/<stage>``: which version served the stage when, as a
picture and a table) and the metric charts of the registry page, drawn by :mod:`.charts`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from flask import url_for
from markupsafe import Markup
from werkzeug.exceptions import BadRequest

from ..errors import InvalidMetadataError
from ..metadata import check_stage
from ..registry import ModelRegistry
from ..snapshot import Entry
from .blueprint import page, registry_of, route
from .charts import metric_charts, timeline_svg


def version_links(registry: ModelRegistry, model: str | None) -> Callable[[str], str]:
    """The URL of a version's page, or, for one no longer in the registry, of its audit events."""
    base = url_for(".version_page", model=model, version="0.0.0").removesuffix("0.0.0")
    trail = url_for(".audit_page", model=model)
    present = registry.snapshot().by_version

    def link(version: str) -> str:
        return base + version if version in present else f"{trail}?version={version}"

    return link


def registry_charts(
    registry: ModelRegistry, model: str | None, shown: Sequence[Entry], names: Sequence[str]
) -> list[Markup]:
    """A chart of each numeric metric (of ``names``) across the versions shown (ascending)."""
    rows = [(e.version, e.metadata.get("metrics") if e.metadata else None) for e in reversed(shown)]
    return metric_charts(rows, names, version_links(registry, model))


@route("/stage/<stage>")
def stage_page(model: str | None, stage: str) -> Any:
    """A stage's timeline from the audit trail: a bar per period a version served it."""
    try:
        check_stage(stage, None)
    except InvalidMetadataError as exc:
        raise BadRequest(f"stage: {exc}") from None
    registry = registry_of(model)
    periods = registry.timeline(stage)
    now = datetime.now(timezone.utc)
    link = version_links(registry, model)
    rows = [{**p, "until_or_now": p["until"] or now, "link": link(p["version"])} for p in periods[::-1]]
    return page(
        "stage.html",
        model=model,
        stage=stage,
        picture=timeline_svg(periods, now, link),
        periods=rows,
        now=now,
    )
