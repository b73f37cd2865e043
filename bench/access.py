"""What named tokens cost a request: warm ``GET /models/latest`` and a ``PATCH`` with 50 named tokens
(every entry hashed-compared in constant time) against the same with no token at all.

Run: ``python bench/access.py`` (about 20 seconds).
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

from _common import Row, Target, interleaved, print_header, print_table, saved_registry
from flask import Flask

from example_app import create_app

N = 200
TOKENS = 50


def app_with(root: Path, **config: Any) -> Flask:
    return create_app({"MODEL_REGISTRY_ROOT": str(root), "TESTING": True, **config})


def named(count: int) -> dict[str, dict[str, str]]:
    """``count`` named tokens, the last one the promoter the benchmark sends (``token-<count-1>``)."""
    return {
        f"token-{i}": {"sha256": hashlib.sha256(f"secret-{i}".encode()).hexdigest(), "role": "promoter"}
        for i in range(count)
    }


def main() -> None:
    root = saved_registry(N)
    version = app_with(root).registry.list_versions()[-2]
    open_app = app_with(root)
    one = app_with(root, MODEL_REGISTRY_API_TOKEN="shared-secret")
    many = app_with(root, MODEL_REGISTRY_TOKENS=named(TOKENS))
    clients = {"open": open_app.test_client(), "api": one.test_client(), "named": many.test_client()}
    headers = {
        "open": {},
        "api": {"Authorization": "Bearer shared-secret"},
        "named": {"Authorization": f"Bearer secret-{TOKENS - 1}"},
    }
    for name, client in clients.items():
        assert client.get("/models/latest", headers=headers[name]).status_code == 200, name
    counter = itertools.count()

    def patch(name: str) -> None:
        # the API's writes need a token: the open app's baseline is the registry's own call
        notes = {"notes": f"run {next(counter)}"}
        if name == "open":
            open_app.registry.update_metadata(version, notes, actor="bench")
            return
        answer = clients[name].patch(f"/models/{version}", json=notes, headers=headers[name])
        assert answer.status_code == 200, answer.data

    reads = interleaved(
        {name: (lambda n=name: clients[n].get("/models/latest", headers=headers[n])) for name in clients},
        rounds=21,
        number=300,
    )
    writes = interleaved({name: (lambda n=name: patch(n)) for name in clients}, rounds=11, number=20)
    print_header(
        f"Named tokens: Flask test client, {N} versions, {TOKENS} tokens (median of interleaved rounds)",
        [
            "open = no token configured (reads open); api = MODEL_REGISTRY_API_TOKEN alone",
            "PATCH baseline = registry.update_metadata() in the same process (an open app refuses writes)",
        ],
    )
    print_table(
        [
            Row(
                f"warm GET /models/latest, {TOKENS} named tokens",
                reads["named"],
                "no token configured",
                reads["open"],
                Target(f"{TOKENS} named tokens within 1.3x of no token", 1.3),
            ),
            Row(
                "warm GET /models/latest, API token alone", reads["api"], "no token configured", reads["open"]
            ),
            Row(
                f"PATCH (editor's metadata), {TOKENS} named tokens",
                writes["named"],
                "update_metadata() without HTTP",
                writes["open"],
            ),
            Row("PATCH, API token alone", writes["api"], "update_metadata() without HTTP", writes["open"]),
        ]
    )


if __name__ == "__main__":
    main()
