"""Change notifications: signed webhooks delivered at least once from the audit trail.

A real receiver on 127.0.0.1 (:mod:`webhook_receiver`) verifies every message with the
``standardwebhooks`` library. The worker runs in a thread of the test for the rules of delivery, and
as a real ``flask models webhooks run`` process where processes matter: ``kill -9``, two workers at
once, SIGTERM, changes made by other processes and by the CLI.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import REPO, Store
from webhook_receiver import PATIENCE, SECRET, Receiver, receiving

from flask_model_registry import ConfigError, FlaskModelRegistry, ModelRegistry
from flask_model_registry import metadata as md
from flask_model_registry.webhooks import WebhookWorker, body, event_kinds
from flask_model_registry.webhooks.cli import app_worker
from flask_model_registry.webhooks.cursor import Cursor, CursorStore, backoff

#: Short knobs, so that retries and timeouts happen within a test.
FAST = {
    "MODEL_REGISTRY_WEBHOOK_RETRY_BASE": 0.2,
    "MODEL_REGISTRY_WEBHOOK_TIMEOUT": 1.0,
    "MODEL_REGISTRY_WEBHOOK_POLL_INTERVAL": 0.1,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as server:
        yield server


def hooks(receiver: Receiver, *paths: str, events: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"url": receiver.url(path), "secret": SECRET, "events": events or ["*"]} for path in paths]


@pytest.fixture
def app_config(receiver: Receiver) -> dict[str, Any]:
    return {"MODEL_REGISTRY_WEBHOOKS": hooks(receiver, "/hook"), **FAST}


@contextlib.contextmanager
def running(worker: WebhookWorker) -> Iterator[WebhookWorker]:
    """``worker`` delivering in a thread until the block ends (then stopped, as by SIGTERM)."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(PATIENCE)
        assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture
def worker(app: Flask) -> Iterator[WebhookWorker]:
    """The app's worker, delivering in a thread from the start of the test."""
    with app.app_context():
        started = app_worker()
    with running(started):
        wait_for_cursor(app.registry, started)
        yield started


def wait_for_cursor(registry: ModelRegistry, worker: WebhookWorker) -> None:
    """Wait until the worker has started each webhook's cursor (it starts at the trail's end)."""
    stores = [CursorStore(registry, d.webhook) for d in worker.deliveries if d.registry is registry]
    deadline = time.monotonic() + PATIENCE
    while not all(store.load() for store in stores):
        assert time.monotonic() < deadline, "the worker never started its cursors"
        time.sleep(0.02)


def ids_of(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("webhooks", "says"),
    [
        ({"url": "https://x"}, "MODEL_REGISTRY_WEBHOOKS must be a list"),
        ([{"secret": SECRET}], "needs a 'url'"),
        ([{"url": "ftp://x/hook", "secret": SECRET}], "http:// or https://"),
        ([{"url": "https:///hook", "secret": SECRET}], "with a host"),
        ([{"url": "https://x/hook"}], "needs a 'secret'"),
        ([{"url": "https://x/hook", "secret": ""}], "needs a 'secret'"),
        ([{"url": "https://x/hook", "secret": "whsec_not base64!"}], "base64"),
        ([{"url": "https://x/hook", "secret": SECRET, "events": ["publish", "promote"]}], "'promote'"),
        ([{"url": "https://x/hook", "secret": SECRET, "events": []}], "non-empty list"),
        ([{"url": "https://x/hook", "secret": SECRET, "events": "publish"}], "non-empty list"),
        ([{"url": "https://x/hook", "secret": SECRET, "headers": {}}], "unknown key 'headers'"),
        ([{"url": "https://x/h", "secret": SECRET}, {"url": "https://x/h", "secret": SECRET}], "twice"),
        (["https://x/hook"], "must be an object"),
        ("[{", "not valid JSON"),
    ],
)
def test_a_malformed_webhook_list_is_a_config_error(registry_root: Path, webhooks: Any, says: str):
    app = Flask(__name__)
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_WEBHOOKS=webhooks)
    with pytest.raises(ConfigError, match=says) as raised:
        FlaskModelRegistry(app)
    assert raised.value.key == "MODEL_REGISTRY_WEBHOOKS"
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("WEBHOOK_RETRY_BASE", "0"), ("WEBHOOK_TIMEOUT", "-1"), ("WEBHOOK_RETRY_HOURS", "a day")],
)
def test_bad_delivery_knobs_are_config_errors(registry_root: Path, key: str, value: str):
    app = Flask(__name__)
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), **{f"MODEL_REGISTRY_{key}": value})
    with pytest.raises(ConfigError, match=key):
        FlaskModelRegistry(app)


