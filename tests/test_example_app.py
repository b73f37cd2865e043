"""The example service: real gunicorn on the bundled registry, Docker files, the predict endpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from servers_gunicorn import REPO, get, gunicorn

from example_app import create_app
from flask_model_registry import ModelRegistry
from flask_model_registry.routing import share


@pytest.fixture
def bundled_copy(tmp_path: Path) -> Path:
    """A copy of the repo's ``./registry``, so tests may publish into it."""
    root = tmp_path / "registry"
    shutil.copytree(REPO / "registry", root)
    return root


def test_bundled_registry_loads_on_a_fresh_checkout():
    registry = ModelRegistry(REPO / "registry")
    assert registry.list_versions() == ["1.0.0", "1.1.0"]
    for version in registry.list_versions():
        assert registry.verify(version)
        assert len(registry.get_model(version).predict([[1, 2, 3]])) == 1
    assert registry.get_latest_version("prod") == "1.0.0"


def key_on(canary: str, on_it: bool, weight: float = 0.1) -> str:
    """A routing key that lands on ``canary`` (or off it) at ``weight``."""
    return next(f"user-{n}" for n in range(1000) if (share(f"user-{n}", canary) < weight) == on_it)


def test_predict_serves_prod_with_the_canary_taking_its_share(bundled_copy: Path, json_error):
    # prod is 1.0.0; the bundled 1.1.0 (staging) is flagged "canary": true: 10% of prod's traffic.
    client = create_app({"MODEL_REGISTRY_ROOT": str(bundled_copy), "TESTING": True}).test_client()
    on_canary, on_stable = key_on("1.1.0", True), key_on("1.1.0", False)
    body = {"instances": [[1, 0, 0], [0, 0, 0]]}
    for _ in range(3):  # sticky, by header or by body field
        answer = client.post("/predict", json=body, headers={"X-Routing-Key": on_canary}).get_json()
        assert answer == {"version": "1.1.0", "predictions": [0.38 + 0.47, 0.38]}
        answer = client.post("/predict", json={**body, "routing_key": on_stable}).get_json()
        assert answer == {"version": "1.0.0", "predictions": [0.5 + 0.42, 0.5]}
    versions = Counter(client.post("/predict", json=body).get_json()["version"] for _ in range(400))
    assert set(versions) == {"1.0.0", "1.1.0"} and versions["1.1.0"] < versions["1.0.0"]
    for bad in (
        {"json": {"instances": [[1]]}},
        {"data": "nope"},
        {"json": {"rows": []}},
        {"json": {**body, "routing_key": [1]}},
    ):
        response = client.post("/predict", **bad)
        assert response.status_code == 400
        json_error(response)


# "": every version: 1.0.0 is the highest without a weight, 1.1.0 its canary (a key off it here)
@pytest.mark.parametrize(("stage", "version"), [("staging", "1.1.0"), ("", "1.0.0"), ("prod", "1.0.0")])
def test_predict_serves_the_stage_chosen_by_model_stage(bundled_copy: Path, monkeypatch, stage, version):
    monkeypatch.setenv("MODEL_STAGE", stage)
    client = create_app({"MODEL_REGISTRY_ROOT": str(bundled_copy), "TESTING": True}).test_client()
    body = {"instances": [[0, 0, 0]], "routing_key": key_on("1.1.0", False)}  # not on the canary
    assert client.post("/predict", json=body).get_json()["version"] == version
    monkeypatch.setenv("FLASK_MODEL_STAGE", "staging")  # app config (from_prefixed_env) wins
    client = create_app({"MODEL_REGISTRY_ROOT": str(bundled_copy), "TESTING": True}).test_client()
    assert client.post("/predict", json=body).get_json()["version"] == "1.1.0"


def test_a_bad_model_stage_is_an_error_at_start_up(bundled_copy: Path):
    with pytest.raises(ValueError, match="stage"):
        create_app({"MODEL_REGISTRY_ROOT": str(bundled_copy), "MODEL_STAGE": "no such stage!"})


def test_predict_errors_are_json(tmp_path: Path, json_error):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root, status in ((empty, 404), (tmp_path / "typo", 503)):
        client = create_app({"MODEL_REGISTRY_ROOT": str(root), "TESTING": True}).test_client()
        response = client.post("/predict", json={"instances": [[1, 2, 3]]})
        assert response.status_code == status
        assert str(tmp_path) not in json_error(response)["message"]
    assert json_error(client.get("/no-such-page"))["code"] == 404
    assert json_error(client.get("/predict"))["code"] == 405


def test_gunicorn_serves_and_follows_new_versions(bundled_copy: Path):
    with gunicorn({"MODEL_REGISTRY_ROOT": str(bundled_copy)}) as base:
        status, listing = get(f"{base}/models")
        assert status == 200 and [item["version"] for item in listing] == ["1.0.0", "1.1.0"]
        assert get(f"{base}/models/latest")[1]["version"] == "1.1.0"
        publisher = (
            "import sys; from example_app.model import LinearModel;"
            "from flask_model_registry import ModelRegistry;"
            "ModelRegistry(sys.argv[1]).save_model('1.2.0', LinearModel((1.0, 1.0, 1.0)), {'stage': 'prod'})"
        )
        subprocess.run([sys.executable, "-c", publisher, str(bundled_copy)], cwd=REPO, check=True, timeout=60)
        # Two workers, several requests: every worker must see the new version at once.
        for _ in range(10):
            assert get(f"{base}/models/latest")[1]["version"] == "1.2.0"
            assert get(f"{base}/models/latest?stage=prod")[1]["version"] == "1.2.0"
        request = urllib.request.Request(
            f"{base}/predict",
            data=json.dumps({"instances": [[1, 2, 3]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read()) == {"version": "1.2.0", "predictions": [6.0]}


def test_compose_file_is_valid_and_matches_the_design():
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: `make test` installs it with apt-get when run as root")
        pytest.skip("docker-compose (Debian package) is not installed; CI installs it")
    run = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    rendered = run.stdout
    assert "python-api:" in rendered
    assert "/app/registry" in rendered and "8000" in rendered
    assert "MODEL_REGISTRY_ROOT: /app/registry" in rendered
    assert "healthcheck:" in rendered
