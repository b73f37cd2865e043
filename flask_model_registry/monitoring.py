"""``<prefix>/health`` and ``<prefix>/metrics``: what a load balancer and Prometheus ask a service.

- ``GET <prefix>/health``: ``200 {"status": "ok"}`` when the storage of every registry of the app
  answered at its last refresh (a refresh is made first if one is due), else ``503`` with the JSON
  error (a root that does not exist says so, as the API does). It never loads a model, never needs
  the token and names no version, path or bucket; it names a failing named model only with the
  token (or when none is set), as every other endpoint does.
- ``GET <prefix>/metrics``: the Prometheus text format (see :mod:`.metrics`); with
  ``MODEL_REGISTRY_API_TOKEN`` set it needs the token, as every read does. Without the ``metrics``
  extra it answers ``501`` naming the extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app
from werkzeug.exceptions import HTTPException, default_exceptions

from .api import authorize, error_response, http_error_response, options_in_json, unexpected_error
from .errors import RootMissingError
from .registry import ModelRegistry

bp = Blueprint("model_registry_monitoring", __name__)

#: ``app.extensions`` key: the app's registries, each with its metrics observer.
METRICS_KEY = "model_registry_metrics"


def init_monitoring(app: Flask, prefix: str | None) -> None:
    """Count the app's registries into the Prometheus collectors (when ``prometheus_client`` is
    installed) and mount ``/health`` and ``/metrics`` under ``prefix`` (falsy: no HTTP routes)."""
    try:
        from . import metrics
    except ImportError:  # the metrics extra is not installed: /metrics says so
        pass
    else:
        app.extensions[METRICS_KEY] = [
            (metrics.observe(registry, model), registry) for model, registry in _registries(app)
        ]
    if prefix:
        app.register_blueprint(bp, url_prefix="/" + prefix.strip("/"))


def _registries(app: Flask) -> Iterator[tuple[str, ModelRegistry]]:
    """The app's registries and their ``model`` label: the default one (``""``), then named ones."""
    yield "", app.extensions["model_registry"]
    yield from getattr(app, "registries", {}).items()


# JSON answers as the API's own: errors whatever handlers the host registers, OPTIONS in JSON.
bp.register_error_handler(HTTPException, http_error_response)
for _code in default_exceptions:
    bp.register_error_handler(_code, http_error_response)
bp.register_error_handler(Exception, unexpected_error)
bp.after_request(options_in_json)


@bp.after_request
def _never_cached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/health")
def health() -> Response:
    """200 when every registry's storage answered at its last refresh; 503 otherwise, saying why in
    words that name no root, and naming the model only to a caller the API would show it to."""
    for model, registry in _registries(current_app):
        failure = _failure(registry)
        if failure is not None:
            if model:  # a name is shown as the API shows it: with the token, or when none is set
                failure = (f"model {model!r}: " if authorize() is None else "a named model: ") + failure
            return error_response(503, failure)
    return current_app.response_class(b'{"status":"ok"}', mimetype="application/json")


def _failure(registry: ModelRegistry) -> str | None:
    """Why ``registry`` is not healthy, or None: a root that is not there says so (as the API
    does), any other failure that the storage did not answer."""
    try:
        registry.snapshot()
        error = registry.last_refresh_error
    except Exception as exc:
        error = exc
    if error is None:
        return None
    if isinstance(error, RootMissingError):
        return f"the registry root {error.kind} does not exist (check the configured root)"
    return "the registry's storage did not answer at the last refresh"


@bp.get("/metrics")
def metrics_text() -> Response:
    """The Prometheus text format of the package's metrics, summed over every gunicorn worker."""
    refused = authorize()  # the token rules of every read
    if refused is not None:
        return refused
    try:
        from .metrics import exposition
    except ImportError:
        return error_response(
            501, "metrics need prometheus_client: pip install 'flask-model-registry[metrics]'"
        )
    for observer, registry in current_app.extensions.get(METRICS_KEY, ()):  # gauges as of now
        with contextlib.suppress(Exception):  # a failure is counted and /health reports it
            observer.refreshed(registry, len(registry.snapshot().entries))
    body, content_type = exposition()
    return current_app.response_class(body, content_type=content_type)