def test_webhooks_from_the_environment(registry_root: Path, monkeypatch: pytest.MonkeyPatch):
    webhooks = [{"url": "https://ci.example/hook", "secret": SECRET, "events": ["publish", "stage"]}]
    monkeypatch.setenv("MODEL_REGISTRY_WEBHOOKS", json.dumps(webhooks))
    monkeypatch.setenv("MODEL_REGISTRY_WEBHOOK_RETRY_HOURS", "0.5")
    app = Flask(__name__)
    app.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    FlaskModelRegistry(app)
    (webhook,) = app.config["MODEL_REGISTRY_WEBHOOKS"]
    assert (webhook.url, webhook.events) == ("https://ci.example/hook", ("publish", "stage"))
    assert SECRET not in repr(app.config["MODEL_REGISTRY_WEBHOOKS"])
    assert app.config["MODEL_REGISTRY_WEBHOOK_RETRY_HOURS"] == 0.5
    assert app.config["MODEL_REGISTRY_WEBHOOK_RETRY_BASE"] == 10.0
    assert app.config["MODEL_REGISTRY_WEBHOOK_TIMEOUT"] == 10.0


# what a message says ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "before", "after", "kinds"),
    [
        ("publish", {}, {"stage": "prod", "auc": 0.9}, ["publish"]),
        ("set_stage", {}, {"stage": "prod"}, ["stage"]),
        ("set_stage", {"stage": "prod"}, {}, ["stage"]),
        ("update_metadata", {"canary": 0.1}, {}, ["flags"]),
        ("update_metadata", {}, {"shadow": True}, ["flags"]),
        ("update_metadata", {"owner": "a"}, {"owner": "b"}, ["metadata"]),
        (
            "update_metadata",
            {"stage": "staging", "owner": "a"},
            {"stage": "prod", "canary": True},
            ["stage", "flags", "metadata"],
        ),
        ("delete", {"stage": "archived"}, {}, ["delete"]),
        ("approve", {}, {"approvals": [{"stage": "prod"}]}, ["approve"]),
        ("sign", {}, {"signature": "x"}, ["sign"]),
    ],
)
def test_the_kinds_of_an_event(action: str, before: dict, after: dict, kinds: list[str]):
    event = {
        "id": "1" * 20 + "-" + "a" * 12,
        "time": "2026-12-01T10:00:00.000Z",
        "action": action,
        "version": "1.0.0",
        "actor": "ana",
        "before": before,
        "after": after,
    }
    assert event_kinds(event) == kinds
    message = json.loads(body(event, "fraud"))
    assert message == {
        "type": f"model.{kinds[0]}",
        "timestamp": "2026-12-01T10:00:00.000Z",
        "data": {
            "model": "fraud",
            "version": "1.0.0",
            "actor": "ana",
            "kinds": kinds,
            "before": before,
            "after": after,
        },
    }


