"""Who may use the console: sign-in with a token, the signed session cookie, CSRF tokens.

The console keeps its own cookie rather than the host app's ``session``: it is signed with the app's
``SECRET_KEY`` (itsdangerous, as Flask's session is), ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over
HTTPS, scoped to ``<prefix>/ui/`` and expires after ``MODEL_REGISTRY_UI_SESSION_LIFETIME`` seconds,
whatever cookie settings the host app chose for its own session. It also carries a fingerprint of
the token it was opened with, so changing a token (``MODEL_REGISTRY_API_TOKEN``, or an entry of
``MODEL_REGISTRY_TOKENS``) signs out whoever used it. With named tokens the token alone signs in and
its name is the actor; with ``MODEL_REGISTRY_API_TOKEN`` alone the visitor also gives a name. What a
visitor may change is the role of the token (see :mod:`..access`).
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Response, current_app, g, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.urls import iri_to_uri

from ..access import identify, named_tokens, set_caller, token_named, tokens_configured
from ..tokens import NamedToken
from .blueprint import bp, config, error_page, page, route

COOKIE = "model_registry_ui"
_SALT = "flask-model-registry.ui-session"
MAX_ACTOR_LENGTH = 64
_OPEN_ENDPOINTS = frozenset({"model_registry_ui.static", "model_registry_ui.sign_in"})


class Mode(Enum):
    """What the console lets the current visitor do."""

    READ_ONLY = "read-only"  # no token configured: everybody reads, nobody writes
    NEEDS_SECRET_KEY = "needs-secret-key"  # a token but no SECRET_KEY: nobody can sign in
    SIGNED_OUT = "signed-out"  # a token and a key: sign in to read and write
    SIGNED_IN = "signed-in"


@dataclass
class Visitor:
    """The console state of one request: its mode, the signed-in name and token, and the session's
    CSRF token."""

    mode: Mode
    actor: str | None = None
    token: NamedToken | None = None
    csrf: str | None = None
    notice: str | None = None  # left by the previous request (after a change), shown once
    pending: str | None = None  # to show on the next page
    changed: bool = False  # the cookie must be written back

    @property
    def can_write(self) -> bool:
        """Whether the visitor's role allows any of the console's changes (all are promotions)."""
        return self.mode is Mode.SIGNED_IN and self.token is not None and self.token.has("promoter")

    @property
    def can_delete(self) -> bool:
        """Whether the visitor's role allows deleting a version (``admin``)."""
        return self.mode is Mode.SIGNED_IN and self.token is not None and self.token.has("admin")

    @property
    def asks_name(self) -> bool:
        """Whether sign-in asks a name: only with ``MODEL_REGISTRY_API_TOKEN`` alone (a named token's
        name is its actor)."""
        return not named_tokens(current_app.config)

    def may_change(self, stage: str | None) -> bool:
        """Whether the visitor may promote, demote or flag a version in ``stage``."""
        return self.can_write and self.token is not None and self.token.covers(stage)


def visitor() -> Visitor:
    """The console state of the current request (no rights at all before it was loaded)."""
    return g.get("model_registry_ui") or Visitor(Mode.SIGNED_OUT)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=_SALT)  # type: ignore[arg-type]


def _fingerprint(token: NamedToken) -> str:
    key = str(current_app.secret_key).encode()
    return hmac.new(key, token.sha256.encode(), hashlib.sha256).hexdigest()[:32]


def _load() -> Visitor:
    if not tokens_configured(current_app.config):
        return Visitor(Mode.READ_ONLY)
    if not current_app.secret_key:
        return Visitor(Mode.NEEDS_SECRET_KEY)
    data: dict[str, Any] = {}
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            loaded = _serializer().loads(raw, max_age=int(config("UI_SESSION_LIFETIME")))
        except BadSignature:  # tampered, signed with another key, or expired
            loaded = None
        data = loaded if isinstance(loaded, dict) else {}
    csrf = data.get("csrf")
    if not isinstance(csrf, str):
        return Visitor(Mode.SIGNED_OUT, csrf=secrets.token_urlsafe(32), changed=True)
    actor = data.get("actor")
    notice = data.get("notice") if isinstance(data.get("notice"), str) else None
    token = token_named(data["token"]) if isinstance(data.get("token"), str) else None
    if token is None or not isinstance(actor, str):
        token = None
    elif not hmac.compare_digest(str(data.get("key", "")), _fingerprint(token)):
        token = None  # the token was changed since: sign in again
    elif named_tokens(current_app.config):
        actor = token.name
    signed_in = token is not None
    set_caller(token)
    return Visitor(
        Mode.SIGNED_IN if signed_in else Mode.SIGNED_OUT,
        actor=actor if signed_in else None,
        token=token,
        csrf=csrf,
        notice=notice,
        changed=notice is not None,  # shown once: written back without it
    )


