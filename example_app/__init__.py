"""An example prediction service: ``create_app()`` serves the newest model of the registry.

Run it with ``gunicorn -c example_app/gunicorn_conf.py 'example_app:create_app()'``. The registry
root comes from ``MODEL_REGISTRY_ROOT`` (else ``./registry``); any other config key from a
``FLASK_``-prefixed environment variable, as Flask reads them (``FLASK_MODEL_REGISTRY_API_TOKEN``);
``MODEL_STAGE`` serves the highest version of that stage instead of the highest overall.

``/predict`` goes through :meth:`ModelRegistry.route`: a version flagged ``canary`` takes its share
of the traffic, and the same routing key (the ``X-Routing-Key`` header, or a ``routing_key`` field
in the body: a user id, a session id) always gets the same version. Each answer names its version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, jsonify, request

from flask_model_registry import FlaskModelRegistry

models = FlaskModelRegistry()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service; ``config`` overrides the environment (tests pass their own root)."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    app.config["MODEL_STAGE"] = os.environ.get("MODEL_STAGE") or None
    app.config.update(config or {})
    models.init_app(app)

    @app.post("/predict")
    def predict() -> Any:
        body = request.get_json(silent=True)
        rows = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            return jsonify(error='send {"instances": [[feature, ...], ...]}'), 400
        registry = current_app.registry  # type: ignore[attr-defined]
        key = request.headers.get("X-Routing-Key") or body.get("routing_key")
        if key is not None and (isinstance(key, bool) or not isinstance(key, str | int)):
            return jsonify(error="routing_key must be a string or an integer"), 400
        served = registry.route(key, current_app.config["MODEL_STAGE"])  # the model and its version
        try:
            predictions = served.model.predict(rows)
        except (TypeError, ValueError) as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(version=served.version, predictions=predictions)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app
