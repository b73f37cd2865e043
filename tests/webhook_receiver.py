"""A real webhook receiver on 127.0.0.1, for the tests and the benchmark: it verifies every message
with the ``standardwebhooks`` library, as a user's receiver would, records it, and answers each path
as told (a status, a delay that outlasts the sender's timeout, a redirect)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook

#: The secret every test webhook signs with (``whsec_`` and base64, as the SPEC asks).
SECRET = "whsec_" + base64.b64encode(b"registry webhook test secret 32b").decode()
#: The longest a test waits for deliveries.
PATIENCE = 90.0


@dataclass(frozen=True)
class Message:
    """One attempt that reached the receiver: where, its id, its JSON body (None unless it verified),
    the status answered, and when it arrived (``time.monotonic()``)."""

    path: str
    id: str
    body: Any
    verified: bool
    status: int
    at: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    """How a path answers: ``status``, after ``delay`` seconds, with ``location`` (a redirect)."""

    status: int = 200
    delay: float = 0.0
    location: str | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            payload, verified = Webhook(SECRET).verify(data, headers), True
        except Exception:
            payload, verified = None, False
        answer = self.server.answer_of(self.path)
        self.server.arrived(headers.get("webhook-id", ""))
        if answer.delay:
            time.sleep(answer.delay)
        message = Message(
            self.path,
            headers.get("webhook-id", ""),
            payload,
            verified,
            answer.status,
            time.monotonic(),
            headers,
        )
        self.server.record(message)
        with contextlib.suppress(OSError):  # a sender that timed out has gone
            self.send_response(answer.status)
            if answer.location:
                self.send_header("Location", answer.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


class Receiver(http.server.ThreadingHTTPServer):
    """The receiver: ``url(path)``, ``answer(path, ...)``, ``messages(path)``, ``wait(...)``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._answers: dict[str, Answer] = {}
        self._messages: list[Message] = []
        self._arrivals: list[str] = []

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def answer(self, path: str, status: int = 200, delay: float = 0.0, location: str | None = None) -> None:
        """From now on, answer ``path`` with ``status`` after ``delay`` seconds."""
        with self._lock:
            self._answers[path] = Answer(status, delay, location)

    def answer_of(self, path: str) -> Answer:
        with self._lock:
            return self._answers.get(path, Answer())

    def arrived(self, event_id: str) -> None:
        with self._lock:
            self._arrivals.append(event_id)

    def arrivals(self) -> list[str]:
        """The ids of every attempt as it arrived, before it was answered (a slow answer included)."""
        with self._lock:
            return list(self._arrivals)

    def record(self, message: Message) -> None:
        with self._lock:
            self._messages.append(message)

    def messages(self, path: str | None = None) -> list[Message]:
        """Every attempt that arrived (at ``path``), in arrival order."""
        with self._lock:
            return [m for m in self._messages if path is None or m.path == path]

    def delivered(self, path: str = "/hook") -> list[Message]:
        """The attempts at ``path`` that verified and were answered with a 2xx."""
        return [m for m in self.messages(path) if m.verified and 200 <= m.status < 300]

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = PATIENCE) -> Any:
        """Wait until ``condition()`` is true (its value), failing after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}; received: {self.messages()}")
            time.sleep(0.02)


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    """A :class:`Receiver` serving in a thread until the block ends."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
