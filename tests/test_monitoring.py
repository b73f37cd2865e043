"""``<prefix>/health`` and ``<prefix>/metrics`` in one process (gunicorn: test_metrics_gunicorn.py)."""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import servers
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_model_registry import FlaskModelRegistry, ModelRegistry

#: botocore without retries: a stopped endpoint fails at once.
FAIL_FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 2}}

#: Every metric the SPEC names, with its type and labels.
SPEC_METRICS = {
    "model_registry_versions": ("gauge", set()),
    "model_registry_served_info": ("gauge", {"model", "stage", "version"}),
    "model_registry_model_loads": ("counter", {"version"}),
    "model_registry_model_load_failures": ("counter", {"version"}),
    "model_registry_model_load_seconds": ("histogram", set()),
    "model_registry_refresh_failures": ("counter", set()),
    "model_registry_routed": ("counter", {"model", "stage", "version"}),
}


def scrape(client: Any, **kwargs: Any) -> dict[str, Any]:
    """``GET /models/metrics``, parsed: metric families by name."""
    response = client.get("/models/metrics", **kwargs)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels``."""
    name = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    return sum(
        s.value
        for s in families[name].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def grew(before: dict[str, Any], after: dict[str, Any], sample: str, **labels: str) -> float:
    """How much a sample grew between two scrapes."""
    return value(after, sample, **labels) - value(before, sample, **labels)


@pytest.fixture
def counted(app: Flask, registry: ModelRegistry) -> ModelRegistry:
    """The app's registry, holding 1.0.0 (prod) and 1.1.0 (a 30% canary)."""
    registry.save_model("1.0.0", "stable", {"stage": "prod"})
    registry.save_model("1.1.0", "canary", {"canary": 0.3})
    return app.registry  # type: ignore[attr-defined]


# health -------------------------------------------------------------------------------------------


