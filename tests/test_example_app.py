"""The example service: real gunicorn on the bundled registry, Docker files, the predict endpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml
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


def compose_config(env_file: Path) -> dict:
    """``docker-compose config``: the service as compose reads it, with ``env_file`` as its ``.env``."""
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: `make test` installs it with apt-get when run as root")
        pytest.skip("docker-compose (Debian package) is not installed; CI installs it")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_REGISTRY_", "APP_", "FLASK_"))}
    run = subprocess.run(
        [compose, "--env-file", str(env_file), "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)["services"]["python-api"]


def test_compose_serves_loopback_only_unprivileged_and_without_token_by_default(tmp_path: Path):
    (tmp_path / ".env").write_text("")
    service = compose_config(tmp_path / ".env")
    assert service["ports"] == ["127.0.0.1:8000:8000/tcp"]
    assert service["volumes"] == [f"{REPO / 'registry'}:/app/registry:rw"]
    assert service["environment"]["MODEL_REGISTRY_ROOT"] == "/app/registry"
    assert service["environment"]["MODEL_REGISTRY_API_TOKEN"] == ""
    assert service["user"] == "10001:10001" and service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]


def test_compose_takes_the_token_and_the_owner_from_an_env_file(tmp_path: Path):
    (tmp_path / ".env").write_text("MODEL_REGISTRY_API_TOKEN=s3cret\nAPP_UID=1000\nAPP_GID=1001\n")
    service = compose_config(tmp_path / ".env")
    assert service["environment"]["MODEL_REGISTRY_API_TOKEN"] == "s3cret"
    assert service["user"] == "1000:1001"


@pytest.mark.parametrize("secret", ["", "a-long-random-secret"])
def test_compose_passes_the_secret_key_the_console_signs_in_with(
    tmp_path: Path, bundled_copy: Path, monkeypatch: pytest.MonkeyPatch, secret: str
):
    """With a token, the console needs the app's SECRET_KEY: compose passes ``FLASK_SECRET_KEY`` from
    ``.env``, the example app reads it, and without it the console's hint names that variable."""
    env = "MODEL_REGISTRY_API_TOKEN=s3cret\n" + (f"FLASK_SECRET_KEY={secret}\n" if secret else "")
    (tmp_path / ".env").write_text(env)
    environment = compose_config(tmp_path / ".env")["environment"]
    assert environment["FLASK_SECRET_KEY"] == secret
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MODEL_REGISTRY_ROOT", str(bundled_copy))
    client = create_app({"TESTING": True}).test_client()
    page = client.get("/models/ui/sign-in")
    if not secret:
        assert page.status_code == 503 and b"FLASK_SECRET_KEY" in page.data
        return
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page.data)
    assert csrf, page.data
    form = {"csrf_token": csrf.group(1).decode(), "token": "s3cret", "name": "ana"}
    assert client.post("/models/ui/sign-in", data=form).status_code == 303
    assert b"ana" in client.get("/models/ui/").data


@pytest.mark.parametrize("token", ["", "s3cret"])
def test_the_compose_environment_turns_the_token_on_in_the_service(
    tmp_path: Path, bundled_copy: Path, monkeypatch: pytest.MonkeyPatch, token: str
):
    """The service started with the environment compose gives it: the token from ``.env`` guards
    every request; without one, reads are open and writes refused."""
    (tmp_path / ".env").write_text(f"MODEL_REGISTRY_API_TOKEN={token}\n" if token else "")
    for key, value in compose_config(tmp_path / ".env")["environment"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MODEL_REGISTRY_ROOT", str(bundled_copy))  # the container's /app/registry
    client = create_app({"TESTING": True}).test_client()
    patch = {"json": {"stage": "prod"}}
    if token:
        assert client.get("/models/latest").status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/models/latest", headers=headers).status_code == 200
        assert client.patch("/models/1.1.0", headers=headers, **patch).status_code == 200
    else:
        assert client.get("/models/latest").status_code == 200
        assert client.patch("/models/1.1.0", **patch).status_code == 403


GUNICORN_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(\w+)\] (.*)$")


def test_registry_warnings_carry_time_and_level_in_gunicorns_log(bundled_copy: Path, tmp_path: Path):
    """A registry warning in a gunicorn worker is a line of gunicorn's error log like its own: time,
    process id, level; not a bare message."""
    artefact = bundled_copy / "versions" / "1.1.0" / "model.pkl"  # the canary: fails its sha256
    artefact.write_bytes(b"tampered")
    errorlog = tmp_path / "gunicorn.log"
    with gunicorn({"MODEL_REGISTRY_ROOT": str(bundled_copy)}, workers=1, errorlog=errorlog) as base:
        request = urllib.request.Request(
            f"{base}/predict",
            data=json.dumps({"instances": [[1, 2, 3]], "routing_key": key_on("1.1.0", True)}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["version"] == "1.0.0"  # the canary's share goes to stable
        deadline = time.monotonic() + 30
        while "canary 1.1.0 failed to load" not in errorlog.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [line for line in errorlog.read_text().splitlines() if "canary 1.1.0 failed to load" in line]
    assert lines, errorlog.read_text()
    match = GUNICORN_LOG_LINE.match(lines[0])
    assert match and match.group(1) == "WARNING", lines
