"""The JSON API in-process (Flask test client): ``/models/latest`` and ``/models`` against bare floors.

Run: ``python bench/http_api.py`` (about 20 seconds). Named ``http_api`` rather than ``http``: a
script's folder comes first on ``sys.path``, so ``bench/http.py`` would shadow the standard library's
``http`` package that Flask and Werkzeug import.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import Row, Target, answer_items, interleaved, print_header, print_table, saved_registry
from flask import Flask, Response

from example_app import create_app

N = 2_000


def bench_app(root: Path) -> Flask:
    """The example app over ``root``, plus ``/bare/latest``: the same JSON, precomputed, no registry."""
    # the same registry as a named model too: what /models/<name>/latest adds to /models/latest
    config = {
        "MODEL_REGISTRY_ROOT": str(root),
        "MODEL_REGISTRY_MODELS": {"named": str(root)},
        "TESTING": True,
    }
    body = create_app(config).test_client().get("/models/latest").get_data()  # a throwaway app's
    app = create_app(config)

    @app.get("/bare/latest")
    def bare_latest() -> Response:
        return app.response_class(body, mimetype="application/json")

    return app


def main() -> None:
    root = saved_registry(N)
    app = bench_app(root)
    client = app.test_client()
    etag = client.get("/models/latest").headers["ETag"]
    for path in ("/models/latest", "/bare/latest", "/models", "/models/named/latest"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    assert client.get("/models/latest").data == client.get("/bare/latest").data

    latest = interleaved(
        {
            "latest": lambda: client.get("/models/latest"),
            "named": lambda: client.get("/models/named/latest"),
            "bare": lambda: client.get("/bare/latest"),
            "304": lambda: client.get("/models/latest", headers={"If-None-Match": etag}),
        },
        rounds=21,
        number=500,
    )
    listing = interleaved(
        {
            "models": lambda: client.get("/models"),
            "floor": lambda: json.dumps(answer_items(root), separators=(",", ":")),
        },
        rounds=11,
        number=5,
    )
    print_header(
        f"HTTP API in-process: Flask test client, {N:,} versions (median of interleaved rounds)",
        [
            "bare = a view in the same app returning the same /models/latest body, precomputed",
            "warm = the app's registry has answered before and nothing changed since (inotify)",
            "GET /models baseline = the cold floor (scandir + read/loads + int sort) + json.dumps",
        ],
    )
    print_table(
        [
            Row(
                "warm GET /models/latest",
                latest["latest"],
                "bare endpoint, same JSON",
                latest["bare"],
                Target("GET /models/latest within 1.5x of the bare endpoint", 1.5),
            ),
            Row(
                "warm GET /models/<name>/latest (named model)",
                latest["named"],
                "GET /models/latest (default)",
                latest["latest"],
                Target("a named model within 1.1x of the default registry", 1.1),
            ),
            Row("GET /models/latest, If-None-Match → 304", latest["304"], "bare endpoint", latest["bare"]),
            Row(
                f"warm GET /models ({N:,} versions)",
                listing["models"],
                "cold floor + json.dumps",
                listing["floor"],
                Target(f"warm GET /models of {N:,} versions ≤0.3x (cold floor + json.dumps)", 0.3),
            ),
        ]
    )


if __name__ == "__main__":
    main()