def test_health_is_ok_without_the_token_and_shows_no_version(
    client: Any, counted: ModelRegistry, auth_headers
):
    response = client.get("/models/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert b"1.0.0" not in response.data and response.headers["Cache-Control"] == "no-store"
    assert client.get("/models/latest").status_code == 401  # the token is on: reads need it


def test_health_never_loads_a_model(client: Any, counted: ModelRegistry):
    loads: list[str] = []
    counted.get_model = loads.append  # type: ignore[method-assign]
    assert client.get("/models/health").status_code == 200
    assert loads == [] and len(counted._loaded) == 0  # nothing unpickled either


def test_health_fails_when_the_local_root_disappears(
    client: Any, counted: ModelRegistry, registry_root: Path, json_error: Callable
):
    assert client.get("/models/health").status_code == 200
    assert counted.get_latest("prod").version == "1.0.0"
    moved = registry_root.with_name("moved-away")
    registry_root.rename(moved)  # an unmounted volume
    response = client.get("/models/health")
    assert response.status_code == 503
    error = json_error(response)
    assert str(registry_root) not in error["message"] and "1.0.0" not in error["message"]
    assert counted.get_latest("prod").version == "1.0.0"  # still serving what it had
    moved.rename(registry_root)
    assert client.get("/models/health").status_code == 200


def test_health_fails_when_the_s3_endpoint_stops(json_error: Callable):
    with servers.moto_s3() as store:  # a server of its own, stopped in the middle of the test
        options = {**store.storage_options, **FAIL_FAST}
        ModelRegistry(store.url("health"), storage_options=options).save_model("1.0.0", "model")
        app = Flask("service")
        app.config.update(
            MODEL_REGISTRY_ROOT=store.url("health"),
            MODEL_REGISTRY_STORAGE_OPTIONS=options,
            MODEL_REGISTRY_REFRESH_INTERVAL=0,
        )
        FlaskModelRegistry(app)
        client = app.test_client()
        assert client.get("/models/health").status_code == 200
        assert app.registry.get_latest_model() == "model"  # type: ignore[attr-defined]
        before = scrape(client)
    response = client.get("/models/health")
    assert response.status_code == 503
    message = json_error(response)["message"]
    assert "moto" not in message and "1.0.0" not in message and "health" not in message.split(":")[-1]
    assert app.registry.get_latest_model() == "model"  # type: ignore[attr-defined]
    assert grew(before, scrape(client), "model_registry_refresh_failures_total") >= 1


def test_health_fails_on_a_root_that_does_not_exist(tmp_path: Path, json_error: Callable):
    app = Flask("service")
    app.config["MODEL_REGISTRY_ROOT"] = str(tmp_path / "typo")
    FlaskModelRegistry(app)
    error = json_error(app.test_client().get("/models/health"))
    assert error["code"] == 503 and str(tmp_path) not in error["message"]
    assert error["message"].startswith("the registry root folder does not exist"), "as the API says it"


def test_health_on_a_bucket_that_does_not_exist_says_so(s3_server: servers.Store, json_error: Callable):
    app = Flask("service")
    app.config["MODEL_REGISTRY_ROOT"] = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/models"
    app.config["MODEL_REGISTRY_STORAGE_OPTIONS"] = s3_server.storage_options
    FlaskModelRegistry(app)
    error = json_error(app.test_client().get("/models/health"))
    assert error["code"] == 503
    assert error["message"].startswith("the registry root bucket does not exist")
    assert "no-such-bucket" not in error["message"]


def test_health_names_a_failing_named_model_only_with_the_token(
    registry: ModelRegistry, tmp_path: Path, json_error: Callable
):
    registry.save_model("1.0.0", "model")
    app = Flask("service")
    app.config.update(
        MODEL_REGISTRY_ROOT=registry.root,
        MODEL_REGISTRY_MODELS={"fraud": str(tmp_path / "unmounted")},
        MODEL_REGISTRY_API_TOKEN="s3cret",
    )
    FlaskModelRegistry(app)
    client = app.test_client()
    anonymous = json_error(client.get("/models/health"))
    assert anonymous["code"] == 503 and "fraud" not in anonymous["message"]
    assert (
        anonymous["message"]
        == "a named model: the registry root folder does not exist (check the configured root)"
    )
    assert client.get("/models/fraud/latest").status_code == 401, "the API hides it too"
    signed = json_error(client.get("/models/health", headers={"Authorization": "Bearer s3cret"}))
    assert signed["message"].startswith("model 'fraud': the registry root folder does not exist")


@pytest.mark.parametrize("word", ["health", "metrics"])
def test_a_doubled_slash_redirects_with_a_location(client: Any, word: str):
    """Werkzeug merges slashes with a 308; its JSON form must keep the ``Location`` to follow."""
    answer = client.get(f"/models//{word}")
    assert answer.status_code == 308 and answer.mimetype == "application/json"
    assert answer.headers["Location"].endswith(f"/models/{word}")
    assert client.get(answer.headers["Location"]).status_code in (200, 401)


def test_health_and_metrics_are_not_there_when_the_api_is_off(registry_root: Path):
    app = Flask("service")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_API_ENABLED=False)
    FlaskModelRegistry(app)
    assert app.test_client().get("/models/health").status_code == 404


def test_other_methods_get_a_json_405(client: Any, counted: ModelRegistry, json_error: Callable):
    assert json_error(client.post("/models/health"))["code"] == 405
    assert json_error(client.delete("/models/metrics"))["code"] == 405


# metrics ------------------------------------------------------------------------------------------


def test_every_name_is_exposed_from_the_start(client: Any, registry: ModelRegistry):
    families = scrape(client)
    for name, (kind, _) in SPEC_METRICS.items():
        assert name in families, name
        assert families[name].type == kind
    assert value(families, "model_registry_versions") == 0


def test_metrics_count_routing_loads_and_versions(client: Any, counted: ModelRegistry):
    before = scrape(client)  # the collectors belong to the process: other tests counted too
    for n in range(200):
        counted.route(f"user-{n}", "prod")
    families = scrape(client)
    for name, (_, labels) in SPEC_METRICS.items():
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, sample
    assert value(families, "model_registry_versions") == 2
    routed = {
        v: grew(before, families, "model_registry_routed_total", model="", stage="prod", version=v)
        for v in ("1.0.0", "1.1.0")
    }
    assert sum(routed.values()) == 200 and routed["1.1.0"] > 20
    assert grew(before, families, "model_registry_model_loads_total", version="1.0.0") == 1
    assert grew(before, families, "model_registry_model_loads_total", version="1.1.0") == 1
    assert grew(before, families, "model_registry_model_load_seconds_count") == 2
    served = [s for s in families["model_registry_served_info"].samples if s.labels["stage"] == "prod"]
    assert len(served) == 1 and served[0].value == 1  # the version this process last served there
    assert served[0].labels["version"] == counted.route("user-199", "prod").version


