"""WSGI factory of ``gunicorn_wrk.py``: the example app plus ``/ping``, a bare JSON view.

gunicorn loads it as ``bench._ping_app:create_bench_app()`` from the repository root. ``/ping``
answers a precomputed JSON object exactly as long as the ``/models/latest`` answer, so both endpoints
send the same bytes per response and differ only in the work behind them. Nothing happens when this
file is run as a script (``make bench`` runs every ``bench/*.py``).
"""

from __future__ import annotations

import json

from flask import Flask, Response


def create_bench_app() -> Flask:
    """``example_app.create_app()`` (config from the environment) with ``/ping`` added."""
    from example_app import create_app

    size = len(create_app().test_client().get("/models/latest").get_data())  # a throwaway app's
    empty = len(json.dumps({"ping": ""}, separators=(",", ":")))
    body = json.dumps({"ping": "x" * max(0, size - empty)}, separators=(",", ":")).encode()
    app = create_app()

    @app.get("/ping")
    def ping() -> Response:
        """The bare endpoint: no registry, no ETag, the same number of bytes as ``/models/latest``."""
        return app.response_class(body, mimetype="application/json")

    return app