def _save(response: Response, state: Visitor) -> None:
    data: dict[str, Any] = {"csrf": state.csrf}
    if state.actor is not None and state.token is not None:
        data.update(actor=state.actor, token=state.token.name, key=_fingerprint(state.token))
    if state.pending is not None:
        data["notice"] = state.pending
    response.set_cookie(
        COOKIE,
        _serializer().dumps(data),
        max_age=int(config("UI_SESSION_LIFETIME")),
        path=url_for(".registry_page", model=None),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )


def leave_notice(text: str) -> None:
    """A message for the next page this visitor sees (after a redirect)."""
    state = visitor()
    state.pending, state.changed = text, True


@bp.before_request
def _gate() -> Any:
    """Load the visitor; with a token set, nothing but the sign-in page and static files is open."""
    state = g.model_registry_ui = _load()
    endpoint = request.endpoint or ""
    if endpoint in _OPEN_ENDPOINTS:
        return None
    if state.mode is Mode.NEEDS_SECRET_KEY:
        return page("needs_secret_key.html", 503)
    if state.mode is Mode.SIGNED_OUT:
        return redirect(url_for(".sign_in", next=request.full_path.rstrip("?")), 303)
    return None


@bp.after_request
def _write_cookie(response: Response) -> Response:
    state: Visitor | None = g.get("model_registry_ui")
    if state is not None and state.changed and state.csrf is not None:
        _save(response, state)
    return response


def check_csrf() -> tuple[str, int] | None:
    """None if the form carries this session's CSRF token, else the 403 page to answer with."""
    state = visitor()
    given = request.form.get("csrf_token", "")
    if state.csrf is None or not given or not hmac.compare_digest(given.encode(), state.csrf.encode()):
        return error_page(
            403,
            "Form refused",
            "This form did not carry a valid CSRF token (it expired, or did not come from this console)."
            " Reload the page and try again.",
        )
    return None


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of this console named by a relative path, else the
    console's front page; never another site, never a header-breaking character (CR, LF, any
    control character), whatever ``next`` holds. Non-ASCII is percent-encoded."""
    home = url_for(".registry_page", model=None)
    if not target or "\\" in target or any(not char.isprintable() for char in target):
        return home
    uri = iri_to_uri(target)
    parts = urlsplit(uri)
    path = unquote(parts.path)
    resolved = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
    if parts.scheme or parts.netloc or "\\" in path or not resolved.startswith(home) or resolved != path:
        return home
    return uri


@route("/sign-in", methods=["GET", "POST"])
def sign_in(model: str | None) -> Any:
    """The sign-in form: a token, once (and, with ``MODEL_REGISTRY_API_TOKEN`` alone, the name
    recorded as the actor of changes; a named token's name is its actor)."""
    state = visitor()
    if state.mode is Mode.READ_ONLY:
        return page("sign_in.html", 404, next_url=None, error=None)
    if state.mode is Mode.NEEDS_SECRET_KEY:
        return page("needs_secret_key.html", 503)
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return page("sign_in.html", next_url=next_url, error=None)
    refused = check_csrf()
    if refused is not None:
        return refused
    named = named_tokens(current_app.config)
    given = request.form.get("token", "")
    token = identify(given) if given else None
    if token is None:
        error = (
            "That token is not one of the registry's tokens." if named else "That token is not the API token."
        )
        return page("sign_in.html", 401, next_url=next_url, error=error)
    name = token.name if named else request.form.get("name", "").strip()
    if not name or len(name) > MAX_ACTOR_LENGTH or not name.isprintable():
        error = (
            f"Give your name (1 to {MAX_ACTOR_LENGTH} printable characters): it is recorded with each change."
        )
        return page("sign_in.html", 400, next_url=next_url, error=error)
    # A new CSRF token at sign-in: a token planted before (session fixation) is worth nothing after.
    state.mode, state.actor, state.token = Mode.SIGNED_IN, name, token
    state.csrf, state.changed = secrets.token_urlsafe(32), True
    leave_notice(f"Signed in as {name} ({token.role}).")
    return redirect(next_url, 303)


@route("/sign-out", methods=["POST"])
def sign_out(model: str | None) -> Any:
    """Forget the session (a POST with the CSRF token: a link elsewhere cannot sign you out)."""
    refused = check_csrf()
    if refused is not None:
        return refused
    state = visitor()
    state.mode, state.actor, state.token = Mode.SIGNED_OUT, None, None
    state.csrf, state.changed = secrets.token_urlsafe(32), True
    leave_notice("Signed out.")
    return redirect(url_for(".sign_in"), 303)
