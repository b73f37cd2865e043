"""Webhook delivery delay on local disk: from the moment a change returns to the moment its signed
``POST`` reaches the receiver, beside the time a bare signed ``POST`` of the same message takes.

A real ``flask models webhooks run`` process follows a local registry; this process makes the
changes (``set_stage``, one at a time, each at a random moment of the worker's poll cycle) and runs
the receiver (``tests/webhook_receiver.py``, verifying each signature with ``standardwebhooks``).
The worker runs twice: with the default poll interval (1 s) and with 0.1 s. On local disk the
poll interval hardly matters: an idle worker also looks at the trail folder's times every 20 ms (one
``stat``), and reads the trail as soon as they change; on object storage it polls.

Run: ``python bench/webhooks.py`` (about a minute).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, Row, print_header, print_table

sys.path.insert(0, str(REPO / "tests"))
from webhook_receiver import SECRET, Receiver, receiving

from flask_model_registry import ModelRegistry
from flask_model_registry.webhooks import body, parse_webhooks
from flask_model_registry.webhooks.cursor import CursorStore
from flask_model_registry.webhooks.send import post

CHANGES = 40
DEADLINE = 60.0


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def bare_posts(receiver: Receiver, registry: ModelRegistry) -> list[float]:
    """The baseline: this process signs and ``POST``s an event itself; seconds until it arrived."""
    (webhook,) = parse_webhooks([{"url": receiver.url("/bare"), "secret": SECRET}])
    event = registry.history(limit=1)[0]
    delays = []
    for _ in range(CHANGES):
        data = body(event, None)
        started = time.monotonic()
        post(webhook.url, data, webhook.headers(event["id"], data), 10.0)
        delays.append(receiver.messages("/bare")[-1].at - started)
    return delays


def worker_delays(receiver: Receiver, root: Path, poll: float | None) -> list[float]:
    """Start a worker (``poll``: its poll interval, None: the default), make :data:`CHANGES` changes
    one at a time, and return each one's delay from the change's return to its arrival."""
    path = f"/poll-{poll}"
    hooks = [{"url": receiver.url(path), "secret": SECRET, "events": ["*"]}]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_REGISTRY_", "FLASK_"))}
    env.update(MODEL_REGISTRY_ROOT=str(root), MODEL_REGISTRY_WEBHOOKS=json.dumps(hooks), MODEL_STAGE="")
    if poll is not None:
        env["MODEL_REGISTRY_WEBHOOK_POLL_INTERVAL"] = str(poll)
    command = [sys.executable, "-m", "flask", "--app", "example_app:create_app", "models", "webhooks", "run"]
    worker = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    registry = ModelRegistry(root)
    try:
        store = CursorStore(registry, parse_webhooks(hooks)[0])
        deadline = time.monotonic() + DEADLINE
        while store.load() is None:  # the worker has started at the trail's end
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
            time.sleep(0.01)
        delays = []
        for n in range(CHANGES):
            time.sleep(random.uniform(0, poll or 1.0))  # anywhere in the worker's poll cycle
            registry.set_stage("1.0.0", f"stage-{n}")
            changed = time.monotonic()
            receiver.wait(lambda n=n: len(receiver.delivered(path)) > n, f"change {n}", DEADLINE)
            delays.append(receiver.delivered(path)[n].at - changed)
        return delays
    finally:
        worker.terminate()
        worker.wait(DEADLINE)


def main() -> None:
    print_header(
        "webhooks: delivery delay after a change, local disk",
        [
            f"{CHANGES} changes (set_stage), one at a time, each at a random moment of the poll cycle",
            "delay: from the change's return to the signed POST's arrival at a receiver on 127.0.0.1",
            "baseline: this process signing and POSTing the same message itself (median of as many)",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp, receiving() as receiver:
        root = Path(tmp) / "registry"
        root.mkdir()
        registry = ModelRegistry(root)
        registry.save_model("1.0.0", {"w": 1}, {"stage": "staging"})
        baseline = bare_posts(receiver, registry)
        rows = []
        for poll, name in ((None, "default poll interval (1 s)"), (0.1, "poll interval 0.1 s")):
            delays = worker_delays(receiver, root, poll)
            rows.append(
                Row(
                    f"delay, median, {name}",
                    statistics.median(delays),
                    "bare POST",
                    statistics.median(baseline),
                )
            )
            rows.append(Row(f"delay, p95, {name}", p95(delays), "bare POST p95", p95(baseline)))
        print_table(rows)


if __name__ == "__main__":
    main()
