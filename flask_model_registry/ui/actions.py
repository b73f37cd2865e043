"""The console's changes (``POST`` forms, signed in only): promote, demote, set or clear a flag or the
canary weight, approve for a stage, and roll a stage back. Each goes through the registry's own
calls (atomic, audited, under its stage rules), as the signed-in name, and only if the version is
still what the form showed (its metadata fingerprint): a stale form is refused, never applied
blindly."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from flask import redirect, request, url_for

from ..access import check_change, require_role
from ..errors import (
    AccessDeniedError,
    InvalidMetadataError,
    PreconditionFailedError,
    PromotionRefusedError,
    RegistryError,
    RollbackIncompleteError,
)
from ..metadata import RESERVED_KEYS, check_stage
from ..registry import ModelRegistry
from ..rollout import Promotion, apply_rollback, promote
from ..trail import CANARY, Rollback, rollback_plan
from ..versioning import check_version
from .auth import Mode, check_csrf, leave_notice, visitor
from .blueprint import error_page, page, registry_of, route
from .present import metadata_etag
from .views import version_context


class StaleFormError(RegistryError):
    """The version changed since the form was rendered: nothing was written."""

    http_status = 409


def refuse_write() -> tuple[str, int] | None:
    """The page to answer a write with when this visitor is not signed in or the CSRF token is wrong
    (what the visitor's role allows is checked with each change)."""
    if visitor().mode is not Mode.SIGNED_IN:
        return error_page(403, "Read-only", "Changes from the console need a token: sign in first.")
    return check_csrf()


def _write(
    registry: ModelRegistry,
    version: str,
    expected: str,
    changes: Mapping[str, Any],
    actor: str,
    promoting: bool = False,
) -> Promotion | None:
    """Apply ``changes`` if the visitor's role allows them and the version's metadata still has the
    fingerprint ``expected``: both checked inside the registry's compare-and-swap, against the very
    metadata the change replaces (a refusal is :class:`AccessDeniedError`, nothing written). A
    promotion goes through :func:`~flask_model_registry.rollout.promote`, as ``flask models
    promote`` does: it ends a canary in the same change, and returns what it did."""

    unchanged = _unchanged(expected, version, changes)  # a promotion's canary removal needs the same role
    try:
        if promoting:
            return promote(registry, version, changes["stage"], actor=actor, expected=unchanged)
        if set(changes) == {"stage"}:
            registry.set_stage(version, changes["stage"], actor=actor, expected=unchanged)
        else:
            registry.update_metadata(version, changes, actor=actor, expected=unchanged)
        return None
    except PreconditionFailedError:
        raise _stale(version) from None


def _unchanged(expected: str, version: str, changes: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """A test of a version's current metadata: the visitor's role allows ``changes`` to it (else
    :class:`AccessDeniedError`), and it still has the fingerprint the form showed."""

    def unchanged(current: dict[str, Any]) -> bool:
        check_change(version, current, changes)
        return hmac.compare_digest(metadata_etag(current), expected)

    return unchanged


def _stale(version: str) -> StaleFormError:
    return StaleFormError(
        f"version {version} changed since this page was shown; nothing was changed."
        " Look at its current state below and try again."
    )


def _flag_name(text: str) -> str:
    name = text.strip()
    if not name or name in RESERVED_KEYS or name == "stage" or len(name) > 64 or not name.isprintable():
        raise InvalidMetadataError(
            f"{name[:40]!r} cannot be a flag: give a name such as 'canary' (not stage, version,"
            " created_at or artifact)"
        )
    return name


def _weight(text: str) -> float | int:
    try:
        weight = float(text)
    except ValueError:
        weight = float("nan")
    if not 0 < weight <= 1:
        raise InvalidMetadataError(f"canary weight must be a number in (0, 1], not {text[:20]!r}")
    return int(weight) if weight == 1 else weight


def _changes(op: str, metadata: Mapping[str, Any], allowed: Any) -> tuple[dict[str, Any], str]:
    """The merge patch a form asks for, and what to tell the user once it is done."""
    form = request.form
    if op == "promote":
        stage = check_stage(form.get("stage", "").strip(), allowed)
        return {"stage": stage}, f"now in stage {stage}"
    if op == "demote":
        return {"stage": None}, "no longer in a stage"
    if op == "set-flag":
        name = _flag_name(form.get("flag", ""))
        if name in metadata and not isinstance(metadata[name], bool) and name != CANARY:
            raise InvalidMetadataError(f"{name!r} holds {type(metadata[name]).__name__}, not a flag")
        return {name: True}, f"flag {name} set"
    if op == "clear-flag":
        name = _flag_name(form.get("flag", ""))
        if name in metadata and not isinstance(metadata[name], bool) and name != CANARY:
            raise InvalidMetadataError(f"{name!r} is not a flag; edit it through the API")
        return {name: None}, f"flag {name} cleared"
    weight = _weight(form.get("weight", ""))
    return {CANARY: weight}, f"canary weight {weight}"


def _approve(registry: ModelRegistry, version: str) -> str:
    """Approve the version for the form's stage, as the signed-in name; what to tell the user."""
    stage = check_stage(request.form.get("stage", "").strip(), registry.allowed_stages)
    require_role("promoter", f"approving {version} for {stage}", stage=stage)
    registry.approve(version, stage, actor=visitor().actor or "")
    return f"approved for stage {stage}"


@route("/v/<version>/<any(promote, demote, 'set-flag', 'clear-flag', canary, approve):op>", methods=["POST"])
def change(model: str | None, version: str, op: str) -> Any:
    """Apply one form of the version page; back to that page with what happened."""
    refused = refuse_write()
    if refused is not None:
        return refused
    registry = registry_of(model)
    check_version(version)
    outcome = None
    try:
        if op == "approve":
            done = _approve(registry, version)
        else:
            changes, done = _changes(op, registry.get_metadata(version), registry.allowed_stages)
            expected, actor = request.form.get("etag", ""), visitor().actor or ""
            outcome = _write(registry, version, expected, changes, actor, promoting=op == "promote")
    except (InvalidMetadataError, StaleFormError, AccessDeniedError, PromotionRefusedError) as exc:
        context = version_context(model, version)
        context["error"] = str(exc)
        return page("version.html", exc.http_status, **context)
    if outcome is not None and outcome.ended_canary is not None:
        done += f"; its canary value {json.dumps(outcome.ended_canary)} was removed (the split has ended)"
    leave_notice(f"{version}: {done}.")
    return redirect(url_for(".version_page", model=model, version=version), 303)


def _fingerprints(registry: ModelRegistry, plan: Rollback) -> tuple[str, dict[str, str]]:
    """A fingerprint of a rollback and of the metadata of every version it changes, and the latter."""
    etags = {v: metadata_etag(registry.get_metadata(v)) for v in sorted({plan.target, *plan.demote})}
    parts = [plan.stage, plan.current, plan.target, sorted(plan.demote.items()), sorted(etags.items())]
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest(), etags


@route("/rollback", methods=["GET", "POST"])
def rollback(model: str | None) -> Any:
    """Give a stage back to the version that held it before its current one (from the audit trail):
    ``GET`` shows what would change, the ``POST`` of that page does it."""
    if request.method == "POST" and (refused := refuse_write()) is not None:
        return refused
    registry = registry_of(model)
    stage = check_stage(request.values.get("stage", "").strip(), None)
    plan = rollback_plan(registry.snapshot(), registry.history(), stage)
    fingerprint, etags = _fingerprints(registry, plan) if plan is not None else ("", {})
    context = {"model": model, "stage": stage, "plan": plan, "plan_etag": fingerprint, "error": None}
    if request.method == "GET" or plan is None:
        return page("rollback.html", 200 if plan is not None else 404, **context)
    if request.form.get("plan", "") != fingerprint:
        context["error"] = (
            f"stage {stage} changed since this page was shown; nothing was changed."
            " Look at the rollback it allows now and try again."
        )
        return page("rollback.html", 409, **context)
    moves = {plan.target: stage, **plan.demote}  # each checked (role too) before the first is made
    checks = {v: _unchanged(e, v, {"stage": moves[v]}) for v, e in etags.items()}
    try:
        apply_rollback(registry, plan, visitor().actor or "", checks)
    except PreconditionFailedError:
        raise _stale(plan.target) from None
    except RollbackIncompleteError as exc:  # says exactly which versions stay changed
        context["error"] = str(exc)
        return page("rollback.html", exc.http_status, **context)
    leave_notice(f"Stage {stage} rolled back from {plan.current} to {plan.target}.")
    return redirect(url_for(".registry_page", model=model), 303)
