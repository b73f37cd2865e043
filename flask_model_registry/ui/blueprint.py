"""The console's blueprint, mounted at ``<prefix>/ui``: pages, forms and the package's own static files.

Every page is HTML rendered on the server from the package's templates: no CDN, no build step, no
JavaScript needed. Errors inside the console are HTML pages too; a URL under ``<prefix>/ui/`` that
names no page stays the API's JSON 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, url_for
from werkzeug.exceptions import HTTPException, default_exceptions

from ..context import get_registry
from ..errors import RegistryError
from ..registry import ModelRegistry

log = logging.getLogger(__name__)

bp = Blueprint(
    "model_registry_ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: Security headers on every console answer: nothing is loaded from anywhere but the app, no
#: framing (forms change production), no caching of pages that carry a CSRF token.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def register_ui(app: Flask, prefix: str) -> None:
    """Mount the console at ``<prefix>/ui``."""
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise ValueError("MODEL_REGISTRY_URL_PREFIX must not be '/': the console lives under it")
    app.register_blueprint(bp, url_prefix=f"{prefix}/ui")
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(f"{bp.name}."):
            # "<prefix>/ui//v/1.0.0": the API's JSON 404 for a URL that names no page, not a
            # routing redirect (the API answers those in JSON, where a Location would be lost).
            rule.merge_slashes = False


def route(rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A console view, for the default registry (and, under ``/m/<name>``, for each named one)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        bp.add_url_rule(rule, view_func=view, defaults={"model": None}, **options)
        bp.add_url_rule(f"/m/<model>{rule}", view_func=view, **options)
        return view

    return decorate


def registry_of(model: str | None) -> ModelRegistry:
    """The registry a console URL names: the default one, or a named model (``/m/<name>/``)."""
    return get_registry(model)


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """Render one of the console's templates."""
    return render_template(f"model_registry_ui/{template}", **context), status


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    """An HTML error page inside the console (the JSON API keeps its own JSON errors)."""
    return page("message.html", status, title=title, message=message)


@bp.route("", defaults={"model": None})
def _bare_prefix(model: None) -> Response:
    """``<prefix>/ui`` without its slash: to the console's front page."""
    return redirect(url_for(".registry_page", model=model), 308)


@bp.route("/m/<model>")
def _bare_model(model: str) -> Response:
    """``<prefix>/ui/m/<name>`` without its slash: to that model's front page (a redirect of the
    console's own, with its ``Location``; Werkzeug's slash redirect would be answered in JSON)."""
    return redirect(url_for(".registry_page", model=model), 308)


@bp.errorhandler(RegistryError)
def _registry_error(exc: RegistryError) -> tuple[str, int]:
    return error_page(exc.http_status, type(exc).__name__, str(exc))


def _http_error(exc: HTTPException) -> tuple[str, int]:
    return error_page(exc.code or 500, exc.name, exc.description or exc.name)


# Per status code, not only for HTTPException: Flask asks a host's errorhandler(404) before a
# blueprint's class handlers, and the console's errors are its own pages whatever the host registers.
for _code in default_exceptions:
    bp.register_error_handler(_code, _http_error)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("unexpected error in the model registry console")
    return error_page(
        500, "Internal error", "The console hit an unexpected error; the server log has the details."
    )


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def config(key: str) -> Any:
    """A ``MODEL_REGISTRY_*`` config value of the current app."""
    return current_app.config[f"MODEL_REGISTRY_{key}"]
