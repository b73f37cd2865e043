"""Run the example service the way its container does: real gunicorn, on 127.0.0.1, bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_command() -> list[str]:
    """The ``CMD`` of the Dockerfile, so the test runs exactly what the container runs."""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            return json.loads(line[4:])
    raise AssertionError("the Dockerfile has no CMD")


def get(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    """GET ``url``: its status and JSON body (error statuses too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def gunicorn(env: Mapping[str, str], workers: int = 2, errorlog: Path | None = None) -> Iterator[str]:
    """Start the container's gunicorn command on a free port; yield its base URL; stop it. Its
    stderr (gunicorn's error log) goes to ``errorlog`` when given, for a test to read."""
    port = free_port()
    command = container_command()
    command[0] = str(Path(sys.executable).with_name(command[0]))
    full_env = {**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)}
    stderr = errorlog.open("wb") if errorlog is not None else subprocess.PIPE
    process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                output = process.stderr.read() if errorlog is None else errorlog.read_bytes()
                raise AssertionError(f"gunicorn exited: {output.decode()[-2000:]}")
            with contextlib.suppress(OSError):
                if get(f"{base}/healthz", timeout=1)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("gunicorn did not answer in time")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        (process.stderr if errorlog is None else stderr).close()
