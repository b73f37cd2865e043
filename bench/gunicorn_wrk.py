"""Real HTTP: gunicorn (2 workers) serving the example app, ``wrk`` on ``/models/latest`` and ``/ping``.

Run: ``python bench/gunicorn_wrk.py`` (about 40 seconds; needs ``wrk``, a Debian package). gunicorn
runs the Dockerfile's command on 127.0.0.1 and a free port, with the app spec swapped for
``bench._ping_app:create_bench_app()`` (the example app plus a bare ``/ping`` of the same answer
size); it is stopped at the end whatever happens.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
from unittest import mock

from _common import REPO, Row, Target, print_header, print_table, saved_registry

import tests.servers_gunicorn as servers

N = 2_000
WRK = ["wrk", "-t2", "-c16", "-d5s"]
APP = "bench._ping_app:create_bench_app()"


def wrk(url: str, seconds: str = "5s") -> float:
    """Requests per second ``wrk`` reaches against ``url``; warns about errors or non-2xx answers."""
    command = [*WRK[:-1], f"-d{seconds}", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    for line in output.splitlines():
        if "Non-2xx" in line or "Socket errors" in line:
            print(f"warning: {url}: {line.strip()}")
    match = re.search(r"Requests/sec:\s*([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    return float(match.group(1))


def measure(base: str) -> dict[str, list[float]]:
    """Three ``wrk`` runs per endpoint, in the order A B B A A B, after a short warm-up of each."""
    urls = {"latest": f"{base}/models/latest", "ping": f"{base}/ping"}
    for url in urls.values():
        wrk(url, "1s")
    rates: dict[str, list[float]] = {name: [] for name in urls}
    for name in ("ping", "latest", "latest", "ping", "ping", "latest"):
        rates[name].append(wrk(urls[name]))
    return rates


def main() -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), then run this again")
        return
    root = saved_registry(N)
    dockerfile_command = servers.container_command()
    assert dockerfile_command[-1] == "example_app:create_app()", dockerfile_command
    command = [*dockerfile_command[:-1], APP]
    print_header(
        f"gunicorn + wrk: {' '.join(WRK)}, {N:,} versions (median of 3 runs each, order A B B A A B)",
        [
            f"server: {' '.join(command)} (cwd {REPO.name}/, 2 workers, 127.0.0.1, a free port)",
            "the Dockerfile's CMD with the app spec swapped; its access log goes to /dev/null",
            f"wrk and gunicorn share this machine's cores; python {sys.executable}",
        ],
    )
    with (
        mock.patch.object(servers, "container_command", lambda: list(command)),
        servers.gunicorn({"MODEL_REGISTRY_ROOT": str(root)}, workers=2) as base,
    ):
        rates = measure(base)
    print("runs (req/s): " + ", ".join(f"{k} {' / '.join(f'{r:,.0f}' for r in v)}" for k, v in rates.items()))
    print("gunicorn stopped")
    print()
    print_table(
        [
            Row(
                "GET /models/latest",
                statistics.median(rates["latest"]),
                "GET /ping, same size JSON",
                statistics.median(rates["ping"]),
                Target("requests/second of /models/latest ≥0.8x those of /ping", 0.8, higher_is_better=True),
                unit="req/s",
            )
        ]
    )


if __name__ == "__main__":
    main()
