"""Any input, through every door: the Python API, the CLI and the HTTP API never fail badly.

Bad input gets a :class:`RegistryError` (a one-line CLI error, a JSON 4xx), never another exception,
a traceback or a 5xx, and never touches a file outside the registry root.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import semver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_model_registry import InvalidVersionError, ModelRegistry, RegistryError
from flask_model_registry.config import RESERVED_NAMES
from flask_model_registry.versioning import MAX_VERSION_LENGTH

fuzz = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

PUBLISHED = ["1.0.0", "1.1.0", "2.0.0-rc.1"]
#: Pieces that break paths, shells and parsers, glued to version-like text.
TRICKS = ["..", ".", "/", "\\", "\x00", "%2e", "~", "\n", " ", "-", "+", "latest", "versions"]
semver_like = st.sampled_from(PUBLISHED) | st.from_regex(
    r"\d{1,3}\.\d{1,3}\.\d{1,3}(-[0-9A-Za-z.-]{0,8})?(\+[0-9A-Za-z.-]{0,8})?", fullmatch=True
)
#: Any string, lone surrogates included (what Python makes of undecodable bytes in ``sys.argv``).
any_text = st.text(st.characters(exclude_categories=()))
version_strings = st.one_of(
    any_text,
    semver_like,
    st.lists(st.sampled_from(TRICKS) | semver_like | any_text.filter(lambda t: len(t) < 4), max_size=6).map(
        "".join
    ),
)
#: Metadata keys: the registry's own, flags, and anything else.
keys = st.sampled_from(["stage", "version", "artifact", "canary"]) | st.text()
#: Any JSON value, including the ``NaN`` and ``Infinity`` that Python's ``json`` writes and reads.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
#: Mostly objects, as a merge patch is, but any JSON value at the top too.
json_patches = st.dictionaries(keys, json_values, max_size=4) | json_values

REGISTRY_CALLS: dict[str, Callable[[ModelRegistry, str], Any]] = {
    "get_metadata": lambda registry, version: registry.get_metadata(version),
    "get_model": lambda registry, version: registry.get_model(version),
    "save_model": lambda registry, version: registry.save_model(version, {"weights": [0.5]}),
    "set_stage": lambda registry, version: registry.set_stage(version, "prod"),
    "history": lambda registry, version: registry.history(version),
}


def is_version(text: str) -> bool:
    """The oracle: strict SemVer by the ``semver`` package, within the length limit."""
    return semver.Version.is_valid(text) and len(text) <= MAX_VERSION_LENGTH


def files_outside(tree: Path, root: Path) -> set[Path]:
    return {path for path in tree.rglob("*") if path != root and root not in path.parents}


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    """A root three folders down, so that an escape upwards would land inside ``tmp_path``."""
    return tmp_path / "deep" / "er" / "registry"


# the Python API -----------------------------------------------------------------------------------


@fuzz
@given(version=version_strings)
def test_registry_calls_raise_only_registry_errors_and_stay_in_the_root(
    published, registry_root, tmp_path, version
):
    outside = files_outside(tmp_path, registry_root)
    for name, call in REGISTRY_CALLS.items():
        try:
            call(published, version)
        except RegistryError as exc:
            if not is_version(version):
                assert isinstance(exc, InvalidVersionError), (name, version, exc)
        else:
            assert is_version(version), (name, version)
    assert files_outside(tmp_path, registry_root) == outside


# the CLI ------------------------------------------------------------------------------------------


@fuzz
@given(version=version_strings)
def test_cli_answers_any_version_with_a_status_not_a_traceback(app, published, version):
    runner = app.test_cli_runner()
    for args in (["models", "show", version], ["models", "promote", version, "prod"]):
        result = runner.invoke(args=args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.output)
        assert result.exit_code in (0, 1, 2), (args, result.output)
        assert "Traceback" not in result.output
        if result.exit_code == 1:  # a registry error: one line
            assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
        if not is_version(version):
            assert result.exit_code != 0, (args, result.output)


# the HTTP API -------------------------------------------------------------------------------------


def assert_json_answer(response, json_error, root: Path) -> None:
    assert response.status_code < 500, response.data[:300]
    assert response.mimetype == "application/json"
    assert str(root) not in response.get_data(as_text=True)
    if response.status_code >= 400:
        json_error(response)


def names_no_api_word(segment: bytes) -> bool:
    """Whether ``segment``, as the server decodes it (``%2F`` is a slash, bytes are UTF-8), holds
    none of the API's own words as a path part: ``/models/metrics`` answers Prometheus text,
    ``/models/ui`` the console, ``/models/%2Fhealth`` the health check; none of them is a version."""
    return RESERVED_NAMES.isdisjoint(segment.decode("utf-8", "replace").split("/"))


@fuzz
@given(
    segment=(st.binary() | version_strings.map(lambda text: text.encode("utf-8", "surrogatepass"))).filter(
        names_no_api_word
    )
)
def test_any_version_in_the_url_gets_a_json_answer(client, published, json_error, registry_root, segment):
    quoted = quote(segment, safe="")
    for url in (f"/models/{quoted}", f"/models/{quoted}/history"):
        response = client.get(url)
        assert_json_answer(response, json_error, registry_root)
        assert response.status_code in (200, 400, 404), url


@fuzz
@given(
    query=st.binary().map(lambda raw: raw.decode("latin-1"))
    | st.dictionaries(st.sampled_from(["stage", "prerelease"]) | st.text(), st.text()).map(
        lambda args: "&".join(f"{quote(k)}={quote(v)}" for k, v in args.items())
    )
)
def test_any_query_string_gets_a_json_answer(client, published, json_error, registry_root, query):
    for url in ("/models", "/models/latest"):
        response = client.get(url, environ_overrides={"QUERY_STRING": query})
        assert_json_answer(response, json_error, registry_root)
        assert response.status_code in (200, 400, 404), (url, query)


@pytest.fixture
def check_patch(client, auth_headers, json_error, registry_root, published) -> Callable[[bytes], None]:
    """``check_patch(body)``: PATCH ``body`` onto 1.1.0 with the token; it must answer 200 with the
    metadata now on disk, or a JSON 4xx that leaves ``metadata.json`` as it was, byte for byte."""
    target = registry_root / "versions" / "1.1.0" / "metadata.json"

    def check(body: bytes) -> None:
        before = target.read_bytes()
        response = client.patch(
            "/models/1.1.0", data=body, content_type="application/json", headers=auth_headers
        )
        assert_json_answer(response, json_error, registry_root)
        if response.status_code == 200:
            assert response.get_json()["metadata"] == json.loads(target.read_bytes())
        else:
            assert response.status_code in (400, 413), body[:200]
            assert target.read_bytes() == before

    return check


@fuzz
@given(patch=json_patches)
def test_any_json_patch_is_applied_or_refused_cleanly(check_patch, patch):
    check_patch(json.dumps(patch).encode())


@fuzz
@given(body=st.binary())
def test_any_bytes_as_a_patch_get_a_clean_answer(check_patch, body):
    check_patch(body)