def test_served_info_follows_the_last_answer(client: Any, counted: ModelRegistry):
    counted.update_metadata("1.1.0", {"canary": None})
    assert counted.route("k").version == "1.1.0"
    counted.update_metadata("1.1.0", {"canary": 1})
    counted.set_stage("1.1.0", "archived")
    counted.save_model("1.2.0", "newer", {})
    assert counted.route("k").version == "1.2.0"
    samples = [s for s in scrape(client)["model_registry_served_info"].samples if s.labels["stage"] == ""]
    assert [(s.labels["version"], s.value) for s in samples] == [("1.2.0", 1.0)]


def test_load_failures_are_counted(client: Any, counted: ModelRegistry, registry_root: Path):
    before = scrape(client)
    (registry_root / "versions/1.1.0/model.pkl").write_bytes(b"corrupt")
    for _ in range(10):
        counted.route("k", "prod")
    after = scrape(client)
    assert grew(before, after, "model_registry_model_load_failures_total", version="1.1.0") == 1
    assert grew(before, after, "model_registry_model_loads_total", version="1.0.0") == 1


def test_metrics_follow_the_token_rules(
    client: Any, counted: ModelRegistry, auth_headers, json_error: Callable
):
    assert json_error(client.get("/models/metrics"))["code"] == 401
    assert json_error(client.get("/models/metrics", headers={"Authorization": "Bearer nope"}))["code"] == 401
    assert "model_registry_routed" in scrape(client, headers=auth_headers)


def test_without_the_extra_metrics_say_how_to_get_them(
    client: Any, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, json_error: Callable
):
    monkeypatch.setitem(sys.modules, "flask_model_registry.metrics", None)  # as if not installed
    error = json_error(client.get("/models/metrics"))
    assert error["code"] == 501 and "flask-model-registry[metrics]" in error["message"]


def test_the_collectors_can_join_the_apps_own_registry(counted: ModelRegistry):
    from prometheus_client import CollectorRegistry, generate_latest

    from flask_model_registry import metrics

    own = CollectorRegistry()
    metrics.register(own)
    counted.route("k", "prod")
    text = generate_latest(own).decode()
    assert 'model_registry_routed_total{model="",stage="prod"' in text


def test_named_models_are_labelled_and_checked(tmp_path: Path, json_error: Callable):
    fraud_root = tmp_path / "fraud"
    fraud = ModelRegistry(fraud_root)
    fraud.save_model("2.0.0", "fraud stable", {"stage": "prod"})
    fraud.save_model("2.1.0", "fraud canary", {"canary": 0.5})
    (tmp_path / "default").mkdir()
    app = Flask("service")
    app.config.update(
        MODEL_REGISTRY_ROOT=str(tmp_path / "default"), MODEL_REGISTRY_MODELS={"fraud": str(fraud_root)}
    )
    FlaskModelRegistry(app)
    client = app.test_client()
    before = scrape(client)
    served = Counter(app.registries["fraud"].route(f"user-{n}", "prod").version for n in range(100))  # type: ignore[attr-defined]
    after = scrape(client)
    for version in ("2.0.0", "2.1.0"):
        counted = grew(
            before, after, "model_registry_routed_total", model="fraud", stage="prod", version=version
        )
        assert counted == served[version] > 0
    assert [
        s.labels["model"]
        for s in after["model_registry_served_info"].samples
        if s.labels["version"].startswith("2.")
    ] == ["fraud"]
    assert client.get("/models/health").status_code == 200
    fraud_root.rename(tmp_path / "gone")
    error = json_error(client.get("/models/health"))
    assert error["code"] == 503 and "fraud" in error["message"]


def test_json_whatever_handlers_the_host_registers(registry_root: Path, json_error: Callable):
    app = Flask("host")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_API_TOKEN="t")
    for handled in (404, 405, 500, Exception):
        app.register_error_handler(handled, lambda exc: ("<h1>host page</h1>", 418))
    FlaskModelRegistry(app)
    client = app.test_client()
    assert json_error(client.post("/models/health"))["code"] == 405
    assert json_error(client.get("/models/metrics/x", headers={"Authorization": "Bearer t"}))["code"] == 404
    preflight = client.options("/models/metrics")  # a CORS preflight: no token, nothing but Allow
    assert preflight.status_code == 200 and preflight.get_json() == {"allow": ["GET", "HEAD", "OPTIONS"]}
    assert client.get("/elsewhere").data == b"<h1>host page</h1>"
