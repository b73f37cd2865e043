"""An example prediction service: ``create_app()`` serves a model of the registry at ``/predict``.

Run it with ``gunicorn -c example_app/gunicorn_conf.py 'example_app:create_app()'``. The registry
root comes from ``MODEL_REGISTRY_ROOT`` (else ``./registry``); any other config key from a
``FLASK_``-prefixed environment variable, as Flask reads them (``FLASK_MODEL_REGISTRY_API_TOKEN``).

``/predict`` serves the stage ``MODEL_STAGE`` (config key, or environment variable ``MODEL_STAGE``;
default ``prod``); ``MODEL_STAGE=`` (empty) serves all versions whatever their stage. It goes
through :meth:`ModelRegistry.route`: a version flagged ``canary`` takes its share of the traffic,
and the same routing key (the ``X-Routing-Key`` header, or a ``routing_key`` field in the body: a
user id, a session id) always gets the same version. Each answer names its version. Its errors are
JSON, as the registry's API answers them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from flask_model_registry import FlaskModelRegistry, RegistryError
from flask_model_registry.metadata import check_stage

models = FlaskModelRegistry()

#: The stage ``/predict`` serves unless ``MODEL_STAGE`` says otherwise.
DEFAULT_STAGE = "prod"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service; ``config`` overrides the environment (tests pass their own root)."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    app.config.setdefault("MODEL_STAGE", os.environ.get("MODEL_STAGE", DEFAULT_STAGE))
    app.config.update(config or {})
    stage = app.config["MODEL_STAGE"] or None
    if stage is not None:
        check_stage(stage, None)  # a typo is an error at start-up, not a 404 on every request
    models.init_app(app)
    app.register_error_handler(RegistryError, lambda exc: json_error(exc.http_status, str(exc)))
    app.register_error_handler(HTTPException, lambda exc: json_error(exc.code or 500, exc.description))
    app.register_error_handler(Exception, internal_error)

    @app.post("/predict")
    def predict() -> Any:
        body = request.get_json(silent=True)
        rows = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            return json_error(400, 'send {"instances": [[feature, ...], ...]}')
        key = request.headers.get("X-Routing-Key") or body.get("routing_key")
        if key is not None and (isinstance(key, bool) or not isinstance(key, str | int)):
            return json_error(400, "routing_key must be a string or an integer")
        served = current_app.registry.route(key, stage)  # type: ignore[attr-defined]
        try:
            predictions = served.model.predict(rows)
        except (TypeError, ValueError) as exc:
            return json_error(400, str(exc))
        return jsonify(version=served.version, predictions=predictions)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app


def internal_error(exc: Exception) -> Any:
    current_app.logger.exception("unexpected error")
    return json_error(500, "internal error; the server log has the details")


def json_error(status: int, message: str) -> Any:
    """The service's errors in the registry API's shape: ``{"error": {"code", "message"}}``."""
    return jsonify(error={"code": status, "message": message}), status
