"""A fleet: two replicas (real gunicorn, two workers each) sharing one registry on an S3 server."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Callable

from servers import Store
from servers_gunicorn import get, gunicorn

from example_app.model import LinearModel
from flask_model_registry import ModelRegistry

REFRESH = 1.0  # seconds a replica may lag behind a change made elsewhere
# Process scheduling, the listing round trip and two workers polling independently. Generous, since a
# busy 2-core machine delays each of them by seconds; still far below the full listing's 60 s, so a
# change found only by a full listing (not by the refresh) fails the test.
SLACK = 15.0
TOKEN = "fleet-token"


def replica_env(store: Store, root: str, **extra: str) -> dict[str, str]:
    """How a replica would be configured in its container: environment variables only."""
    return {
        "MODEL_REGISTRY_ROOT": root,
        "FLASK_MODEL_REGISTRY_STORAGE_OPTIONS": json.dumps(store.storage_options),
        "FLASK_MODEL_REGISTRY_REFRESH_INTERVAL": str(REFRESH),
        **extra,
    }


def converges(read: Callable[[], str], expected: str, since: float) -> float:
    """Poll until ``read()`` gives ``expected`` ten times in a row (both workers); the lag in seconds."""
    streak = 0
    while streak < 10:
        assert time.monotonic() - since < REFRESH + SLACK, f"still {read()!r}, expected {expected!r}"
        streak = streak + 1 if read() == expected else 0
    return time.monotonic() - since


def test_replicas_follow_publications_and_promotions_made_elsewhere(s3_server: Store):
    root = s3_server.url(f"fleet-{uuid.uuid4().hex}")
    trainer = ModelRegistry(root, storage_options=s3_server.storage_options)  # a training job's host
    trainer.save_model("1.0.0", LinearModel((1.0, 0.0, 0.0)), {"stage": "prod"})

    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(
            gunicorn(replica_env(s3_server, root, FLASK_MODEL_REGISTRY_API_TOKEN=TOKEN))
        )
        replica = stack.enter_context(gunicorn(replica_env(s3_server, root)))

        def latest(query: str = "") -> str:
            status, body = get(f"{replica}/models/latest{query}")
            assert status == 200, body
            return body["version"]

        assert latest() == "1.0.0"

        published = time.monotonic()
        trainer.save_model("1.1.0", LinearModel((0.0, 2.0, 0.0)), {"stage": "staging"})
        lag_publish = converges(latest, "1.1.0", published)
        assert latest("?stage=prod") == "1.0.0"

        promoted = time.monotonic()
        request = urllib.request.Request(
            f"{admin}/models/1.1.0",
            data=json.dumps({"stage": "prod"}).encode(),
            method="PATCH",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["metadata"]["stage"] == "prod"
        lag_promote = converges(lambda: latest("?stage=prod"), "1.1.0", promoted)

        prediction = urllib.request.Request(
            f"{replica}/predict",
            data=json.dumps({"instances": [[0, 1, 0]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(prediction, timeout=10) as response:
            assert json.loads(response.read()) == {"version": "1.1.0", "predictions": [2.0]}
    history = trainer.history("1.1.0")
    assert [e["action"] for e in history] == ["publish", "update_metadata"]
    print(f"replica lag: publish {lag_publish:.2f}s, promotion {lag_promote:.2f}s (bound {REFRESH}s)")
