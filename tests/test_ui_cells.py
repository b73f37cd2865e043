"""Any value in a hand-made ``metadata.json`` costs the console only its own cell: each key the console
reads, fuzzed with arbitrary JSON through Flask's test client, and the issue's own examples."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_model_registry import FlaskModelRegistry, ModelRegistry

UI = "/models/ui"
SHA = "ab" * 32
#: A version made by hand with every key the console reads, each shown in the registry table as:
BASE: dict[str, Any] = {
    "created_at": "2020-01-01T00:00:00Z",
    "artifact": {
        "file": "model.pkl",
        "sha256": SHA,
        "size": 1234,
        "serializer": "cloudpickle",
        "cloudpickle_version": "3.0.0",
        "python_version": "3.11.2",
    },
    "metrics": {"auc": 0.125},
    "stage": "prod",
    "shadow": True,
}
SHOWN = {
    "created_at": "2020-01-01",
    "artifact": "1.2 kB",
    "artifact.size": "1.2 kB",
    "artifact.sha256": SHA[:12],
    "metrics": "0.125",
    "metrics.auc": "0.125",
    "stage": ">prod<",
    "shadow": ">shadow<",
}
#: Every key (dotted: nested) the console formats.
KEYS = [
    "created_at",
    "artifact",
    "artifact.file",
    "artifact.sha256",
    "artifact.size",
    "artifact.serializer",
    "artifact.cloudpickle_version",
    "artifact.python_version",
    "metrics",
    "metrics.auc",
    "stage",
    "canary",
    "shadow",
    "version",
]
#: Times that parse as ISO 8601 but do not fit in UTC, and other near misses.
ODD_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00",
    "2026-13-45",
    "",
    "Z",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=200).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
    | st.sampled_from(ODD_TIMES),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def with_value(key: str, value: Any) -> dict[str, Any]:
    """:data:`BASE` with ``key`` (dotted: a nested key) set to ``value``."""
    metadata = {**BASE, "artifact": dict(BASE["artifact"]), "metrics": dict(BASE["metrics"])}
    outer, _, inner = key.partition(".")
    if inner:
        metadata[outer][inner] = value
    else:
        metadata[outer] = value
    return metadata


def table_row(page: str, version: str) -> str:
    """The registry table's row of ``version``."""
    found = re.search(
        rf'<tr[^>]*>\s*<th scope="row"><a href="[^"]*/v/{re.escape(version)}">.*?</tr>', page, re.S
    )
    assert found, f"no row for {version}"
    return found.group(0)


@pytest.fixture
def console(registry_root: Path, registry: ModelRegistry) -> FlaskClient:
    """The console (read-only) over a registry holding one published version, 9.0.0."""
    registry.save_model("9.0.0", "published", {"stage": "prod", "metrics": {"auc": 0.5}})
    app = Flask("cells_test")
    app.config.update(TESTING=True, MODEL_REGISTRY_ROOT=str(registry_root))
    FlaskModelRegistry(app)
    return app.test_client()


def assert_only_its_cell(client: FlaskClient, version: str, key: str) -> None:
    """Every page that shows ``version`` answers 200; its table row keeps each other cell."""
    pages = {path: client.get(UI + path) for path in ("/", f"/v/{version}", f"/diff?a={version}&b=9.0.0")}
    pages["/?stage=prod"] = client.get(f"{UI}/?stage=prod")
    for path, answer in pages.items():
        assert answer.status_code == 200, (path, answer.data[-600:])
        assert b"Internal error" not in answer.data
    page = pages["/"].data.decode()
    row = table_row(page, version)
    columns = len(re.findall(r'<th scope="col" class="metric">', page))
    assert row.count("<td") == 6 + columns, row  # every cell of the row is there (signature too)
    assert 'class="broken"' not in row
    for other, shown in SHOWN.items():
        if other.split(".")[0] != key.split(".")[0]:
            assert shown in row, (other, row)
    assert "9.0.0" in table_row(page, "9.0.0")  # and the other versions' rows


_versions = itertools.count()  # a fresh version per example: each is seen at once, whatever the stamp


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=st.sampled_from(KEYS), value=json_values)
def test_any_value_of_any_key_costs_only_its_own_cell(
    console: FlaskClient, by_hand: Callable[..., Path], key: str, value: Any
) -> None:
    version = f"1.0.{next(_versions)}"
    by_hand(version, with_value(key, value))
    assert_only_its_cell(console, version, key)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("created_at", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+14:00"),
        ("created_at", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59-14:00"),
        ("created_at", 5, '<span class="odd" title="not an ISO 8601 time">5</span>'),
        (
            "created_at",
            "yesterday",
            '<span class="odd" title="not an ISO 8601 time">&#34;yesterday&#34;</span>',
        ),
        ("artifact.size", "big", '<span class="odd" title="not a byte count">&#34;big&#34;</span>'),
        ("artifact.size", 10**400, "0" * 70),
        ("artifact.size", -1, '<span class="odd" title="not a byte count">-1</span>'),
        ("artifact.sha256", {"a": 1}, '<span class="odd" title="not a string">{&#34;a&#34;: 1}</span>'),
        ("metrics.auc", "x" * 500, "x" * 79 + "…"),
        ("artifact", [1, 2], '<span class="odd" title="not an object">[1, 2]</span>'),
        ("metrics.auc", [0.9], '<span class="odd" title="not a number, string or boolean">[0.9]</span>'),
        ("canary", "yes", "canary &#34;yes&#34; (invalid: not routed)"),
        ("canary", 0.3, ">canary 0.3<"),
        ("stage", ["prod"], 'title="not a string: matches no stage">[&#34;prod&#34;]</span>'),
    ],
    ids=lambda value: repr(value)[:24],
)
def test_an_odd_value_shows_as_itself_marked_in_its_cell(
    console: FlaskClient, by_hand: Callable[..., Path], key: str, value: Any, shown: str
) -> None:
    by_hand("1.0.0", with_value(key, value))
    assert_only_its_cell(console, "1.0.0", key)
    row = table_row(console.get(f"{UI}/").data.decode(), "1.0.0")
    assert shown in row, row


def test_the_version_page_shows_each_artefact_fact_in_its_own_cell(
    console: FlaskClient, by_hand: Callable[..., Path]
) -> None:
    metadata = with_value("artifact.file", ["a"])
    metadata["artifact"].update(size="big", serializer=7, python_version={"x": 1})
    metadata["created_at"] = "0001-01-01T00:00:00+14:00"
    by_hand("1.0.0", metadata)
    answer = console.get(f"{UI}/v/1.0.0")
    assert answer.status_code == 200
    facts = re.search(r'<dl class="facts">.*?</dl>', answer.data.decode(), re.S).group(0)
    assert SHA in facts and "cloudpickle 3.0.0" in facts  # the good values, whole
    assert "[&#34;a&#34;]" in facts and "&#34;big&#34;" in facts
    assert '<span class="odd" title="not a string">7</span>' in facts
    assert "0001-01-01T00:00:00+14:00" in facts
