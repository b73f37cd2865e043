"""Who the current request is and what it may change: the role checks the HTTP API and the console share.

The adapters identify the caller (the API from its ``Authorization`` header, the console from its
session) with :func:`identify` and keep it with :func:`set_caller`; every write then asks
:func:`require_role` (or :func:`check_change`, which works out the roles a metadata change needs),
which raises :class:`AccessDeniedError` (403, naming the role needed) before anything is written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from flask import current_app, g

from .config import api_token
from .errors import AccessDeniedError
from .metadata import changed_keys, merge_patch
from .tokens import TOKENS_KEY, NamedToken, match, token_table
from .trail import CANARY

_CALLER = "model_registry_caller"
#: ``app.extensions`` key of the app's token table, with the config it was built from.
_TABLE = "model_registry_tokens"


def named_tokens(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` names tokens (``MODEL_REGISTRY_TOKENS``): then the actor is the token's name."""
    return bool(config.get(TOKENS_KEY))


def tokens_configured(config: Mapping[str, Any]) -> bool:
    """Whether requests need a token: named tokens or ``MODEL_REGISTRY_API_TOKEN`` are set."""
    return named_tokens(config) or api_token(config) is not None


def tokens() -> list[NamedToken]:
    """Every token of the current app as its config says now (also one set after ``init_app``):
    parsed once, and again only when the config's tokens are no longer equal to what was parsed."""
    config = current_app.config
    entries, api = config.get(TOKENS_KEY) or {}, api_token(config)
    cached = current_app.extensions.get(_TABLE)
    if cached is not None and cached[0] == entries and cached[1] == api:
        return cached[2]
    table = token_table(entries, api)
    current_app.extensions[_TABLE] = (copy.deepcopy(entries), api, table)
    return table


def identify(given: str) -> NamedToken | None:
    """The current app's token that ``given`` is, or None (an unknown token, or a configured sha256)."""
    return match(tokens(), given)


def token_named(name: str) -> NamedToken | None:
    """The current app's token of that name, or None (it was removed from the config)."""
    return next((token for token in tokens() if token.name == name), None)


def set_caller(token: NamedToken | None) -> None:
    """Remember who the current request is, for :func:`require_role` and :func:`caller`."""
    setattr(g, _CALLER, token)


def caller() -> NamedToken | None:
    """The token the current request was made with (None: no token, or none configured)."""
    return g.get(_CALLER)


def require_role(role: str, what: str, stage: str | None = None) -> NamedToken:
    """The caller's token if it holds ``role`` (and, when it is limited to stages, lists ``stage``);
    else :class:`AccessDeniedError` (403) saying what needs which role. ``what`` names the change:
    ``"approving 1.2.0 for prod"``."""
    token = caller()
    if token is None:
        how = (
            "send one (Authorization: Bearer) or sign in"
            if tokens_configured(current_app.config)
            else "writes are disabled until MODEL_REGISTRY_TOKENS or MODEL_REGISTRY_API_TOKEN is set"
        )
        raise AccessDeniedError(f"{what} needs a token with role {role}: {how}", role=role)
    if not token.has(role):
        raise AccessDeniedError(
            f"{what} needs role {role} (or above); token {token.name!r} has role {token.role}", role=role
        )
    if not token.covers(stage):
        listed = ", ".join(sorted(token.stages or ())) or "none"
        raise AccessDeniedError(
            f"{what} needs role {role} for stage {stage!r};"
            f" token {token.name!r} is limited to stages: {listed}",
            role=role,
        )
    return token


def _stage(metadata: Mapping[str, Any]) -> str | None:
    """A version's stage as a name (a hand-made non-string stage as its JSON text)."""
    stage = metadata.get("stage")
    return stage if stage is None or isinstance(stage, str) else json.dumps(stage)


def check_change(version: str, current: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """Require the roles that applying the merge patch ``changes`` to ``current`` needs: ``editor``
    for metadata, ``promoter`` for the stage (the stage left and the stage entered both listed) and
    flags (``canary``, any key boolean before or after; the version's stage listed). Keys the patch
    leaves as they are need nothing."""
    updated = merge_patch(dict(current), dict(changes))
    before, after = changed_keys(current, updated)
    keys = {*before, *after}
    flags = {
        key
        for key in keys
        if key == CANARY or isinstance(before.get(key), bool) or isinstance(after.get(key), bool)
    } - {"stage"}
    others = keys - flags - {"stage"}
    if others:
        require_role("editor", f"changing {', '.join(sorted(others))} of {version}")
    if "stage" in keys:
        left, entered = _stage(current), _stage(updated)
        what = f"moving {version} from {left or 'no stage'} to {entered or 'no stage'}"
        require_role("promoter", what, left)
        require_role("promoter", what, entered)
    if flags:
        require_role("promoter", f"changing flag {', '.join(sorted(flags))} of {version}", _stage(current))
