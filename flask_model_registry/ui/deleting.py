"""The console's delete: a confirmation page (``GET``) that says whether the version may go and
why not, and its form (``POST``, an ``admin`` signed in only, CSRF-checked, refused if the version
changed since the page was shown). The delete itself is :meth:`ModelRegistry.delete_version`, as the
API's and the CLI's: versions in use stay (see :mod:`flask_model_registry.lifecycle`)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import redirect, request, url_for

from ..access import require_role
from ..errors import PreconditionFailedError, VersionInUseError
from ..lifecycle import protection
from .actions import refuse_write
from .auth import leave_notice, visitor
from .blueprint import page, registry_of, route
from .present import metadata_etag
from .views import find_version


def _context(model: str | None, version: str) -> dict[str, Any]:
    """What the confirmation page shows: the version, why it is protected (if it is), its etag."""
    registry, snapshot, entry = find_version(model, version)
    return {
        "model": model,
        "version": version,
        "stage": entry.stage,
        "reasons": protection(registry, snapshot, registry.history()).get(version, []),
        "etag": metadata_etag(entry.metadata) if entry.metadata is not None else "",
        "error": None,
    }


@route("/v/<version>/delete", methods=["GET", "POST"])
def delete(model: str | None, version: str) -> Any:
    """``GET``: what deleting ``version`` means, or why it may not go; the ``POST`` of its form
    deletes it, then back to the registry page."""
    if request.method == "POST" and (answer := refuse_write()) is not None:
        return answer
    context = _context(model, version)
    if request.method == "GET":
        return page("delete.html", **context)
    require_role("admin", f"deleting {version}")
    expected = request.form.get("etag", "")

    def unchanged(current: dict[str, Any]) -> bool:
        return hmac.compare_digest(metadata_etag(current), expected)

    try:
        registry_of(model).delete_version(version, actor=visitor().actor or "", expected=unchanged)
    except PreconditionFailedError:
        context["error"] = f"version {version} changed since this page was shown; nothing was deleted."
        return page("delete.html", 409, **context)
    except VersionInUseError as exc:
        context["error"] = str(exc)
        return page("delete.html", 409, **context)
    leave_notice(f"Version {version} deleted; its history stays in the audit trail.")
    return redirect(url_for(".registry_page", model=model), 303)
