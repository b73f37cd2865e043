"""Metrics under real gunicorn with two workers: every scrape adds up what both workers counted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from servers_gunicorn import REPO, get, gunicorn

REQUESTS = 240


@pytest.fixture
def bundled_copy(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(REPO / "registry", root)
    return root


def predict(base: str, key: str) -> str:
    """POST /predict with a routing key; the version that answered."""
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps({"instances": [[1, 2, 3]], "routing_key": key}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["version"]


def scrape(base: str) -> list[Any]:
    """Every sample of ``/models/metrics``, as whichever worker answers it."""
    with urllib.request.urlopen(f"{base}/models/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def serving_pids(samples: list[Any]) -> set[str]:
    return {s.labels["pid"] for s in samples if s.name == "model_registry_served_info" and s.value}


def test_two_workers_add_up(bundled_copy: Path):
    env = {"MODEL_REGISTRY_ROOT": str(bundled_copy)}
    with gunicorn(env, workers=2) as base:
        assert get(f"{base}/models/health") == (200, {"status": "ok"})
        first = scrape(base)  # every name is there before anything was served
        assert {s.name for s in first} >= {"model_registry_versions", "model_registry_refresh_failures_total"}
        answered: Counter[str] = Counter()
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(5):  # until both workers have served (each request is a new connection)
                answered.update(pool.map(lambda n: predict(base, f"user-{n}"), range(sent, sent + REQUESTS)))
                sent += REQUESTS
                if len(serving_pids(scrape(base))) == 2:
                    break
        samples = scrape(base)
        pids = serving_pids(samples)
        assert len(pids) == 2, "both workers served"
        for _ in range(6):  # whichever worker answers the scrape, the same totals
            again = scrape(base)
            for version in ("1.0.0", "1.1.0"):
                routed = total(again, "model_registry_routed_total", model="", stage="prod", version=version)
                assert routed == answered[version]
        assert (
            sum(answered.values()) == sent and answered["1.1.0"] > 0 and answered["1.0.0"] > answered["1.1.0"]
        )
        # each worker loaded each model once: two loads of each version in all
        assert total(samples, "model_registry_model_loads_total", version="1.0.0") == 2
        assert total(samples, "model_registry_model_load_seconds_count") == 4
        assert total(samples, "model_registry_versions") == 2

        # A worker that dies keeps its counts; its served_info goes (gunicorn's child_exit hook).
        dead = sorted(pids)[0]
        os.kill(int(dead), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            after = scrape(base)
            if dead not in serving_pids(after):
                break
            assert time.monotonic() < deadline, "the dead worker's served_info stayed"
            time.sleep(0.2)
        assert total(after, "model_registry_routed_total") == sent


def healthcheck_command() -> list[str]:
    """The Dockerfile's ``HEALTHCHECK`` command (exec form; compose runs the same one)."""
    lines = (REPO / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1].split("\n")
    argv = json.loads(next(line.strip() for line in lines if line.strip().startswith("CMD "))[4:])
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    healthcheck = compose["services"]["python-api"]["healthcheck"]
    assert healthcheck["test"] == ["CMD", *argv], "compose checks health the same way"
    return argv


def test_the_container_healthcheck_follows_the_registry(bundled_copy: Path):
    with gunicorn({"MODEL_REGISTRY_ROOT": str(bundled_copy)}, workers=1) as base:
        argv = [arg.replace("http://127.0.0.1:8000", base) for arg in healthcheck_command()]
        argv[0] = sys.executable
        assert subprocess.run(argv, timeout=30).returncode == 0
        bundled_copy.rename(bundled_copy.with_name("unmounted"))
        assert subprocess.run(argv, timeout=30, capture_output=True).returncode != 0
        bundled_copy.with_name("unmounted").rename(bundled_copy)
        assert subprocess.run(argv, timeout=30).returncode == 0
