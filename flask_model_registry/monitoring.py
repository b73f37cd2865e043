"""``<prefix>/health`` and ``<prefix>/metrics``: what a load balancer and Prometheus ask a service.

- ``GET <prefix>/health``: ``200 {"status": "ok"}`` when the storage of every registry of the app
  answered at its last refresh (a refresh is made first if one is due), else ``503`` with the JSON
  error. It never loads a model, never needs the token and names no version, path or bucket.
- ``GET <prefix>/metrics``: the Prometheus text format (see :mod:`.metrics`); with
  ``MODEL_REGISTRY_API_TOKEN`` set it needs the token, as every read does. Without the ``metrics``
  extra it answers ``501`` naming the extra.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, request

from .registry import ModelRegistry

log = logging.getLogger(__name__)

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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": status, "message": message}}, separators=(",", ":"))
    return current_app.response_class(body, status=status, mimetype="application/json", headers=headers)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error in %s", request.path)
    return _error(500, "internal error in the model registry; the server log has the details")


@bp.after_request
def _never_cached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/health")
def health() -> Response:
    """200 when every registry's storage answered at its last refresh; 503 otherwise."""
    for model, registry in _registries(current_app):
        try:
            registry.snapshot()
            failed = registry.last_refresh_error is not None
        except Exception:
            failed = True
        if failed:
            which = f"model {model!r}: " if model else ""
            return _error(503, f"{which}the registry's storage did not answer at the last refresh")
    return current_app.response_class(b'{"status":"ok"}', mimetype="application/json")


@bp.get("/metrics")
def metrics_text() -> Response:
    """The Prometheus text format of the package's metrics, summed over every gunicorn worker."""
    token = current_app.config.get("MODEL_REGISTRY_API_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), str(token).encode()):
            return _error(
                401,
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": 'Bearer realm="models"'},
            )
    try:
        from .metrics import exposition
    except ImportError:
        return _error(501, "metrics need prometheus_client: pip install 'flask-model-registry[metrics]'")
    for observer, registry in current_app.extensions.get(METRICS_KEY, ()):  # gauges as of now
        with contextlib.suppress(Exception):  # a failure is counted and /health reports it
            observer.refreshed(registry, len(registry.snapshot().entries))
    body, content_type = exposition()
    return current_app.response_class(body, content_type=content_type)
