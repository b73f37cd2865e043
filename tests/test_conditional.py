"""Conditional requests (RFC 9110): strong ETags, weak If-None-Match, If-Match on PATCH, 412/428,
and the same optimistic locking in the Python API (``expected=``)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flask import Flask
from servers_gunicorn import REPO, gunicorn

from flask_model_registry import ModelRegistry, PreconditionFailedError

TOKEN = "conditional-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def with_token(app: Flask) -> Flask:
    app.config["MODEL_REGISTRY_API_TOKEN"] = TOKEN
    return app


def etag_of(client, url: str = "/models/1.1.0") -> str:
    response = client.get(url, headers=AUTH)
    assert response.status_code == 200
    return response.headers["ETag"]


def test_get_etags_are_strong_and_if_none_match_compares_weakly(client, published):
    etag = client.get("/models/1.0.0").headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", W/{etag}', "*"):
        response = client.get("/models/1.0.0", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.data == b"" and response.headers["ETag"] == etag
    assert client.get("/models/1.0.0", headers={"If-None-Match": '"other"'}).status_code == 200


def test_if_match_on_a_get_compares_strongly(client, published):
    etag = client.get("/models/1.0.0").headers["ETag"]
    assert client.get("/models/1.0.0", headers={"If-Match": etag}).status_code == 200
    assert client.get("/models/1.0.0", headers={"If-Match": "*"}).status_code == 200
    assert client.get("/models/1.0.0", headers={"If-Match": f"W/{etag}"}).status_code == 412


@pytest.mark.usefixtures("with_token")
def test_patch_with_a_matching_if_match_applies_and_its_etag_is_the_next_gets(client, published):
    etag = etag_of(client)
    for template in ("{etag}", '"stale", {etag}', "*"):
        header = template.format(etag=etag)
        patched = client.patch("/models/1.1.0", json={"owner": header}, headers={**AUTH, "If-Match": header})
        assert patched.status_code == 200, (header, patched.data)
        after = client.get("/models/1.1.0", headers=AUTH)
        assert patched.headers["ETag"] == after.headers["ETag"] != etag
        assert after.get_json()["metadata"]["owner"] == header
        etag = after.headers["ETag"]


@pytest.mark.usefixtures("with_token")
@pytest.mark.parametrize(
    "conditions",
    [
        {"If-Match": '"stale"'},
        {"If-Match": "W/{etag}"},  # If-Match compares strongly: a weak tag never matches
        {"If-None-Match": "{etag}"},
        {"If-None-Match": "W/{etag}"},
        {"If-None-Match": "*"},
    ],
)
def test_a_failed_precondition_is_412_and_changes_nothing(client, published, json_error, conditions):
    etag = etag_of(client)
    before = published.get_metadata("1.1.0")
    events = len(published.history("1.1.0"))
    headers = {**AUTH, **{name: value.format(etag=etag) for name, value in conditions.items()}}
    response = client.patch("/models/1.1.0", json={"stage": "prod"}, headers=headers)
    assert response.status_code == 412
    json_error(response)
    assert published.get_metadata("1.1.0") == before
    assert len(published.history("1.1.0")) == events
    assert etag_of(client) == etag


@pytest.mark.usefixtures("with_token")
def test_if_none_match_of_another_etag_lets_the_patch_through(client, published):
    response = client.patch("/models/1.1.0", json={"stage": "prod"}, headers={**AUTH, "If-None-Match": '"x"'})
    assert response.status_code == 200


@pytest.mark.usefixtures("with_token")
@pytest.mark.parametrize("app_config", [{"MODEL_REGISTRY_REQUIRE_IF_MATCH": True}])
def test_require_if_match_makes_an_unconditional_patch_428(client, published, json_error):
    response = client.patch("/models/1.1.0", json={"stage": "prod"}, headers=AUTH)
    assert response.status_code == 428
    json_error(response)
    assert published.get_metadata("1.1.0")["stage"] == "staging"
    headers = {**AUTH, "If-Match": etag_of(client)}
    assert client.patch("/models/1.1.0", json={"stage": "prod"}, headers=headers).status_code == 200


def test_python_api_expected_metadata(published: ModelRegistry):
    seen = published.get_metadata("1.1.0")
    published.update_metadata("1.1.0", {"reviewed": True}, expected=seen)
    with pytest.raises(PreconditionFailedError):
        published.set_stage("1.1.0", "prod", expected=seen)  # seen is stale now
    assert published.get_metadata("1.1.0")["stage"] == "staging"
    published.set_stage("1.1.0", "prod", expected=lambda current: current.get("reviewed") is True)
    assert published.get_latest_version("prod") == "1.1.0"


def test_python_api_checks_the_metadata_it_replaces(published: ModelRegistry):
    """No window between the check and the write: another writer's change in between is caught."""
    seen = published.get_metadata("1.1.0")
    sneaked = []

    def check(current: dict) -> bool:
        if not sneaked:  # another writer changes the version right after our read
            sneaked.append(ModelRegistry(published.root).update_metadata("1.1.0", {"other": 1}))
        return current == seen

    with pytest.raises(PreconditionFailedError):
        published.update_metadata("1.1.0", {"mine": 1}, expected=check)
    assert "mine" not in published.get_metadata("1.1.0")


def patch_over_http(base: str, body: dict, if_match: str) -> tuple[int, str | None]:
    request = urllib.request.Request(
        f"{base}/models/1.1.0",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={**AUTH, "Content-Type": "application/json", "If-Match": if_match},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["ETag"]
    except urllib.error.HTTPError as exc:
        return exc.code, None


def race_two_patches(base: str, etag: str, round_: int) -> dict[str, tuple[int, str | None]]:
    """Two operators PATCH at the same moment, each with the same ``If-Match``."""
    start = threading.Barrier(2)
    results: dict[str, tuple[int, str | None]] = {}

    def operator(name: str) -> None:
        start.wait()
        results[name] = patch_over_http(base, {"round": round_, "by": name}, etag)

    threads = [threading.Thread(target=operator, args=(name,)) for name in ("ana", "bo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_two_operators_racing_with_the_same_if_match_one_wins(tmp_path: Path):
    """Real gunicorn, two workers: two PATCHes sent at once with the same ETag; exactly one wins."""
    root = tmp_path / "registry"
    shutil.copytree(REPO / "registry", root)
    with gunicorn({"MODEL_REGISTRY_ROOT": str(root), "FLASK_MODEL_REGISTRY_API_TOKEN": TOKEN}) as base:
        for round_ in range(8):
            get = urllib.request.Request(f"{base}/models/1.1.0", headers=AUTH)
            with urllib.request.urlopen(get, timeout=10) as response:
                etag = response.headers["ETag"]
            results = race_two_patches(base, etag, round_)
            assert sorted(status for status, _ in results.values()) == [200, 412], results
            winner = next(name for name, (status, _) in results.items() if status == 200)
            with urllib.request.urlopen(get, timeout=10) as response:
                metadata = json.loads(response.read())["metadata"]
                assert response.headers["ETag"] == results[winner][1]
            assert (metadata["round"], metadata["by"]) == (round_, winner)
    events = ModelRegistry(root).history("1.1.0")
    assert sum(e["action"] == "update_metadata" for e in events) == 8