def test_the_retry_schedule_doubles_from_the_base_up_to_an_hour():
    assert [backoff(n, 10) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert backoff(10, 10) == 3600 and backoff(1000, 10) == 3600


# delivery -----------------------------------------------------------------------------------------


def test_every_change_is_delivered_signed_in_trail_order(app: Flask, receiver: Receiver, worker):
    registry = app.registry
    before_start = registry.history()
    registry.save_model("1.0.0", {"w": 1}, {"auc": 0.8}, actor="trainer")
    registry.set_stage("1.0.0", "prod", actor="ana")
    registry.update_metadata("1.0.0", {"canary": 0.2}, actor="ana")
    registry.update_metadata("1.0.0", {"owner": "ml"}, actor="bob")
    events = registry.history()[len(before_start) :]
    receiver.wait(lambda: len(receiver.delivered()) >= 4, "four deliveries")
    delivered = receiver.delivered()
    assert ids_of(delivered) == [e["id"] for e in events]  # the audit event ids, in trail order
    assert all(m.verified for m in receiver.messages())  # standardwebhooks verified every one
    assert [m.body["type"] for m in delivered] == [
        "model.publish",
        "model.stage",
        "model.flags",
        "model.metadata",
    ]
    publish = delivered[0].body
    assert publish["timestamp"] == events[0]["time"]
    assert publish["data"]["model"] is None and publish["data"]["version"] == "1.0.0"
    assert publish["data"]["actor"] == "trainer" and publish["data"]["after"]["auc"] == 0.8
    assert delivered[1].body["data"] == {
        "model": None,
        "version": "1.0.0",
        "actor": "ana",
        "kinds": ["stage"],
        "before": {},
        "after": {"stage": "prod"},
    }
    assert delivered[0].headers["webhook-signature"].startswith("v1,")
    assert abs(int(delivered[0].headers["webhook-timestamp"]) - time.time()) < 120


def test_a_webhook_seen_first_starts_at_the_trails_end(app: Flask, receiver: Receiver):
    app.registry.save_model("1.0.0", {"w": 1}, actor="trainer")  # before any worker
    with app.app_context():
        late = app_worker()
    with running(late):
        wait_for_cursor(app.registry, late)
        app.registry.set_stage("1.0.0", "prod")
        receiver.wait(lambda: receiver.delivered(), "a delivery")
    assert [m.body["type"] for m in receiver.delivered()] == ["model.stage"]


def test_only_the_kinds_a_webhook_asks_for(app: Flask, receiver: Receiver, registry_root: Path):
    app.config["MODEL_REGISTRY_WEBHOOKS"] = app.config["MODEL_REGISTRY_WEBHOOKS"] + [
        webhook for webhook in _parsed(hooks(receiver, "/stages", events=["stage"]))
    ]
    with app.app_context():
        both = app_worker()
    with running(both):
        wait_for_cursor(app.registry, both)
        app.registry.save_model("1.0.0", {"w": 1})
        app.registry.update_metadata("1.0.0", {"owner": "ml"})
        app.registry.set_stage("1.0.0", "prod")
        receiver.wait(lambda: len(receiver.delivered("/hook")) >= 3, "three deliveries to /hook")
        receiver.wait(lambda: receiver.delivered("/stages"), "the stage change at /stages")
    assert [m.body["type"] for m in receiver.delivered("/stages")] == ["model.stage"]


def _parsed(items: list[dict[str, Any]]) -> list[Any]:
    from flask_model_registry.webhooks import parse_webhooks

    return parse_webhooks(items)


def test_a_5xx_is_retried_and_holds_back_the_later_events(app: Flask, receiver: Receiver, worker):
    receiver.answer("/hook", 500)
    app.registry.save_model("1.0.0", {"w": 1})
    app.registry.set_stage("1.0.0", "staging")
    first = app.registry.history()[-2]["id"]
    receiver.wait(lambda: len(receiver.messages("/hook")) >= 3, "three attempts")
    assert set(ids_of(receiver.messages("/hook"))) == {first}  # the second waits behind it
    receiver.answer("/hook", 200)
    receiver.wait(lambda: len(receiver.delivered()) >= 2, "both events")
    assert ids_of(receiver.delivered()) == [e["id"] for e in app.registry.history()[-2:]]
    first, second, third = (m.at for m in receiver.messages()[:3])
    assert second - first >= 0.1 and third - second >= 0.3  # waits of 0.2 s, then 0.4 s: backing off


@pytest.mark.parametrize(("status", "location"), [(410, None), (400, None)])
def test_another_4xx_fails_the_event_at_once_and_the_rest_go_on(
    app: Flask, receiver: Receiver, worker, status: int, location: str | None
):
    receiver.answer("/hook", status)
    app.registry.save_model("1.0.0", {"w": 1})
    receiver.wait(lambda: receiver.messages(), "the first attempt")
    receiver.answer("/hook", 200)
    app.registry.set_stage("1.0.0", "prod")
    receiver.wait(lambda: receiver.delivered(), "the next event")
    failed, delivered = app.registry.history()[-2:]
    assert ids_of(receiver.messages()) == [failed["id"], delivered["id"]]  # one attempt only
    (item,) = _status(app)
    assert item["failed"] == [failed["id"]] and item["failures"][0]["reason"] == f"HTTP {status}"


@pytest.mark.parametrize("status", [302, 307, 408, 429, 503])
def test_redirects_and_busy_answers_are_retried_and_never_followed(
    app: Flask, receiver: Receiver, worker, status: int
):
    receiver.answer("/hook", status, location=receiver.url("/elsewhere"))
    app.registry.save_model("1.0.0", {"w": 1})
    receiver.wait(lambda: len(receiver.messages("/hook")) >= 2, "a retry")
    assert receiver.messages("/elsewhere") == []
    (item,) = _status(app)
    assert item["retrying"]["reason"] == f"HTTP {status}" and item["backlog"] == 1


def test_a_slow_receiver_times_out_and_holds_up_no_other(app: Flask, receiver: Receiver):
    receiver.answer("/slow", 200, delay=3.0)  # beyond the 1 s timeout
    app.config["MODEL_REGISTRY_WEBHOOKS"] = app.config["MODEL_REGISTRY_WEBHOOKS"] + _parsed(
        hooks(receiver, "/slow")
    )
    with app.app_context():
        both = app_worker()
    with running(both):
        wait_for_cursor(app.registry, both)
        for n in range(3):
            app.registry.save_model(f"1.{n}.0", {"w": n})
        receiver.wait(lambda: len(receiver.delivered("/hook")) >= 3, "the fast receiver's three events")
        receiver.wait(lambda: len(receiver.messages("/slow")) >= 2, "the slow one's retry")
        slow_ids = set(ids_of(receiver.messages("/slow")))
        assert len(slow_ids) == 1  # the first event, retried after each timeout; the rest wait
        (fast, slow) = _status(app)
        assert slow["retrying"]["reason"] == "no answer (timed out)" and slow["backlog"] == 3
        assert fast["backlog"] == 0


def test_retrying_stops_after_the_retry_hours_and_marks_the_event_failed(app: Flask, receiver: Receiver):
    app.config["MODEL_REGISTRY_WEBHOOK_RETRY_HOURS"] = 2.0 / 3600  # two seconds of retries
    receiver.answer("/hook", 500)
    with app.app_context():
        short = app_worker()
    with running(short):
        wait_for_cursor(app.registry, short)
        app.registry.save_model("1.0.0", {"w": 1})
        receiver.answer("/hook", 500)
        first = app.registry.history()[-1]["id"]
        receiver.wait(lambda: _status(app)[0]["failed"], "the event to be failed")
        attempts = len(receiver.messages())
        assert 2 <= attempts <= 6  # 0, 0.2, 0.6, 1.4 s: then the next wait would pass 2 s
        receiver.answer("/hook", 200)
        app.registry.set_stage("1.0.0", "prod")
        receiver.wait(lambda: receiver.delivered(), "the next event")
    (item,) = _status(app)
    assert item["failed"] == [first] and "gave up" in item["failures"][0]["reason"]


def _status(app: Flask) -> list[dict[str, Any]]:
    result = app.test_cli_runner().invoke(args=["models", "webhooks", "status", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# the CLI ------------------------------------------------------------------------------------------


def test_status_shows_cursor_backlog_and_failed_events(app: Flask, receiver: Receiver, worker):
    runner = app.test_cli_runner()
    receiver.answer("/hook", 410)
    app.registry.save_model("1.0.0", {"w": 1})
    receiver.wait(lambda: _status(app)[0]["failed"], "a failed event")
    receiver.answer("/hook", 500)
    app.registry.set_stage("1.0.0", "prod")
    app.registry.set_stage("1.0.0", "staging")
    receiver.wait(lambda: _status(app)[0]["retrying"], "a retried event")
    (item,) = _status(app)
    events = app.registry.history()
    assert item["cursor"] == events[0]["id"] and item["backlog"] == 2
    assert item["failed"] == [events[0]["id"]] and item["retrying"]["id"] == events[1]["id"]
    assert item["url"] == receiver.url("/hook") and item["model"] is None and item["worker"] == worker.owner
    text = runner.invoke(args=["models", "webhooks", "status"]).output
    assert f"failed:    {events[0]['id']}" in text and "backlog:   2 event(s)" in text
    assert SECRET not in text and SECRET not in json.dumps(item)


def test_status_before_any_worker(app: Flask):
    (item,) = _status(app)
    assert item["started"] is False and item["backlog"] == 0


def test_the_commands_say_when_no_webhook_is_configured(registry_root: Path):
    bare = Flask(__name__)
    bare.config["MODEL_REGISTRY_ROOT"] = str(registry_root)
    FlaskModelRegistry(bare)
    for command in (["status"], ["run"], ["replay", "--since", "1h"]):
        result = bare.test_cli_runner().invoke(args=["models", "webhooks", *command])
        assert result.exit_code == 1 and "MODEL_REGISTRY_WEBHOOKS" in result.output, (command, result.output)


def test_replay_sends_every_event_since_a_time_again_with_the_same_ids(
    app: Flask, receiver: Receiver, worker
):
    receiver.answer("/hook", 410)
    app.registry.save_model("1.0.0", {"w": 1})
    receiver.wait(lambda: _status(app)[0]["failed"], "a failed event")
    receiver.answer("/hook", 200)
    app.registry.set_stage("1.0.0", "prod")
    app.registry.save_model("1.1.0", {"w": 2})
    receiver.wait(lambda: len(receiver.delivered()) >= 2, "the later events")
    first = len(receiver.messages())
    result = app.test_cli_runner().invoke(
        args=["models", "webhooks", "replay", "--since", "1h", "--webhook", receiver.url("/hook")]
    )
    assert result.exit_code == 0, result.output
    replayed = receiver.messages()[first:]
    assert ids_of(replayed) == [e["id"] for e in app.registry.history()]  # failed one included, in order
    assert all(m.verified and m.status == 200 for m in replayed)
    assert _status(app)[0]["failed"] == []  # replayed: no longer failed
    later = app.test_cli_runner().invoke(args=["models", "webhooks", "replay", "--since", "2999-01-01"])
    assert later.exit_code == 0 and len(receiver.messages()) == first + 3
    unknown = app.test_cli_runner().invoke(
        args=["models", "webhooks", "replay", "--since", "1h", "--webhook", "https://other/"]
    )
    assert unknown.exit_code == 2 and "not a configured webhook" in unknown.output


def test_a_replay_stops_where_the_receiver_asks_for_a_retry(app: Flask, receiver: Receiver):
    app.registry.save_model("1.0.0", {"w": 1})
    app.registry.save_model("1.1.0", {"w": 1})
    receiver.answer("/hook", 503)
    result = app.test_cli_runner().invoke(args=["models", "webhooks", "replay", "--since", "1h"])
    assert result.exit_code == 1 and "stopped at" in result.output
    assert ids_of(receiver.messages()) == [app.registry.history()[0]["id"]]


# real worker processes ----------------------------------------------------------------------------


class WorkerProcess:
    """``flask models webhooks run`` as a real process of its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        command = [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "example_app:create_app",
            "models",
            "webhooks",
            "run",
        ]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self) -> None:
        """``kill -9``."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(PATIENCE)


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start(env)`` starts a worker process; none outlives the test."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"worker-{len(started)}.log"))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


def worker_env(root: str, receiver: Receiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_REGISTRY_", "FLASK_"))}
    env.update({k: str(v) for k, v in FAST.items()})
    env.update(
        MODEL_REGISTRY_ROOT=root,
        MODEL_REGISTRY_WEBHOOKS=json.dumps(hooks(receiver, "/hook")),
        MODEL_STAGE="",
        **extra,
    )
    return env


def started_cursor(registry: ModelRegistry, receiver: Receiver, process: WorkerProcess | None = None) -> None:
    """Wait until a worker process has started the cursor of ``/hook`` in ``registry``."""
    (webhook,) = _parsed(hooks(receiver, "/hook"))
    store = CursorStore(registry, webhook)
    deadline = time.monotonic() + PATIENCE
    while store.load() is None:
        if process is not None and process.process.poll() is not None:
            raise AssertionError(process.log.read_text())
        assert time.monotonic() < deadline, "no worker started the cursor"
        time.sleep(0.05)


def publish_many(root: str, count: int, storage_options: dict[str, Any] | None = None) -> None:
    """Another process: publish ``count`` versions, one after the other."""
    registry = ModelRegistry(root, storage_options=storage_options)
    for n in range(count):
        registry.save_model(f"1.{n}.0", {"w": n}, {"n": n}, actor="other-process")


def test_kill_9_mid_stream_loses_nothing(
    registry_root: Path, receiver: Receiver, worker_processes, clean_children
):
    receiver.answer("/hook", 200, delay=0.1)
    env = worker_env(str(registry_root), receiver)
    first = worker_processes(env)
    started_cursor(ModelRegistry(registry_root), receiver, first)
    writer = clean_children.start(publish_many, str(registry_root), 30)
    receiver.wait(lambda: len(receiver.delivered()) >= 5, "five deliveries before the kill")
    first.kill()  # kill -9, mid-stream
    writer.join(PATIENCE)
    assert len(receiver.delivered()) < 30, "the stream was over before the kill"
    worker_processes(env)
    expected = [e["id"] for e in ModelRegistry(registry_root).history()]
    assert len(expected) == 30
    receiver.wait(lambda: set(ids_of(receiver.delivered())) >= set(expected), "every event after the restart")
    counts = collections.Counter(ids_of(receiver.delivered()))
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 1  # at most the one in flight when the worker was killed
    print(f"kills: 1; duplicates after the kill: {duplicates}")


def test_two_workers_at_once_do_not_both_deliver(
    registry_root: Path, receiver: Receiver, worker_processes, clean_children
):
    env = worker_env(str(registry_root), receiver)
    one, _ = worker_processes(env), worker_processes(env)
    started_cursor(ModelRegistry(registry_root), receiver, one)
    clean_children.run(publish_many, str(registry_root), 30)
    expected = [e["id"] for e in ModelRegistry(registry_root).history()]
    receiver.wait(lambda: set(ids_of(receiver.delivered())) >= set(expected), "every event")
    counts = collections.Counter(ids_of(receiver.delivered()))
    duplicates = sum(n - 1 for n in counts.values())
    print(f"two workers: {len(expected)} events, {duplicates} duplicates")
    assert duplicates == 0
    assert ids_of(receiver.delivered()) == expected  # in trail order, whoever sent them
    one.kill()  # the other takes over once the lease runs out
    ModelRegistry(registry_root).set_stage("1.0.0", "prod")
    receiver.wait(lambda: len(receiver.delivered()) == 31, "the event after one worker died")


def test_sigterm_finishes_the_delivery_in_flight_and_exits(
    registry_root: Path, receiver: Receiver, worker_processes
):
    receiver.answer("/hook", 200, delay=1.5)
    env = worker_env(str(registry_root), receiver, MODEL_REGISTRY_WEBHOOK_TIMEOUT="5")
    worker = worker_processes(env)
    registry = ModelRegistry(registry_root)
    started_cursor(registry, receiver, worker)
    registry.save_model("1.0.0", {"w": 1})
    registry.save_model("1.1.0", {"w": 1})
    deadline = time.monotonic() + PATIENCE
    while not receiver.arrivals():  # the first attempt is in flight: the receiver holds it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(PATIENCE) == 0
    first = registry.history()[0]["id"]
    assert ids_of(receiver.delivered()) == [first]  # answered, and nothing more was sent
    (webhook,) = _parsed(hooks(receiver, "/hook"))
    cursor = CursorStore(registry, webhook).load()
    assert cursor is not None and cursor.doc["cursor"] == first and cursor.doc["lease"] is None
    receiver.answer("/hook", 200)
    worker_processes(env)  # the lease was released: the next worker goes on at once
    receiver.wait(lambda: len(receiver.delivered()) == 2, "the second event", timeout=30)
    assert ids_of(receiver.delivered()) == [e["id"] for e in registry.history()]


def test_changes_made_with_the_cli_are_delivered(registry_root: Path, receiver: Receiver, worker_processes):
    env = worker_env(str(registry_root), receiver)
    worker = worker_processes(env)
    registry = ModelRegistry(registry_root)
    registry.save_model("1.0.0", {"w": 1})
    started_cursor(registry, receiver, worker)
    cli_env = {**env, "FLASK_APP": "example_app:create_app"}
    for args in (["promote", "1.0.0", "prod", "--actor", "ana"], ["set", "1.0.0", "owner=ml"]):
        done = subprocess.run(
            [sys.executable, "-m", "flask", "models", *args],
            cwd=REPO,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        assert done.returncode == 0, done.stderr
    receiver.wait(lambda: len(receiver.delivered()) >= 2, "the CLI's two changes")
    assert [m.body["type"] for m in receiver.delivered()] == ["model.stage", "model.metadata"]
    assert receiver.delivered()[0].body["data"]["actor"] == "ana"


def test_named_models_are_delivered_with_their_name(
    registry_root: Path, model_roots: dict[str, Path], receiver: Receiver, worker_processes
):
    models = {name: str(root) for name, root in model_roots.items()}
    env = worker_env(str(registry_root), receiver, MODEL_REGISTRY_MODELS=json.dumps(models))
    worker = worker_processes(env)
    for root in [registry_root, *model_roots.values()]:
        started_cursor(ModelRegistry(root), receiver, worker)
    ModelRegistry(model_roots["fraud"]).save_model("3.0.0", {"w": 3}, actor="fraud-team")
    ModelRegistry(registry_root).save_model("1.0.0", {"w": 1})
    ModelRegistry(model_roots["churn"]).save_model("2.0.0", {"w": 2})
    receiver.wait(lambda: len(receiver.delivered()) >= 3, "one event of each registry")
    got = {m.body["data"]["model"]: m.body["data"]["version"] for m in receiver.delivered()}
    assert got == {None: "1.0.0", "fraud": "3.0.0", "churn": "2.0.0"}
    assert (model_roots["fraud"] / "state" / "webhooks").is_dir()  # each model keeps its own cursor


def test_on_s3_events_of_another_process_are_delivered(
    s3_server: Store, receiver: Receiver, worker_processes, clean_children
):
    root = s3_server.url(f"webhooks-{os.getpid()}-{time.monotonic_ns()}")
    env = worker_env(root, receiver, **s3_server.child_env())
    workers = [worker_processes(env), worker_processes(env)]
    registry = ModelRegistry(root, storage_options=s3_server.storage_options)
    started_cursor(registry, receiver, workers[0])
    clean_children.run(publish_many, root, 8, s3_server.storage_options)
    registry.set_stage("1.0.0", "prod")
    expected = [e["id"] for e in registry.history()]
    receiver.wait(lambda: set(ids_of(receiver.delivered())) >= set(expected), "every event on S3")
    assert ids_of(receiver.delivered()) == expected  # once each, in trail order, two workers
    assert s3_server.filesystem().ls(f"{s3_server.bucket}/{root.split('/', 3)[3]}/state/webhooks")


# the cursor's compare-and-swap on every store -------------------------------------------------------


@pytest.mark.parametrize("registry_target", ["local", "memory", "s3", "azure", "gcs"], indirect=True)
def test_a_cursor_changes_only_by_compare_and_swap(any_registry: ModelRegistry, registry_target):
    (webhook,) = _parsed([{"url": "https://ci.example/hook", "secret": SECRET}])
    store = CursorStore(any_registry, webhook)
    assert store.load() is None
    cursor = store.start()
    store.save(cursor)
    stale = store.load()
    assert stale is not None and stale.doc["start"] == cursor.doc["start"]
    cursor.doc["delivered"] = 1
    store.save(cursor)
    stale.doc["delivered"] = 99
    with pytest.raises(Exception, match="changed while being updated"):
        store.save(stale)
    again = Cursor({**cursor.doc, "delivered": 2}, None)  # "create" over an existing one
    with pytest.raises(Exception, match="changed while being updated"):
        store.save(again)
    assert store.load().doc["delivered"] == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.sampled_from(
            [
                "https://x/h",
                "http://127.0.0.1:1/h",
                SECRET,
                "whsec_",
                "*",
                "publish",
                "url",
                "secret",
                "events",
            ]
        ),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(["url", "secret", "events", "other"]), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_webhook_list_is_taken_or_refused_with_a_config_error(registry_root: Path, value: Any):
    app = Flask(__name__)
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_WEBHOOKS=value)
    try:
        FlaskModelRegistry(app)
    except ConfigError as exc:
        assert exc.key == "MODEL_REGISTRY_WEBHOOKS" and SECRET not in str(exc)
        return
    for webhook in app.config["MODEL_REGISTRY_WEBHOOKS"]:
        assert webhook.url.startswith(("http://", "https://")) and webhook.events


# named models, in one app -------------------------------------------------------------------------


@pytest.fixture
def named_app(app_config: dict[str, Any], named_models: dict[str, Any], registry_root: Path) -> Flask:
    named = Flask(__name__)
    named.config.update(MODEL_REGISTRY_ROOT=str(registry_root), **app_config, **named_models)
    FlaskModelRegistry(named)
    return named


def test_a_named_models_events_carry_its_name_and_status_and_replay_take_model(
    named_app: Flask, receiver: Receiver
):
    with named_app.app_context():
        every = app_worker()
        fraud = named_app.registries["fraud"]
    assert len(every.deliveries) == 3  # the default registry and both named models
    with running(every):
        for registry in [named_app.registry, *named_app.registries.values()]:
            wait_for_cursor(registry, every)
        fraud.save_model("3.0.0", {"w": 3}, actor="fraud-team")
        receiver.wait(lambda: receiver.delivered(), "the fraud model's event")
    (message,) = receiver.delivered()
    assert message.body["data"]["model"] == "fraud" and message.body["data"]["actor"] == "fraud-team"
    runner = named_app.test_cli_runner()
    shown = json.loads(
        runner.invoke(args=["models", "webhooks", "status", "--json", "--model", "fraud"]).output
    )
    assert [(item["model"], item["cursor"]) for item in shown] == [("fraud", fraud.history()[-1]["id"])]
    replayed = runner.invoke(args=["models", "webhooks", "replay", "--since", "1h", "--model", "fraud"])
    assert replayed.exit_code == 0, replayed.output
    assert ids_of(receiver.delivered()) == [message.id, message.id]
    unknown = runner.invoke(args=["models", "webhooks", "status", "--model", "nope"])
    assert unknown.exit_code == 1 and "no model named 'nope'" in unknown.output


@pytest.mark.parametrize("damage", [b"{not json", b"[]", b'{"start": 1}'])
def test_a_damaged_cursor_is_a_clear_error_and_the_worker_keeps_going(
    app: Flask, receiver: Receiver, registry_root: Path, damage: bytes, caplog: pytest.LogCaptureFixture
):
    (webhook,) = app.config["MODEL_REGISTRY_WEBHOOKS"]
    cursor = registry_root / "state" / "webhooks" / f"{webhook.key}.json"
    cursor.parent.mkdir(parents=True)
    cursor.write_bytes(damage)
    result = app.test_cli_runner().invoke(args=["models", "webhooks", "status"])
    assert result.exit_code == 1 and "is damaged; remove it" in result.output
    with app.app_context():
        damaged = app_worker()
    with running(damaged):
        receiver.wait(lambda: "is damaged" in caplog.text, "the worker to say so")
        cursor.unlink()  # the operator removes it: the worker starts again at the trail's end
        wait_for_cursor(app.registry, damaged)
        app.registry.save_model("1.0.0", {"w": 1})
        receiver.wait(lambda: receiver.delivered(), "a delivery")


def test_an_event_that_lands_below_one_already_sent_is_still_sent(app: Flask, receiver: Receiver, worker):
    """A writer that stalls between writing its (pending) event and its change: a later change of
    another version is sent first; the stalled one's event, lower in the trail, is sent once it lands."""
    registry = app.registry
    registry.save_model("1.0.0", {"w": 1})
    registry.save_model("2.0.0", {"w": 2})
    receiver.wait(lambda: len(receiver.delivered()) == 2, "the two publishes")
    old, stamp = registry.storage.read_metadata("1.0.0")
    new = md.dumps({**json.loads(old), "stage": "prod"})
    stalled = registry.audit.prepare("set_stage", "1.0.0", {}, {"stage": "prod"}, "slow", old, new)
    registry.set_stage("2.0.0", "staging", actor="quick")
    receiver.wait(lambda: len(receiver.delivered()) == 3, "the quick change")
    registry.storage.replace_metadata("1.0.0", new, stamp)  # the stalled writer goes on
    stalled.finalise()
    receiver.wait(lambda: len(receiver.delivered()) == 4, "the stalled change")
    quick, late = receiver.delivered()[2:]
    assert late.id == stalled.id < quick.id and late.body["data"]["actor"] == "slow"
    assert len(set(ids_of(receiver.delivered()))) == 4
