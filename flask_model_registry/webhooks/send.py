"""One delivery attempt: a ``POST`` with the standard library, never following a redirect, and what
its answer means (done, retry later, or failed for good)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

DONE, RETRY, FAILED = "done", "retry", "failed"
#: The most bytes of a receiver's answer that are read (then the connection is closed).
MAX_ANSWER_BYTES = 64 * 1024


def _agent() -> str:
    """The ``User-Agent`` of deliveries: the installed distribution's version (never the package's
    ``__init__``, which sits above this module)."""
    try:
        return f"flask-model-registry/{version('flask-model-registry')} (webhooks)"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "flask-model-registry (webhooks)"


_AGENT = _agent()


@dataclass(frozen=True)
class Attempt:
    """What one attempt gave: ``outcome`` (done, retry, failed), the HTTP status if any, and why."""

    outcome: str
    status: int | None
    reason: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is the answer: deliveries go only to the configured URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def classify(status: int) -> str:
    """2xx: done; 408, 429, 3xx and 5xx: retried; any other 4xx: failed at once."""
    if 200 <= status < 300:
        return DONE
    if 400 <= status < 500 and status not in (408, 429):
        return FAILED
    return RETRY


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Attempt:
    """``POST`` ``body`` to ``url``; a receiver that is down or slower than ``timeout`` seconds (to
    connect, or between bytes of its answer) is to be retried."""
    request = urllib.request.Request(url, data=body, headers={**headers, "user-agent": _AGENT}, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(MAX_ANSWER_BYTES)
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        return Attempt(RETRY, None, f"no answer ({_why(exc.reason)})")
    except (OSError, http.client.HTTPException) as exc:  # a timeout, a reset, a garbled answer
        return Attempt(RETRY, None, f"no answer ({_why(exc)})")
    return Attempt(classify(status), status, f"HTTP {status}")


def _why(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)
