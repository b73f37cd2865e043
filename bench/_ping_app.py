"""WSGI entry of ``gunicorn_wrk.py``: the example app plus ``/ping``, a bare JSON view.

``/ping`` answers a precomputed JSON object exactly as long as the ``/models/latest`` answer, so
both endpoints send the same bytes per response and differ only in the work behind them.
"""

from __future__ import annotations

import json

from flask import Response

from example_app import create_app


def _ping_body() -> bytes:
    size = len(create_app().test_client().get("/models/latest").get_data())  # a throwaway app's
    empty = len(json.dumps({"ping": ""}, separators=(",", ":")))
    return json.dumps({"ping": "x" * max(0, size - empty)}, separators=(",", ":")).encode()


app = create_app()
_BODY = _ping_body()


@app.get("/ping")
def ping() -> Response:
    """The bare endpoint: no registry, no ETag, the same number of bytes as ``/models/latest``."""
    return app.response_class(_BODY, mimetype="application/json")
